"""The live mode's phantom video: the demo model sees its lesions, and it travels as files
and streams (tests/live_video.py) that PyAV reads; hostile input is what it claims."""

from __future__ import annotations

import itertools

import av
import numpy as np
import pytest

from phantoms.video import ScreenLayout, image_area, screen_frames
from tests.live_video import (
    TS_PACKET,
    corrupted_ts,
    garbage,
    http_mjpeg_server,
    huge_mjpeg,
    make_phantom_video,
    resolution_change_ts,
    sof_size,
    udp_mpegts_sender,
)
from tests.ports import free_port

SMALL = ScreenLayout().scaled(640, 360)


@pytest.fixture(scope="module")
def runner():
    """The box's model, loaded the way the box loads it (the demo model)."""
    from firmware_app.service.appliance import load_runner
    from firmware_app.settings.box import load

    loaded = load_runner(load(None))
    yield loaded
    loaded.close()


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _found(truth, boxes) -> bool:
    """A found box overlaps the true one (IoU >= 0.2) or has its centre inside it."""
    for box in boxes:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        if _iou(truth, box) >= 0.2 or (truth[0] <= cx <= truth[2] and truth[1] <= cy <= truth[3]):
            return True
    return False


@pytest.mark.slow
def test_the_demo_model_finds_the_lesions_and_little_else(runner):
    layout = ScreenLayout()
    x, y = layout.region[:2]
    seen, lesion_frames, marked, clear_frames = 0, 0, 0, 0
    videos = ((11, 8.0, True), (5, 3.0, False))
    for seed, seconds, lesion in videos:
        for i, (frame, truth) in enumerate(screen_frames(seed, seconds, layout=layout,
                                                         lesion=lesion)):
            if i % 2:
                continue
            findings, _ = runner.run(image_area(frame, layout), refine=True)
            boxes = [(b.x0 + x, b.y0 + y, b.x1 + x, b.y1 + y) for b in findings.boxes]
            if truth:
                lesion_frames += 1
                seen += all(_found(t, boxes) for t in truth)
            else:
                clear_frames += 1
                marked += bool(boxes)
    assert lesion_frames >= 40 and clear_frames >= 60
    assert seen / lesion_frames >= 0.6, (seen, lesion_frames)
    assert marked / clear_frames <= 0.1, (marked, clear_frames)


def test_the_frames_are_deterministic_and_their_truth_lies_in_the_image_area():
    first = list(screen_frames(3, 4.0, fps=10, layout=SMALL))
    again = list(screen_frames(3, 4.0, fps=10, layout=SMALL))
    assert len(first) == 40
    assert all(np.array_equal(a, b) and ta == tb
               for (a, ta), (b, tb) in zip(first, again, strict=True))
    assert first[0][0].shape == (360, 640, 3) and first[0][0].dtype == np.uint8
    assert not first[0][1]  # every video starts lesion-free
    x, y, w, h = SMALL.region
    boxes = [b for _, truth in first for b in truth]
    assert boxes
    assert all(x <= b[0] < b[2] <= x + w and y <= b[1] < b[3] <= y + h for b in boxes)
    # a still-looking probe is not a frozen picture: consecutive frames differ
    assert all(not np.array_equal(a[0], b[0]) for a, b in itertools.pairwise(first))
    assert list(screen_frames(3, 1.0, fps=10, layout=SMALL, lesion=False))[-1][1] == []


def test_an_h264_file_decodes_to_its_size_and_frame_count(tmp_path):
    video = make_phantom_video(tmp_path / "us.mp4", seconds=1.0, seed=2)
    with av.open(str(video.path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        assert stream.codec_context.name == "h264"
    assert video.frames == len(frames) == 30
    assert {(f.width, f.height) for f in frames} == {(1280, 720)}


def _receive(url: str, fmt: str, count: int = 10) -> list[av.VideoFrame]:
    with av.open(url, format=fmt, timeout=5) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame)
            if len(frames) == count:
                break
    return frames


@pytest.mark.slow
def test_ffmpeg_streams_the_video_over_udp_and_http(tmp_path):
    video = make_phantom_video(tmp_path / "us.ts", seconds=1.0, seed=4, layout=SMALL)
    with udp_mpegts_sender(video.path, free_port()) as url:
        frames = _receive(url, "mpegts")
    assert len(frames) == 10 and {(f.width, f.height) for f in frames} == {(640, 360)}
    with http_mjpeg_server(video.path, free_port()) as url:
        frames = _receive(url, "mpjpeg")
    assert len(frames) == 10 and {(f.width, f.height) for f in frames} == {(640, 360)}
    assert frames[0].format.name.startswith("yuvj")  # JPEGs, encoded again by ffmpeg


def test_hostile_inputs_are_what_they_claim(tmp_path):
    raw = huge_mjpeg(tmp_path / "huge.mjpeg", frames=3)
    first = raw.read_bytes().split(b"\xff\xd9")[0] + b"\xff\xd9"
    assert sof_size(first)[1:] == (30000, 30000)

    video = make_phantom_video(tmp_path / "us.mp4", seconds=1.0, seed=6, layout=SMALL)
    assert corrupted_ts(tmp_path / "broken.ts", video.path, fraction=0.01) > 0
    with av.open(str(tmp_path / "broken.ts")) as container:
        decoded = sum(1 for _ in container.decode(video=0))
    assert decoded >= video.frames // 2

    counts = resolution_change_ts(tmp_path / "change.ts", seconds=0.3,
                                  first=(640, 360), second=(1280, 720))
    with av.open(str(tmp_path / "change.ts")) as container:
        sizes = [(f.width, f.height) for f in container.decode(video=0)]
    assert counts == (9, 9)
    assert sizes[0] == (640, 360) and sizes[-1] == (1280, 720)
    assert set(sizes) == {(640, 360), (1280, 720)}

    data = garbage(tmp_path / "garbage.ts", size=TS_PACKET * 100).read_bytes()
    assert data[::TS_PACKET] == b"\x47" * 100 and len(set(data)) > 200
