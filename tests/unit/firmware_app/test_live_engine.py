"""One live source's engine in this process, on real video read by PyAV (FFmpeg): a phantom
ultrasound screen analysed newest frame first, lesions held before they are shown, nothing
kept without a session and a session's key frames and clip landed as DICOM, a source that
comes and goes, and hostile streams refused with the service's memory untouched."""

from __future__ import annotations

import contextlib
import io
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from clinibox_common.contracts.statuses import LiveKept, LiveRequest, LiveState
from firmware_app.ingest.landing import Lander
from firmware_app.live.engine import LiveEngine
from firmware_app.live.keeper import Keeper
from firmware_app.service.appliance import load_runner
from firmware_app.settings.box import from_dict, load
from firmware_app.storage import db, live_sessions
from firmware_app.storage.live_frames import FrameWriter, frame_bytes, read_state
from firmware_app.storage.spool import make_spool
from tests.box_harness import wait_for
from tests.live_keeper import keeper_box
from tests.live_video import (
    DOPPLER_BOX,
    corrupted_ts,
    garbage,
    huge_mjpeg,
    make_doppler_video,
    make_phantom_video,
    resolution_change_ts,
)

REGION = {"region_x": 280, "region_y": 100, "region_width": 720, "region_height": 540}


@pytest.fixture(scope="module")
def runner():
    """The demo model, loaded and checked as the service loads it."""
    loaded = load_runner(load(None))
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """Eight seconds of the phantom ultrasound screen with lesions passing (H.264, 30 fps)."""
    path = tmp_path_factory.mktemp("video") / "phantom.mp4"
    made = make_phantom_video(path, seconds=8.0, seed=1)
    assert sum(1 for boxes in made.boxes if boxes) > 60
    return path


class Running:
    """An engine running in a thread on a source, over a box's state folder."""

    def __init__(self, root: Path, runner, no_model: str = "", **source) -> None:
        self.config = from_dict({"storage": {"state_dir": str(root / "state")},
                                 "live": {"hold_frames": 3, "stall_seconds": 1.0,
                                          "sources": [{"name": "us-1", **source}]}})
        db.private_state_dir(self.config.state_dir)
        with contextlib.closing(db.connect(self.config.database_path)) as conn:
            db.initialise(conn)
        self.root = root / "live"
        self.source = self.config.live.sources[0]
        lander = Lander(make_spool(self.config), self.config.database_path, 2**30)
        self.keeper = Keeper(self.source, self.config.live, self.config.database_path, lander,
                             station="box-1")
        writer = FrameWriter(self.root, "us-1", self.config.live.ring_seconds)
        self.engine = LiveEngine(self.source, self.config.live, runner, writer, self.keeper,
                                 no_model=no_model)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.engine.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def state(self) -> dict:
        return read_state(self.root, "us-1") or {}

    def rows(self, sql: str) -> list[tuple]:
        with contextlib.closing(sqlite3.connect(self.config.database_path)) as conn:
            return conn.execute(sql).fetchall()

    def end(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


@pytest.fixture
def running(tmp_path, runner) -> Iterator:
    made: list[Running] = []

    def start(model=runner, **source) -> Running:
        made.append(Running(tmp_path, model, **source))
        return made[-1]

    yield start
    for one in made:
        one.end()


@pytest.mark.slow
def test_the_phantom_screen_is_analysed_and_held_lesions_shown_nothing_kept(running, video):
    live = running(url=str(video), loop=True, mm_per_pixel=0.2, **REGION)
    wait_for(lambda: any(f["lesions"] for f in live.state().get("frames", [])), 60,
             "a held lesion on a frame")
    state = live.state()
    assert state["state"] == LiveState.RUNNING and state["model"].startswith("clinibox-demo")
    assert (state["width"], state["height"]) == (1280, 720)
    assert state["region"] == [280, 100, 720, 540]
    shown = [f for f in state["frames"] if f["lesions"]]
    lesion = shown[-1]["lesions"][0]
    x0, y0, x1, y1 = lesion["box"]
    assert 280 <= x0 < x1 <= 1000 and 100 <= y0 < y1 <= 640  # in the frame, on the image area
    assert lesion["held"] >= 3 and lesion["long_axis_mm"] == pytest.approx(
        lesion["long_axis_px"] * 0.2, abs=0.2)
    assert shown[-1]["hint"] == "hold_here"
    newest = state["frames"][-1]
    jpeg = frame_bytes(live.root, "us-1", newest["seq"])
    assert jpeg[:2] == b"\xff\xd8"  # a JPEG, at most [live] display_width wide for the tablet
    assert Image.open(io.BytesIO(jpeg)).size == (960, 540)
    assert state["session"] is None
    assert live.rows("SELECT COUNT(*) FROM instances") == [(0,)]  # no session: nothing kept


@pytest.mark.slow
def test_a_sessions_key_frames_and_clip_land_as_ultrasound_dicom(running, video):
    live = running(url=str(video), loop=True, mm_per_pixel=0.2, **REGION)
    wait_for(lambda: live.state().get("analysed", 0) > 10, 60, "frames analysed")
    with contextlib.closing(db.connect(live.config.database_path)) as conn:
        session = live_sessions.start(conn, source="us-1", started_by="nurse",
                                      patient_name="CANARY^LIVE", patient_id="LIVE-001")
    wait_for(lambda: (live.state().get("session") or {}).get("id") == session.id, 30,
             "the engine to see the session")
    time.sleep(1.5)  # a second and a half of picture for the clip
    with contextlib.closing(db.connect(live.config.database_path)) as conn:
        live_sessions.ask(conn, session.id, LiveRequest.CLIP, "nurse")
        live_sessions.ask(conn, session.id, LiveRequest.KEY_FRAME, "nurse")

    def kept() -> list:
        with contextlib.closing(db.connect(live.config.database_path)) as conn:
            return live_sessions.kept_by(conn, session.id)

    wait_for(lambda: {k.kind for k in kept()} >= {LiveKept.CLIP, LiveKept.KEY_FRAME}, 60,
             "the clip and the key frame")
    # the lesions that pass keep their best frame by themselves
    wait_for(lambda: any(k.score is not None for k in kept()), 60, "a lesion's best frame")
    with contextlib.closing(db.connect(live.config.database_path)) as conn:
        assert live_sessions.end(conn, session.id)
    paths = dict(live.rows("SELECT id, spool_path FROM instances"))
    assert {k.instance_id for k in kept()} <= set(paths)
    for item in kept():
        ds = pydicom.dcmread(paths[item.instance_id])
        assert ds.StudyInstanceUID == session.study_uid and ds.Modality == "US"
        assert str(ds.PatientName) == "CANARY^LIVE" and ds.PatientID == "LIVE-001"
        assert (ds.Rows, ds.Columns) == (540, 720)  # the image area only, never the menus
        assert ds.BurnedInAnnotation == "NO"
        if item.kind == LiveKept.CLIP:
            assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1"
            assert int(ds.NumberOfFrames) == item.frames > 5
        else:
            assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.6.1"
    assert live.rows("SELECT DISTINCT source, origin FROM instances") == [("live", "live:us-1")]


@pytest.mark.slow
def test_a_colour_doppler_clip_is_as_long_as_asked_at_the_sources_rate_and_in_colour(
        running, tmp_path):
    """A 25 fps colour Doppler source: "keep a clip (5 s)" keeps 5 s of it, every frame
    received (not only those analysed), and the key frame and the clip keep the colour."""
    fps = 25.0
    video = make_doppler_video(tmp_path / "doppler.mp4", seconds=8.0, fps=fps).path
    live = running(url=str(video), loop=True, mm_per_pixel=0.2, **REGION)
    wait_for(lambda: live.state().get("analysed", 0) > 10, 60, "frames analysed")
    with contextlib.closing(db.connect(live.config.database_path)) as conn:
        session = live_sessions.start(conn, source="us-1", started_by="nurse")
    wait_for(lambda: (live.state().get("session") or {}).get("id") == session.id, 30,
             "the engine to see the session")
    time.sleep(live.config.live.clip_seconds + 1.5)  # more picture than a clip keeps
    with contextlib.closing(db.connect(live.config.database_path)) as conn:
        live_sessions.ask(conn, session.id, LiveRequest.CLIP, "nurse")
        live_sessions.ask(conn, session.id, LiveRequest.KEY_FRAME, "nurse")

    def kept() -> dict:
        with contextlib.closing(db.connect(live.config.database_path)) as conn:
            return {k.kind: k for k in live_sessions.kept_by(conn, session.id)
                    if k.score is None}

    wait_for(lambda: set(kept()) == {LiveKept.CLIP, LiveKept.KEY_FRAME}, 60,
             "the clip and the key frame")
    paths = dict(live.rows("SELECT id, spool_path FROM instances"))
    clip = pydicom.dcmread(paths[kept()[LiveKept.CLIP].instance_id])
    frames, frame_ms = int(clip.NumberOfFrames), float(clip.FrameTime)
    seconds = live.config.live.clip_seconds
    assert frame_ms == pytest.approx(1000.0 / fps, abs=2.0)  # the source's own rate
    assert frames * frame_ms / 1000.0 == pytest.approx(seconds, abs=1.0 / fps + 1e-6)
    assert clip.PhotometricInterpretation == "YBR_FULL_422"
    key = pydicom.dcmread(paths[kept()[LiveKept.KEY_FRAME].instance_id])
    assert key.PhotometricInterpretation == "RGB"
    x0, y0, x1, y1 = DOPPLER_BOX
    x0, x1, y0, y1 = x0 - REGION["region_x"], x1 - REGION["region_x"], \
        y0 - REGION["region_y"], y1 - REGION["region_y"]
    middle = (y0 + y1) // 2
    for pixels in (key.pixel_array, clip.pixel_array[frames // 2]):
        pixels = pixels.astype(np.int16)
        red = pixels[y0 + 10:middle - 10, x0 + 10:x1 - 10].mean(axis=(0, 1))
        blue = pixels[middle + 10:y1 - 10, x0 + 10:x1 - 10].mean(axis=(0, 1))
        assert red[0] - red[2] > 60 and blue[2] - blue[0] > 60  # the flow's colours
        grey = pixels[:, :x0 - 20]  # the grey picture beside the box stays grey
        assert np.abs(grey[..., 0] - grey[..., 2]).mean() < 6


@pytest.mark.slow
def test_a_source_that_is_missing_then_plugged_in_is_read(running, video, tmp_path):
    target = tmp_path / "card.mp4"  # stands for a capture card unplugged, then plugged in
    live = running(url=str(target), loop=True, **REGION)
    wait_for(lambda: live.state().get("state") == LiveState.DISCONNECTED, 30, "disconnected")
    assert "card.mp4" in live.state()["detail"]["error"]
    shutil.copy(video, target)
    wait_for(lambda: live.state().get("state") == LiveState.RUNNING
             and live.state().get("analysed", 0) > 5, 60, "running once plugged in")


@pytest.mark.parametrize("size", [30000, 4000])
def test_a_stream_claiming_huge_frames_is_refused_before_decoding(running, tmp_path, size):
    # 30000 x 30000 is beyond FFmpeg's own limit, 4000 x 4000 (16 MP) FFmpeg would decode:
    # each JPEG's own header is read before the decoder sees it, and [live] max_megapixels
    # (8.3) refuses both
    bomb = huge_mjpeg(tmp_path / "bomb.avi", size=size)
    live = running(url=str(bomb), loop=True)
    wait_for(lambda: live.state().get("state") == LiveState.REFUSED, 30, "refused")
    assert live.state()["analysed"] == 0 and not live.state()["frames"]
    assert f"a {size}x{size} frame is larger than [live] max_megapixels" in \
        live.state()["detail"]["error"]


def test_garbage_is_refused_or_unreadable_and_nothing_is_shown(running, tmp_path):
    live = running(url=str(garbage(tmp_path / "noise.ts")), loop=True)
    wait_for(lambda: live.state().get("state") in (LiveState.REFUSED, LiveState.DISCONNECTED),
             30, "refused")
    assert live.state()["analysed"] == 0


@pytest.mark.slow
def test_broken_packets_are_skipped_and_the_stream_goes_on(running, video, tmp_path):
    broken = corrupted_ts(tmp_path / "broken.ts", video, fraction=0.01)
    assert broken > 10
    live = running(url=str(tmp_path / "broken.ts"), loop=True, **REGION)
    wait_for(lambda: live.state().get("analysed", 0) > 60, 60, "frames through the damage")
    assert live.state()["state"] in (LiveState.RUNNING, LiveState.STOPPED)


@pytest.mark.slow
def test_a_resolution_change_rescales_the_image_area(running, tmp_path):
    resolution_change_ts(tmp_path / "change.ts", seconds=1.5)
    live = running(url=str(tmp_path / "change.ts"), loop=False, **REGION)
    wait_for(lambda: live.state().get("width") == 1920, 60, "the larger picture")
    state = live.state()
    assert state["height"] == 1080 and state["region"] == [420, 150, 1080, 810]


def test_keep_this_frame_keeps_the_frame_the_page_showed(tmp_path):
    """A nurse froze the page and stepped back to frame 3: that frame is kept, not the
    newest."""
    import numpy as np

    box = keeper_box(tmp_path)
    for seq in range(1, 6):
        box.clock[0] = seq * 0.1
        box.keeper.observe(np.full((48, 64), seq * 40, np.uint8), [], [], seq)
    with box.database() as conn:
        live_sessions.ask(conn, box.session.id, LiveRequest.KEY_FRAME, "nurse", seq=3)
    box.clock[0] = 1.0
    box.keeper.observe(np.full((48, 64), 250, np.uint8), [], [], 6)
    box.keeper.close()
    with box.database() as conn:
        kept = live_sessions.kept_by(conn, box.session.id)
        path = conn.execute("SELECT spool_path FROM instances").fetchone()[0]
    assert [k.kind for k in kept] == [LiveKept.KEY_FRAME]
    assert int(pydicom.dcmread(path).pixel_array.mean()) == 120  # frame 3's, not frame 6's


def test_an_endoscope_no_model_reads_is_shown_and_keeps_what_is_asked_as_vl_endoscopic(
        running, video):
    live = running(model=None, no_model="modality ES not accepted", url=str(video), loop=True,
                   modality="ES", **REGION)
    wait_for(lambda: live.state().get("analysed", 0) > 5, 60, "frames shown")
    state = live.state()
    assert state["state"] == LiveState.NO_MODEL and state["detail"]["why"].startswith("modality")
    assert not any(f["lesions"] for f in state["frames"])  # shown, never marked
    with contextlib.closing(db.connect(live.config.database_path)) as conn:
        session = live_sessions.start(conn, source="us-1", started_by="nurse",
                                      patient_id="SCOPE-1")
    wait_for(lambda: (live.state().get("session") or {}).get("id") == session.id, 30,
             "the session seen")
    with contextlib.closing(db.connect(live.config.database_path)) as conn:
        live_sessions.ask(conn, session.id, LiveRequest.KEY_FRAME, "nurse")
    wait_for(lambda: live.rows("SELECT COUNT(*) FROM live_kept") == [(1,)], 60, "kept")
    ds = pydicom.dcmread(live.rows("SELECT spool_path FROM instances")[0][0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.1" and ds.Modality == "ES"
    assert ds.PhotometricInterpretation == "RGB" and (ds.Rows, ds.Columns) == (540, 720)


@pytest.mark.slow
def test_a_udp_stream_that_stalls_is_said_and_read_again_when_it_resumes(running, video):
    from tests.live_video import udp_mpegts_sender
    from tests.ports import free_port

    port = free_port()
    with udp_mpegts_sender(video, port) as url:
        live = running(url=url, **REGION)
        wait_for(lambda: live.state().get("analysed", 0) > 20, 60, "the stream analysed")
    # a network fault, not a cable's (the words: check the network and the machine's sending)
    wait_for(lambda: live.state().get("state") == LiveState.NETWORK_LOST, 30, "the stop said")
    stalled_at = live.state()["analysed"]
    with udp_mpegts_sender(video, port):
        wait_for(lambda: live.state().get("state") == LiveState.RUNNING
                 and live.state().get("analysed", 0) > stalled_at + 20, 60, "read again")


@pytest.mark.slow
def test_a_udp_source_takes_packets_only_from_its_allowed_sender(running, video):
    """Anyone on the clinic's network may send to the box's UDP port: with the encoder's
    address named, a stream from elsewhere (here 127.0.0.1, not the allowed 127.0.0.2) is
    never shown nor kept."""
    from tests.live_video import udp_mpegts_sender
    from tests.ports import free_port

    port = free_port()
    with udp_mpegts_sender(video, port) as url:
        live = running(url=url, allowed_senders=["127.0.0.2"], **REGION)
        wait_for(lambda: live.state().get("state") == LiveState.NETWORK_LOST, 60,
                 "nothing taken from a sender not allowed")
        time.sleep(1.0)  # a second more of the stream sent
        assert live.state()["analysed"] == 0 and not live.state()["frames"]


def test_a_frame_older_than_anything_held_is_not_kept_and_nothing_else_instead(tmp_path):
    import numpy as np

    box = keeper_box(tmp_path)
    for seq in range(50, 53):
        box.clock[0] = seq * 0.1
        box.keeper.observe(np.full((48, 64), 100, np.uint8), [], [], seq)
    with box.database() as conn:
        asked = live_sessions.ask(conn, box.session.id, LiveRequest.KEY_FRAME, "nurse", seq=7)
    box.clock[0] = 6.0
    box.keeper.observe(np.full((48, 64), 200, np.uint8), [], [], 53)
    box.keeper.close()
    with box.database() as conn:
        outcome = conn.execute("SELECT outcome FROM live_requests WHERE id = ?",
                               (asked,)).fetchone()[0]
        assert live_sessions.kept_by(conn, box.session.id) == []
    assert outcome == "not kept: gone" and box.keeper.view()["error"] == "gone"


@pytest.mark.slow
def test_the_image_area_is_scaled_from_the_size_it_was_measured_on(running, tmp_path):
    """After a restart the first picture may be the larger one: the region and the scale
    are still those measured on 1280x720 ([[live.sources]] measured_on), not taken from
    whatever picture came first."""
    from phantoms.video import ScreenLayout, screen_frames
    from tests.live_video import write_video

    big = ScreenLayout().scaled(1920, 1080)
    frames = (frame for frame, _ in screen_frames(4, 1.0, 30.0, big))
    write_video(tmp_path / "big.mp4", frames, 30.0, "h264")
    live = running(url=str(tmp_path / "big.mp4"), loop=True, measured_on="1280x720",
                   mm_per_pixel=0.3, **REGION)
    wait_for(lambda: live.state().get("analysed", 0) > 3, 60, "the larger picture analysed")
    state = live.state()
    assert state["region"] == [420, 150, 1080, 810]
    assert state["mm_per_pixel"] == pytest.approx(0.2)


def test_a_kept_frame_carries_the_scale_of_the_picture_it_was_taken_from(tmp_path):
    """After the picture's size changed (its image area rescaled from the size it was
    measured on), what is kept is calibrated at the new scale, not the configured one."""
    import numpy as np

    box = keeper_box(tmp_path)
    box.keeper.picture_changed(0.3)  # as the engine says it after a size change
    box.keeper.observe(np.full((48, 64), 100, np.uint8), [], [], 1)
    with box.database() as conn:
        live_sessions.ask(conn, box.session.id, LiveRequest.KEY_FRAME, "nurse")
    box.clock[0] = 1.0
    box.keeper.observe(np.full((48, 64), 100, np.uint8), [], [], 2)
    box.keeper.close()
    with box.database() as conn:
        path = conn.execute("SELECT spool_path FROM instances").fetchone()[0]
    (region,) = pydicom.dcmread(path).SequenceOfUltrasoundRegions
    assert float(region.PhysicalDeltaX) == pytest.approx(0.03)  # cm: 0.3 mm a pixel
