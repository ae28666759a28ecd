"""No live source's password on any surface (issue 56): a real ``clinibox serve`` runs a
``clinibox live`` process for an RTSP and an HTTP camera that cannot be reached, each with a
canary password in its URL (user:password@ and ?password=), and one whose password is in a
``password_file``. Every place a person or a program reads is searched for the canaries:
every file of the box's state folder (the live state files, the database with its events
and its outboxes, the spool), the viewer's ``/live/<source>/state`` and pages,
``clinibox status`` in both languages and as JSON, and the service's log (the live
processes' lines with it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_app.storage.live_frames import read_state
from tests.docs_run_client import _session
from tests.integration.conftest import REPO, Box, add_viewer_account, wait_for
from tests.ports import free_ports

pytestmark = pytest.mark.integration
CANARY, FILE_CANARY = "CanaryPw4711", "FileCanary0815"
NURSE = ("nurse.li", "a-long-nurse-password-1")


def _everything_under(folder: Path) -> list[Path]:
    return [Path(root) / name for root, _dirs, files in os.walk(folder) for name in files]


def test_no_password_of_an_unreachable_source_reaches_a_page_a_file_or_a_log(tmp_path):
    rtsp_port, http_port, file_port = free_ports(3)  # nothing listens on them
    password_file = tmp_path / "camera.password"
    password_file.write_text(FILE_CANARY + "\n")
    password_file.chmod(0o600)
    sources = [
        {"name": "rtsp-cam", "url": f"rtsp://admin:{CANARY}@127.0.0.1:{rtsp_port}/live"},
        {"name": "http-cam",
         "url": f"http://admin:{CANARY}@127.0.0.1:{http_port}/video.mjpg?password={CANARY}"},
        {"name": "file-cam", "url": f"rtsp://admin@127.0.0.1:{file_port}/live",
         "password_file": str(password_file)},
    ]
    (tmp_path / "box").mkdir()
    box = Box(tmp_path / "box", {"web": {"enabled": True},
                                 "live": {"stall_seconds": 1.0, "sources": sources}})
    box.start()
    try:
        add_viewer_account(box, NURSE[0], NURSE[1], "clinician")
        root = box.state / "live"
        names = [s["name"] for s in sources]

        def all_lost() -> bool:
            return all((read_state(root, n) or {}).get("state") == "network_lost"
                       and (read_state(root, n) or {}).get("detail", {}).get("error")
                       for n in names)

        wait_for(all_lost, 120, "the three cameras said unreachable")
        errors = {n: read_state(root, n)["detail"]["error"] for n in names}
        # the technician still reads which camera, which user and why
        assert "admin:***@127.0.0.1" in errors["rtsp-cam"], errors
        assert "refused" in errors["http-cam"].lower(), errors
        assert "refused" in errors["file-cam"].lower(), errors

        viewer = f"https://127.0.0.1:{box.web_port}"
        wait_for(lambda: _answers(viewer), 90, "the viewer to answer")
        session = _session(viewer, *NURSE)
        pages = [session.get(f"{viewer}/live/{n}/state", timeout=30).text for n in names]
        pages += [session.get(f"{viewer}/live/{n}", timeout=30).text for n in names]
        pages.append(session.get(f"{viewer}/live", timeout=30).text)
        assert all('"network_lost"' in page for page in pages[:3]), pages[:3]

        said = [_status(box, "en_US.UTF-8"), box.cli("status", "--json").stdout,
                _status(box, "zh_CN.UTF-8")]
        assert "admin:***@" in said[0] and "admin:***@" in said[1], said[:2]

        box.stop()  # its last lines and the databases' write-ahead logs written out
        files = [*_everything_under(box.state), box.log]
        assert any(f.name.endswith(".json") and "live" in f.parts for f in files)
        for canary in (CANARY, FILE_CANARY):
            for page in pages + said:
                assert canary not in page
            for path in files:
                assert canary.encode() not in path.read_bytes(), path
        log = box.log.read_text(errors="replace")
        # the line at every start
        assert "live rtsp-cam: rtsp://admin:***@127.0.0.1" in log
        assert "live http-cam: http://admin:***@127.0.0.1" in log and "password=***" in log
    finally:
        box.stop()


def _status(box: Box, language: str) -> str:
    """``clinibox status`` as a technician's terminal in ``language`` prints it."""
    result = subprocess.run(
        [sys.executable, "-m", "clinibox", "status", "--config", str(box.config)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, "LC_ALL": language})
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def _answers(url: str) -> bool:
    import requests

    try:
        requests.get(f"{url}/login", verify=False, timeout=5)
    except requests.RequestException:
        return False
    return True
