"""How the viewer is served: its certificate, gunicorn's settings, the first-run hint, the child."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from clinibox_common.settings_loader import ConfigError
from firmware_app.service.viewer_process import ViewerProcess
from firmware_app.settings.box import Config
from firmware_app.settings.storage import StorageConfig
from firmware_app.settings.web import WebConfig
from firmware_app.storage import db
from firmware_app.storage.accounts import Accounts
from web.server import certificate, first_run_hint, gunicorn_options
from webcore.tls import make_self_signed


def _config(tmp_path, **web) -> Config:
    return Config(storage=StorageConfig(state_dir=str(tmp_path / "state")), web=WebConfig(**web))


def test_self_signed_certificate_names_the_box_and_keeps_its_key_private(tmp_path):
    cert_path, key_path = tmp_path / "c.pem", tmp_path / "k.pem"
    make_self_signed(cert_path, key_path, "clinic-box-7")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert "clinic-box-7" in names.get_values_for_type(x509.DNSName)
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 3649


def test_certificate_is_made_once_and_reused(tmp_path):
    config = _config(tmp_path)
    cert, key, fingerprint = certificate(config)
    assert cert.exists() and key.exists()
    assert len(fingerprint.split(":")) == 32
    assert certificate(config)[2] == fingerprint


def test_configured_certificate_must_exist(tmp_path):
    config = _config(tmp_path, tls_cert=str(tmp_path / "none.pem"),
                     tls_key=str(tmp_path / "none.key"))
    with pytest.raises(ConfigError, match="does not exist"):
        certificate(config)
    (tmp_path / "none.pem").write_text("not a certificate")
    (tmp_path / "none.key").write_text("x")
    with pytest.raises(ConfigError, match="not a PEM certificate"):
        certificate(config)


def test_gunicorn_serves_tls_with_threads(tmp_path):
    config = _config(tmp_path, port=8443, threads=6, host="127.0.0.1")
    options = gunicorn_options(config, tmp_path / "c.pem", tmp_path / "k.pem")
    assert options["bind"] == "127.0.0.1:8443"
    assert options["certfile"].endswith("c.pem") and options["keyfile"].endswith("k.pem")
    assert options["worker_class"] == "gthread" and options["threads"] == 6


def test_first_run_hint_until_an_account_exists(tmp_path):
    config = _config(tmp_path)
    hint = first_run_hint(config, "/etc/clinibox/box.toml")
    assert hint and "clinibox user add NAME --role technician --config /etc/clinibox/box.toml" \
        in hint
    conn = db.open_database(config.database_path)
    Accounts(conn).add("tina", "keeps-the-box-running", "technician")
    conn.close()
    assert first_run_hint(config) is None


def test_tls_settings_go_together():
    from firmware_app.settings.box import from_dict

    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        from_dict({"web": {"tls_cert": "/etc/clinibox/viewer.pem"}})


@pytest.mark.slow
def test_viewer_child_is_restarted_when_it_dies_and_ended_on_stop(tmp_path):
    starts = tmp_path / "starts"
    viewer = ViewerProcess(None)
    viewer.command = [sys.executable, "-c",
                      f"open({str(starts)!r}, 'a').write('x'); import sys; sys.exit(3)"]
    stop = threading.Event()
    runner = threading.Thread(target=viewer.run, args=(stop,))
    runner.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(starts.read_text() if starts.exists() else "") < 2:
        time.sleep(0.1)
    assert len(starts.read_text()) >= 2  # exited with 3, started again after the backoff
    viewer.command = [sys.executable, "-c", "import time; time.sleep(120)"]
    stop.set()
    runner.join(timeout=30)
    assert not runner.is_alive()
    assert viewer.process is not None and viewer.process.poll() is not None


def test_viewer_child_gets_the_service_config():
    assert ViewerProcess("/etc/clinibox/box.toml").command[-2:] == [
        "--config", "/etc/clinibox/box.toml"]
    assert ViewerProcess(None).command[-1] == "web"


def test_viewer_child_ends_when_the_service_is_killed(tmp_path):
    child_pid = tmp_path / "child.pid"
    service = subprocess.Popen([sys.executable, "-c", f"""
import threading
from firmware_app.service.viewer_process import ViewerProcess
viewer = ViewerProcess(None)
viewer.command = [{sys.executable!r}, "-c", "import os, time; "
    "from firmware_app.service.viewer_process import die_with_parent; die_with_parent(); "
    "open({str(child_pid)!r}, 'w').write(str(os.getpid())); time.sleep(120)"]
viewer.run(threading.Event())
"""], cwd=Path(__file__).resolve().parents[3])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not child_pid.exists():
        time.sleep(0.1)
    pid = int(child_pid.read_text())
    service.kill()  # a power-cut-like end of the service: no clean stop
    service.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _running(pid):
        time.sleep(0.1)
    assert not _running(pid)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    except OSError:
        return False
    return state != "Z"
