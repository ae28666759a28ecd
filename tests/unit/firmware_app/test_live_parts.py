"""The live mode's parts on their own: its settings, the tracker that holds a lesion before it
is shown, the picture's own states (no signal, probe off the skin, frozen), the source's
FFmpeg options and the model chosen for a source."""

from __future__ import annotations

import numpy as np
import pytest

from clinibox_common.contracts.reasons import ReasonCode
from clinibox_common.contracts.statuses import LiveState
from clinibox_common.settings_loader import ConfigError
from engine.inference.postprocess import Box
from firmware_app.live.picture import PictureWatch
from firmware_app.live.run import model_for
from firmware_app.live.source import open_options, source_path
from firmware_app.live.tracker import LiveTracker
from firmware_app.settings.box import from_dict


def _config(*sources: dict, **live) -> object:
    return from_dict({"live": {**live, "sources": list(sources)}})


def test_sources_are_read_with_their_kind_and_region():
    config = _config({"name": "us-1", "url": "/dev/video0", "video_size": "1280x720",
                      "framerate": 30, "pixel_format": "mjpeg", "region_x": 10,
                      "region_y": 20, "region_width": 600, "region_height": 500,
                      "modality": "us"},
                     {"name": "scope", "url": "rtsp://10.0.0.5/live", "modality": "ES"},
                     {"name": "demo", "url": "file:///srv/demo.mp4", "loop": True},
                     hold_frames=4)
    us, scope, demo = config.live.sources
    assert (us.kind, us.region, us.modality) == ("v4l2", (10, 20, 600, 500), "US")
    assert (scope.kind, scope.region) == ("stream", None)
    assert (demo.kind, source_path(demo)) == ("file", "/srv/demo.mp4")
    by_id = _config({"name": "a", "url": "/dev/v4l/by-id/usb-Capture_Card-video-index0"})
    assert by_id.live.sources[0].kind == "v4l2"  # the card's stable name, whatever its number
    assert config.live.hold_frames == 4


@pytest.mark.parametrize(("source", "words"), [
    ({"name": "US 1", "url": "/dev/video0"}, "lower-case"),
    ({"name": "a", "url": "ftp://x/y"}, "must be /dev/videoN"),
    ({"name": "a", "url": "/dev/video0", "video_size": "big"}, "WIDTHxHEIGHT"),
    ({"name": "a", "url": "/dev/video0", "colour": True}, "unknown key"),
    ({"name": "a"}, "needs at least name and url"),
])
def test_a_wrong_source_is_named_in_the_error(source, words):
    with pytest.raises(ConfigError, match=words):
        _config(source)


def test_two_sources_may_not_share_a_name():
    with pytest.raises(ConfigError, match="more than once"):
        _config({"name": "a", "url": "/dev/video0"}, {"name": "a", "url": "/dev/video1"})


def test_a_capture_card_is_asked_for_its_size_rate_and_format():
    # No V4L2 device can exist here (no /dev/video*, no v4l2loopback module in this kernel):
    # what FFmpeg is asked for is checked instead; the decoding path is the files' and
    # streams' (tests/unit/firmware_app/test_live_engine.py, tests/integration/test_live_e2e.py).
    config = _config({"name": "us-1", "url": "/dev/video2", "video_size": "1280x720",
                      "framerate": 30, "pixel_format": "yuyv422"})
    fmt, options = open_options(config.live.sources[0], config.live)
    assert fmt == "v4l2"
    assert options["video_size"] == "1280x720" and options["framerate"] == "30"
    assert options["input_format"] == "yuyv422"
    assert int(options["probesize"]) <= 5_000_000


def test_network_streams_are_read_with_low_delay_and_rtsp_over_tcp():
    config = _config({"name": "a", "url": "rtsp://cam/x"}, {"name": "b", "url": "udp://0.0.0.0:5000"})
    _, rtsp = open_options(config.live.sources[0], config.live)
    _, udp = open_options(config.live.sources[1], config.live)
    assert rtsp["rtsp_transport"] == "tcp" and rtsp["fflags"] == "nobuffer"
    assert udp["overrun_nonfatal"] == "1"


def _box(x: float, score: float = 0.9) -> Box:
    return Box(x, 10.0, x + 20.0, 30.0, score, "lesion")


def test_a_lesion_is_shown_only_once_held_and_one_frame_never():
    tracker = LiveTracker(hold_frames=3)
    on, _ = tracker.update(1, [_box(10), _box(200)])
    assert [t.held for t in on] == [False, False]
    on, _ = tracker.update(2, [_box(12)])
    assert [t.held for t in on] == [False]
    on, closed = tracker.update(3, [_box(14, 0.95)])
    assert [t.held for t in on] == [True]
    assert on[0].best_seq == 3 and on[0].best_score == 0.95
    for seq in range(4, 8):
        on, closed = tracker.update(seq, [])
    assert {t.number for t in closed} <= {1, 2}
    assert tracker.tracks == []


def test_a_track_survives_a_missed_frame():
    tracker = LiveTracker(hold_frames=2)
    first, _ = tracker.update(1, [_box(10)])
    tracker.update(2, [])
    again, _ = tracker.update(3, [_box(11)])
    assert again[0].number == first[0].number and again[0].held


def _speckle(seed: int, level: float = 120.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(level, 40.0, (240, 320)), 0, 255).astype(np.uint8)


def test_the_picture_says_no_signal_probe_off_the_skin_and_frozen():
    watch = PictureWatch(frozen_seconds=2.0, modality="US")
    assert watch.judge(_speckle(1), 0.0)[0] == LiveState.RUNNING
    state, warnings = watch.judge(np.zeros((240, 320), np.uint8), 0.1)
    assert state == LiveState.NO_SIGNAL and ReasonCode.BLANK in warnings
    dark = (_speckle(2) // 12).astype(np.uint8)
    assert watch.judge(dark, 0.2)[0] == LiveState.NO_CONTACT
    still = _speckle(3)
    assert watch.judge(still, 1.0)[0] == LiveState.RUNNING
    assert watch.judge(still.copy(), 2.0)[0] == LiveState.RUNNING
    assert watch.judge(still.copy(), 3.1)[0] == LiveState.FROZEN
    assert watch.judge(_speckle(4), 3.2)[0] == LiveState.RUNNING


def test_an_endoscope_too_dark_is_not_a_probe_off_the_skin():
    watch = PictureWatch(frozen_seconds=2.0, modality="ES")
    assert watch.judge((_speckle(2) // 12).astype(np.uint8), 0.0)[0] == LiveState.RUNNING


def test_the_model_for_a_source_follows_its_own_word_then_the_rules_then_the_box():
    config = from_dict({
        "routing": {"rules": [{"name": "ct", "model": "ct-model", "modality": ["CT"]},
                              {"name": "chest", "model": "x", "body_part": ["CHEST"]},
                              {"name": "us", "model": "us-model", "modality": ["US"]}]},
        "live": {"sources": [{"name": "a", "url": "/dev/video0"},
                             {"name": "b", "url": "/dev/video1", "model": "mine"},
                             {"name": "c", "url": "/dev/video2", "modality": "ES"}]}})
    a, b, c = config.live.sources
    assert model_for(config, a) == "us-model"
    assert model_for(config, b) == "mine"
    assert model_for(config, c) == config.models.name


def test_the_example_config_ends_with_a_live_source_that_loads(tmp_path):
    import re

    from firmware_app.settings.box import describe_defaults, load

    text = describe_defaults()
    example = tmp_path / "example.toml"
    example.write_text(text)
    assert load(example).live.sources == []  # as shipped: live mode off
    _head, live = text.split("# Live sources")
    uncommented = re.sub(r"^# (\[\[live|[a-z_]+ = )", r"\1", "# Live sources" + live, flags=re.M)
    example.write_text(text.split("# PACS destinations")[0] + uncommented)
    (source,) = load(example).live.sources
    assert (source.name, source.kind, source.video_size, source.pixel_format) == (
        "us-1", "v4l2", "1280x720", "mjpeg")


@pytest.mark.slow
def test_demo_video_writes_the_phantom_screen_a_demonstration_source_plays(tmp_path):
    import av

    from tests.box_harness import clinibox

    out = tmp_path / "phantom-us.mp4"
    said = clinibox("demo-video", str(out), "--seconds", "1.5", "--seed", "3").stdout
    assert "not for clinical use" in said and "region_x = 280" in said
    with av.open(str(out)) as video:
        frames = list(video.decode(video.streams.video[0]))
    assert len(frames) == 45 and (frames[0].width, frames[0].height) == (1280, 720)
    wrong = clinibox("demo-video", str(tmp_path / "x.mjpeg"), check=False)
    assert wrong.returncode == 2 and ".mp4, .mkv, .ts or .avi" in wrong.stderr


def test_one_writer_a_source_and_the_services_word_never_overwrites_a_running_one(tmp_path):
    """A technician's `clinibox live us-1` beside the service's: the second is refused, and
    the service's word on its own (failed) child leaves the running writer's state alone."""
    import os

    from firmware_app.storage.live_frames import (
        FrameWriter,
        SourceBusy,
        claim_source,
        read_state,
        write_stopped,
    )

    lock = claim_source(tmp_path, "us-1")
    FrameWriter(tmp_path, "us-1", 10.0).write_state({"state": "running"})
    with pytest.raises(SourceBusy, match="already read by another process"):
        claim_source(tmp_path, "us-1")
    write_stopped(tmp_path, "us-1", "decoder_failed", {"status": 1})
    assert read_state(tmp_path, "us-1")["state"] == "running"
    os.close(lock)  # the process ended
    write_stopped(tmp_path, "us-1", "decoder_failed", {"status": 1})
    assert read_state(tmp_path, "us-1")["state"] == "decoder_failed"
    os.close(claim_source(tmp_path, "us-1"))  # free again


def _frozen_machine_video(path, fps: float = 25.0) -> list[np.ndarray]:
    """A machine's screen that moves for a second, then stands still for four while its
    encoder (H.264, a key frame every second) goes on sending frames; the decoded frames'
    image areas, grey."""
    import av

    from firmware_app.live.video_file import write_video
    from phantoms.video import ScreenLayout, screen_frames

    layout = ScreenLayout()
    moving = [frame for frame, _boxes in screen_frames(5, 1.0, fps, layout)]
    write_video(path, [*moving, *[moving[-1]] * round(4 * fps)], fps, "h264")
    x, y, w, h = layout.region
    with av.open(str(path)) as container:
        decoded = [(frame.key_frame, frame.to_ndarray(format="gray")[y:y + h, x:x + w])
                   for frame in container.decode(video=0)]
    assert sum(key for key, _area in decoded) >= 4  # key frames keep coming while still
    return [area for _key, area in decoded]


@pytest.mark.slow
def test_a_frozen_picture_is_frozen_whatever_the_encoders_key_frames(tmp_path):
    fps = 25.0
    areas = _frozen_machine_video(tmp_path / "frozen.mp4", fps)
    watch = PictureWatch(frozen_seconds=2.0, modality="US")
    states = [watch.judge(area, i / fps)[0] for i, area in enumerate(areas)]
    assert set(states[:25]) == {LiveState.RUNNING}  # the moving second is live
    # still from the second second on: frozen two seconds later, and through every key frame
    frozen_from = round(3.0 * fps) + 1
    assert LiveState.FROZEN not in states[:frozen_from - 2]
    assert set(states[frozen_from:]) == {LiveState.FROZEN}, states[frozen_from:]
    # at another rate (a frame every 200 ms) the same
    slow = PictureWatch(frozen_seconds=2.0, modality="US")
    assert [slow.judge(area, i / fps)[0] for i, area in enumerate(areas)
            if i % 5 == 0][-1] == LiveState.FROZEN


def test_codec_noise_is_not_movement_but_a_moving_picture_is():
    rng = np.random.default_rng(9)
    still = _speckle(5)
    noisy = np.clip(still + rng.normal(0, 3.0, still.shape), 0, 255).astype(np.uint8)
    watch = PictureWatch(frozen_seconds=1.0, modality="US")
    assert watch.judge(still, 0.0)[0] == LiveState.RUNNING
    assert watch.judge(noisy, 0.6)[0] == LiveState.RUNNING
    assert watch.judge(still, 1.2)[0] == LiveState.FROZEN  # noise around a still picture
    shifted = np.roll(still, 2, axis=1)  # the probe moved two pixels
    assert watch.judge(shifted, 1.3)[0] == LiveState.RUNNING
