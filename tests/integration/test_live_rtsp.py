"""A live source over RTSP, all real parts: Debian's ffmpeg publishes the phantom ultrasound
screen (ANNOUNCE/RECORD) to Debian's rtsp-server-perl, which serves it as an IP camera
would; ``clinibox live`` reads it (RTP over UDP: that server offers nothing else) and
analyses it newest frame first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from firmware_app.storage.live_frames import read_state
from tests.box_harness import stop, to_toml, wait_for
from tests.integration.conftest import REPO
from tests.live_video import ffmpeg, listening, make_phantom_video
from tests.ports import free_ports

pytestmark = pytest.mark.integration
SERVER = "/usr/bin/rtsp-server-perl"


def test_an_rtsp_camera_is_read_and_analysed(tmp_path: Path):
    assert Path(SERVER).exists(), "rtsp-server-perl is needed (.ci/run installs it)"
    video = make_phantom_video(tmp_path / "phantom.mp4", seconds=4.0, seed=2).path
    client_port, source_port, rtp_port = free_ports(3)
    server = subprocess.Popen(
        [SERVER, "--clientport", str(client_port), "--serverport", str(source_port),
         "--client_listen_address", "127.0.0.1", "--source_listen_address", "127.0.0.1",
         "--rtp_start_port", str(20000 + rtp_port % 20000)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    publishers: list[subprocess.Popen] = []
    live = None
    publisher_log = tmp_path / "publisher.log"

    def publish() -> None:
        """(Re)start the publisher: ffmpeg gives up when the server does not answer it."""
        if not publishers or publishers[-1].poll() is not None:
            publishers.append(subprocess.Popen(
                [ffmpeg(), "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(video),
                 "-map", "0:v", "-c", "copy", "-f", "rtsp",
                 f"rtsp://127.0.0.1:{source_port}/ultrasound"],
                stdout=subprocess.DEVNULL, stderr=open(publisher_log, "ab")))  # noqa: SIM115
    try:
        # The Perl server takes seconds to start on a loaded machine; a fixed pause lost
        # the race on CI (the publisher found nobody, gave up, and no frame ever came).
        wait_for(lambda: server.poll() is None and listening(source_port)
                 and listening(client_port), 60, "the RTSP server listening")
        publish()
        config = tmp_path / "box.toml"
        config.write_text(to_toml({
            "storage": {"state_dir": str(tmp_path / "state")},
            "live": {"sources": [{"name": "rtsp-1", "rtsp_transport": "udp",
                                  "url": f"rtsp://127.0.0.1:{client_port}/ultrasound",
                                  "region_x": 280, "region_y": 100, "region_width": 720,
                                  "region_height": 540}]}}))
        live = subprocess.Popen([sys.executable, "-m", "clinibox", "live", "rtsp-1",
                                 "--config", str(config)], cwd=REPO,
                                stdout=open(tmp_path / "live.log", "ab"),  # noqa: SIM115
                                stderr=subprocess.STDOUT)

        def state() -> dict:
            return read_state(tmp_path / "state" / "live", "rtsp-1") or {}

        def analysed() -> bool:
            publish()
            now = state()
            return now.get("state") == "running" and now.get("analysed", 0) > 30

        def why() -> str:
            return (f"state: {state()}\npublishers started: {len(publishers)}\n"
                    f"publisher: {publisher_log.read_text(errors='replace')[-1500:]}\n"
                    f"live: {(tmp_path / 'live.log').read_text(errors='replace')[-3000:]}")

        wait_for(analysed, 120, "the RTSP camera analysed", why)
        assert (state()["width"], state()["height"]) == (1280, 720)
        assert state()["model"].startswith("clinibox-demo-lesion")
    finally:
        for process in (live, *publishers, server):
            if process is not None:
                stop(process)
