"""A live source that proves who sends it (issue 56), all real parts: Debian's ffmpeg serves
the phantom ultrasound screen as MPEG-TS over TLS twice, once with a certificate signed by
the CA the box trusts (``ca_file``) and once as an impostor with its own CA's; two real
``clinibox live`` processes read them. The trusted encoder's frames are analysed; the
impostor's handshake is refused and not one of its frames enters the picture, where a UDP
``allowed_senders`` filter would have taken a forged sender's."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware_app.live.source import SourceUnavailable, VideoInput
from firmware_app.settings.live import LiveConfig, LiveSource
from firmware_app.storage.live_frames import read_state
from tests.box_harness import stop, to_toml, wait_for
from tests.integration.conftest import REPO
from tests.live_video import http_mjpeg_server, make_phantom_video, tls_mpegts_server
from tests.ports import free_ports
from tests.tls_certs import CertificateAuthority

pytestmark = pytest.mark.integration
REGION = {"region_x": 280, "region_y": 100, "region_width": 720, "region_height": 540}


def test_the_trusted_encoder_is_read_and_an_impostor_is_refused(tmp_path: Path):
    trusted = CertificateAuthority.create(tmp_path / "trusted", name="clinic encoders CA")
    impostor = CertificateAuthority.create(tmp_path / "impostor", name="clinic encoders CA")
    good = trusted.issue_server("encoder-1", tmp_path / "trusted", stem="encoder")
    forged = impostor.issue_server("encoder-1", tmp_path / "impostor", stem="encoder")
    video = make_phantom_video(tmp_path / "phantom.mp4", seconds=4.0, seed=5).path
    good_port, forged_port = free_ports(2)
    lives: list[subprocess.Popen] = []
    with tls_mpegts_server(video, good_port, *good) as good_url, \
            tls_mpegts_server(video, forged_port, *forged) as forged_url:
        config = tmp_path / "box.toml"
        config.write_text(to_toml({
            "storage": {"state_dir": str(tmp_path / "state")},
            "live": {"stall_seconds": 2.0, "sources": [
                {"name": "trusted", "url": good_url, "ca_file": str(trusted.cert_path),
                 **REGION},
                {"name": "impostor", "url": forged_url, "ca_file": str(trusted.cert_path),
                 **REGION}]}}))
        try:
            for name in ("trusted", "impostor"):
                lives.append(subprocess.Popen(
                    [sys.executable, "-m", "clinibox", "live", name,
                     "--config", str(config)], cwd=REPO,
                    stdout=open(tmp_path / f"{name}.log", "ab"),  # noqa: SIM115
                    stderr=subprocess.STDOUT))

            def state(name: str) -> dict:
                return read_state(tmp_path / "state" / "live", name) or {}

            def why() -> str:
                return "\n".join(f"{n}: {state(n)}\n"
                                 f"{(tmp_path / f'{n}.log').read_text(errors='replace')[-2000:]}"
                                 for n in ("trusted", "impostor"))

            wait_for(lambda: state("trusted").get("state") == "running"
                     and state("trusted").get("analysed", 0) > 20, 120,
                     "the trusted encoder analysed", why)
            wait_for(lambda: state("impostor").get("state") == "network_lost", 60,
                     "the impostor refused", why)
            time.sleep(3.0)  # the impostor's server is offered again meanwhile
            assert state("trusted")["state"] == "running", why()
            assert (state("trusted")["width"], state("trusted")["height"]) == (1280, 720)
            refused = state("impostor")
            assert refused["state"] == "network_lost", why()
            assert refused["analysed"] == 0 and refused["width"] == 0, why()
            assert not refused.get("frames"), why()  # nothing to show on its page
            assert "impostor" in refused["detail"]["error"]
        finally:
            for process in lives:
                stop(process)


def test_an_https_camera_is_checked_against_ca_file_too(tmp_path: Path):
    """ffmpeg serving MJPEG over HTTPS (``-listen 1`` with a certificate): read when its
    certificate is the trusted CA's, refused at the handshake when it is an impostor's."""
    trusted = CertificateAuthority.create(tmp_path / "trusted")
    impostor = CertificateAuthority.create(tmp_path / "impostor")
    video = make_phantom_video(tmp_path / "phantom.mp4", seconds=2.0, seed=6).path
    config = LiveConfig(stall_seconds=2.0)
    for ca, port in zip((trusted, impostor), free_ports(2), strict=True):
        cert, key = ca.issue_server("camera-1", tmp_path / ca.cert_path.parent.name,
                                    stem="camera")
        with http_mjpeg_server(video, port, cert=cert, key=key) as url:
            source = LiveSource(name="camera", url=url, ca_file=str(trusted.cert_path))
            if ca is impostor:
                with pytest.raises(SourceUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                    VideoInput(source, config)
                continue
            video_input = VideoInput(source, config)
            try:
                frames = video_input.frames()
                first = next(frames)
                assert (first.frame.width, first.frame.height) == (1280, 720)
                assert first.jpeg is not None  # the camera's own JPEG, shown as it came
            finally:
                video_input.close()
