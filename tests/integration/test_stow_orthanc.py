"""Results sent by DICOMweb STOW-RS to a real PACS: Orthanc's DICOMweb plugin behind nginx.

The PACS is Debian's Orthanc with its DICOMweb plugin (``orthanc-dicomweb``), asking
HTTP Basic credentials, behind nginx for TLS (Orthanc 1.10 cannot serve HTTPS itself:
``tests/tls_front.py``), which also asks for the box's client certificate. The box's
side is the production sender (``DicomSender.run``, the thread ``clinibox serve``
starts) on a configuration read from TOML as a technician writes it. What arrived is
read from Orthanc's REST API, and every store that reached it is counted by its Lua
filter, so "once" means sent once.
"""

from __future__ import annotations

import base64
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_app.dicom_out import sender as sender_module
from firmware_app.settings import box as cfg
from firmware_app.settings.pacs import PacsProtocol
from firmware_app.storage import db
from tests.i18n_text import english_sentences
from tests.integration.test_dicom_outbox_orthanc import (
    all_sent,
    outbox,
    queue,
    running_sender,
    study_documents,
)
from tests.orthanc_server import Orthanc, wait_until
from tests.tls_certs import make_pki
from tests.tls_front import TlsFront

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "stow-canary-Pw-90210"
USER = "clinibox-rural-1"


def documented_destination() -> str:
    """The STOW-RS destination of the results page (``docs/integration/results.md``), as
    a technician copies it into the config file."""
    page = (REPO / "docs" / "integration" / "results.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", page, re.S)
    (block,) = [b for b in blocks if 'protocol = "stow-rs"' in b]
    return block


def stow_box(root: Path, front: TlsFront, pki, password_file: Path) -> cfg.Config:
    """A box whose one destination is the PACS's STOW-RS service, as the results page
    writes it, with this PACS's address, the test's files and quick retries."""
    path = root / "box.toml"
    root.mkdir(parents=True, exist_ok=True)
    mine = {"url": f"https://localhost:{front.port}/dicom-web", "username": USER,
            "password_file": str(password_file), "ca_file": str(pki.ca_cert)}
    table = documented_destination()
    for key, value in mine.items():
        table, found = re.subn(rf'^{key} = "[^"]*"', f'{key} = "{value}"', table, flags=re.M)
        assert found == 1, f"the page's STOW-RS destination sets no {key}"
    path.write_text(
        f'[storage]\nstate_dir = "{root / "state"}"\n'
        "[pacs]\nretry_min_seconds = 0.2\nretry_max_seconds = 1.0\nconnect_timeout = 10\n"
        f'{table}cert_file = "{pki.client_cert}"\nkey_file = "{pki.client_key}"\n')
    config = cfg.load(path)
    db.open_database(config.database_path).close()
    return config


def figures(config: cfg.Config) -> dict:
    """``clinibox status``'s figures for the page's destination ``archive``."""
    from firmware_app.cli.commands import status_report

    (archive,) = [d for d in status_report(config)["pacs"] if d["name"] == "archive"]
    return archive


def device_page(config: cfg.Config, language: str) -> str:
    """The viewer's device page as a technician reads it in ``language``."""
    from firmware_app.storage.accounts import Accounts
    from tests.viewer_state import TECHNICIAN
    from tests.web_client import ViewerClient
    from web.app import create_app

    conn = db.connect(config.database_path)
    try:
        if not Accounts(conn).all():
            Accounts(conn).add(*TECHNICIAN, "technician")
    finally:
        conn.close()
    client = ViewerClient(create_app(config))
    client.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = language
    assert client.login(*TECHNICIAN).status_code == 302
    return client.get("/device").get_data(as_text=True)


def password_file(folder: Path, password: str) -> Path:
    path = folder / "pacs-password"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def everything_the_box_wrote(config: cfg.Config) -> str:
    """Every text of the box's database (rows of every table), as one string."""
    with sqlite3.connect(config.database_path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master "
                                             "WHERE type = 'table'")]
        return "\n".join(repr(row) for table in tables
                         for row in conn.execute(f'SELECT * FROM "{table}"'))


def test_results_arrive_by_stow_rs_over_mutual_tls_once_and_the_password_stays_home(
        tmp_path, monkeypatch, caplog):
    pki = make_pki(tmp_path / "pki")
    with Orthanc(tmp_path / "orthanc", dicomweb=True, users={USER: PASSWORD}) as pacs, \
            TlsFront(tmp_path / "nginx", pacs.http_port, pki.server_cert, pki.server_key,
                     client_ca=pki.ca_cert) as front:
        config = stow_box(tmp_path / "box", front, pki, password_file(tmp_path, PASSWORD))
        opened = sender_module.LINKS[PacsProtocol.STOW_RS]
        links = []

        def counting(destination, *args):
            links.append(destination.name)
            return opened(destination, *args)

        monkeypatch.setitem(sender_module.LINKS, PacsProtocol.STOW_RS, counting)
        docs = study_documents()
        uids = queue(config, docs)
        with running_sender(config):
            wait_until(lambda: all_sent(config, 3), 60, "three documents stored by STOW-RS")
        assert links == ["archive"]  # one connection carried the three

        assert sorted(pacs.sop_instance_uids()) == sorted(uids)
        assert pacs.receptions() == dict.fromkeys(uids, 1)
        modalities = {pacs.instance_tags(i)["Modality"] for i in pacs.instances()}
        assert modalities == {"SR", "SEG", "OT"}
        status = figures(config)
        assert (status["waiting"], status["sent"], status["last_error"]) == (0, 3, None)
        # the password and its Basic form never reach the box's database or its log
        encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        for secret in (PASSWORD, encoded):
            assert secret not in everything_the_box_wrote(config)
            assert secret not in caplog.text

        # without its client certificate the box is not let in: said, waiting, not held
        config.pacs.destinations[0].cert_file = config.pacs.destinations[0].key_file = ""
        (late,) = queue(config, study_documents()[:1])
        with running_sender(config):
            wait_until(lambda: outbox(config)[-1]["attempts"] >= 1, 60,
                       "the try without a certificate")
        (row,) = [r for r in outbox(config) if r["sop_instance_uid"] == late]
        assert row["state"] == "pending" and late not in pacs.receptions()
        assert "HTTP 400" in row["last_error"]  # nginx: no required SSL certificate


def test_a_wrong_password_and_a_pacs_down_behind_its_front_wait_then_arrive_once(tmp_path):
    pki = make_pki(tmp_path / "pki")
    with Orthanc(tmp_path / "orthanc", dicomweb=True, users={USER: PASSWORD}) as pacs, \
            TlsFront(tmp_path / "nginx", pacs.http_port, pki.server_cert,
                     pki.server_key) as front:
        secret = password_file(tmp_path, "not-the-password")
        config = stow_box(tmp_path / "box", front, pki, secret)
        uids = queue(config, study_documents())
        with running_sender(config) as wake:
            wait_until(lambda: min(r["attempts"] for r in outbox(config)) >= 3, 60,
                       "three tries with the wrong password")
            status = figures(config)
            assert status["last_error_code"] == "pacs_failed:auth"
            assert "HTTP 401" in status["last_error"]
            rows = outbox(config)
            assert {r["state"] for r in rows} == {"pending"}  # never held for a password
            assert {r["refusals"] for r in rows} == {0}
            assert pacs.receptions() == {}
            # the device page says at its top, in Chinese, that a person must fix it
            page = device_page(config, "zh-CN")
            banner = re.search(r'id="pacs-to-fix"><a href="#pacs">(.*?)</a>', page)
            assert banner and "archive" in banner[1] and english_sentences(
                banner[1].replace("archive", "")) == [], banner
            assert "PACS 不接受设备的用户名或密码" in page

            # the technician writes the right password: no restart, the next try takes it
            secret.write_text(PASSWORD + "\n")
            wake.set()
            wait_until(lambda: all_sent(config, 3), 60, "sent with the right password")
            assert pacs.receptions() == dict.fromkeys(uids, 1)

            # the PACS goes down behind its front (nginx answers 502): the result waits
            pacs.stop()
            (late,) = queue(config, study_documents()[:1])
            wake.set()
            wait_until(lambda: outbox(config)[-1]["attempts"] >= 2, 60,
                       "two tries while the PACS is down")
            assert figures(config)["last_error_code"] == "pacs_failed:server_error"
            assert outbox(config)[-1]["state"] == "pending"
            pacs.start()
            wait_until(lambda: all_sent(config, 4), 60, "sent once the PACS is back")
        assert pacs.receptions() == dict.fromkeys([*uids, late], 1)


def check(config_path: Path, language: str, *more: str):
    """``clinibox dicom-out check`` as a technician runs it after editing the config."""
    env = {**os.environ, "LANG": language, "LC_ALL": language, "LANGUAGE": ""}
    return subprocess.run([sys.executable, "-m", "clinibox", "dicom-out", "check",
                           "--config", str(config_path), *more], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=120)


def test_dicom_out_check_says_which_destination_would_not_take_results_and_why(tmp_path):
    pki = make_pki(tmp_path / "pki")
    with Orthanc(tmp_path / "orthanc", dicomweb=True, users={USER: PASSWORD},
                 check_called_aet=True) as pacs, \
            TlsFront(tmp_path / "nginx", pacs.http_port, pki.server_cert,
                     pki.server_key) as front:
        secret = password_file(tmp_path, "not-the-password")
        stow_box(tmp_path / "box", front, pki, secret)
        path = tmp_path / "box" / "box.toml"
        path.write_text(path.read_text()
                        + f'[[pacs.destinations]]\nname = "pacs"\nae_title = "{pacs.ae_title}"\n'
                          f'host = "{pacs.host}"\nport = {pacs.dicom_port}\n'
                          '[[pacs.destinations]]\nname = "wrong-ae"\nae_title = "NOT-IT"\n'
                          f'host = "{pacs.host}"\nport = {pacs.dicom_port}\n')
        chinese = check(path, "zh_CN.UTF-8")
        assert chinese.returncode == 1, chinese
        lines = chinese.stdout.splitlines()
        (archive,) = [line for line in lines if line.startswith("archive")]
        assert "PACS 不接受设备的用户名或密码" in archive and "not-the-password" not in archive
        (good,) = [line for line in lines if line.startswith("pacs（")]
        assert "可以接收结果" in good
        (wrong,) = [line for line in lines if line.startswith("wrong-ae")]
        # Orthanc closes the connection as it rejects; now and then the reset is read first
        # (test_dicom_outbox_orthanc says the same)
        assert "ae_title" in wrong or "PACS 中断了连接" in wrong, wrong
        words = re.sub(r"^\S+（[^）]*）", "", chinese.stdout, flags=re.M)  # name, address
        assert english_sentences(words) == [], chinese.stdout

        secret.write_text(PASSWORD + "\n")  # the technician fixes the password
        english = check(path, "C.UTF-8", "--destination", "archive")
        assert english.returncode == 0, english
        assert english.stdout.strip() == (f"archive (https://localhost:{front.port}"
                                          "/dicom-web): takes results")
        assert pacs.receptions() == {}  # checking stored nothing
