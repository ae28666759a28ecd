"""Live sources that fail, under a real ``clinibox serve``, while images arrive over DICOM:
a stream claiming huge frames (refused before decoding), a capture card that is not there
(V4L2, opened by FFmpeg and found missing), an HTTP MJPEG camera that goes away and comes
back, a UDP stream that stalls and resumes, and a source's process killed as a decoder crash
would end it (the service says so on its page and starts it again). Throughout, storescu's
images are received and analysed: one source's fault stops nothing for the others."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from firmware_app.storage.live_frames import read_state
from tests.canary import write_canary_studies
from tests.integration.conftest import Box, send_as_modality, wait_for
from tests.live_video import (
    http_mjpeg_server,
    huge_mjpeg,
    make_phantom_video,
    udp_mpegts_sender,
)
from tests.ports import free_port

pytestmark = pytest.mark.integration
REGION = {"region_x": 280, "region_y": 100, "region_width": 720, "region_height": 540}


def live_child(box: Box, source: str) -> psutil.Process | None:
    """The service's ``clinibox live SOURCE`` child, if running."""
    assert box.process is not None
    for child in psutil.Process(box.process.pid).children(recursive=True):
        try:
            line = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "live" in line and source in line:
            return child
    return None


def test_faulty_sources_are_said_on_their_pages_and_ingest_goes_on(tmp_path: Path):
    video = make_phantom_video(tmp_path / "phantom.mp4", seconds=6.0, seed=3).path
    bomb = huge_mjpeg(tmp_path / "bomb.avi", size=4000)
    http_port, udp_port = free_port(), free_port()
    with http_mjpeg_server(video, http_port) as camera, \
            udp_mpegts_sender(video, udp_port) as stream:
        (tmp_path / "box").mkdir()
        box = Box(tmp_path / "box", {"live": {"stall_seconds": 1.0, "sources": [
            {"name": "bomb", "url": str(bomb), "loop": True},
            {"name": "card", "url": "/dev/video9", "video_size": "1280x720",
             "pixel_format": "mjpeg"},
            {"name": "camera", "url": camera, **REGION},
            {"name": "stream", "url": stream, **REGION},
        ]}})
        box.start()
        root = box.state / "live"

        def state(source: str) -> dict:
            return read_state(root, source) or {}

        try:
            studies = write_canary_studies(tmp_path / "studies", 6, lesion=True)
            assert send_as_modality(box.port, studies.files[:3])[0] == 3
            wait_for(lambda: state("bomb").get("state") == "refused", 120, "the bomb refused")
            assert "max_megapixels" in state("bomb")["detail"]["error"]
            wait_for(lambda: state("card").get("state") == "disconnected", 120,
                     "the missing card said")
            assert "video9" in state("card")["detail"]["error"]
            told = {s["source"]: s for s in box.cli_json("status")["live"]}
            assert told["bomb"]["state"] == "refused" and told["card"]["state"] == "disconnected"
            text = box.cli("status").stdout
            # the state in words (English here: the error after it, for the technician)
            assert "bomb: The box cannot read this video" in text and "max_megapixels" in text
            for source in ("camera", "stream"):
                wait_for(lambda s=source: state(s).get("state") == "running"
                         and state(s).get("analysed", 0) > 10, 180, f"{source} running")

            # the camera goes away, then comes back (its server restarts after a client
            # leaves: killing the running ffmpeg is the camera unplugged)
            child = next(p for p in psutil.process_iter(["cmdline"])
                         if p.info["cmdline"] and camera in p.info["cmdline"])
            before = state("camera")["analysed"]
            child.kill()
            wait_for(lambda: state("camera").get("state") == "network_lost"
                     or state("camera").get("analysed", 0) > before + 30, 60,
                     "the camera's loss seen")
            wait_for(lambda: state("camera").get("state") == "running"
                     and state("camera").get("analysed", 0) > before + 30, 120,
                     "the camera back")

            # each source's process bounds its own address space ([live] memory_mb: 2048)
            victim = live_child(box, "stream")
            assert victim is not None
            limits = Path(f"/proc/{victim.pid}/limits").read_text()
            bound = next(line for line in limits.splitlines()
                         if line.startswith("Max address space"))
            assert bound.split()[3] == str(2048 * 2**20), bound
            # a decoder crash ends the source's process: said, and started again
            victim.kill()
            wait_for(lambda: state("stream").get("state") == "decoder_failed", 60,
                     "the crash said on the page")
            assert state("stream")["detail"]["status"] == -9
            wait_for(lambda: state("stream").get("state") == "running"
                     and (live_child(box, "stream") or victim).pid != victim.pid, 180,
                     "the stream's process started again")

            assert send_as_modality(box.port, studies.files[3:])[0] == 3
            wait_for(lambda: box.db_rows("SELECT COUNT(*) FROM instances WHERE status = "
                                         "'processed'")[0][0] == 6, 240,
                     "every image received analysed")
            assert box.db_rows("SELECT COUNT(*) FROM instances WHERE source = 'live'")[0][0] == 0
            assert box.process is not None and box.process.poll() is None
            assert live_child(box, "bomb") is not None  # still there, refusing
        finally:
            box.stop()
    time.sleep(0.1)
