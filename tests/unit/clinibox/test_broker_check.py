"""``clinibox central check-broker`` (central/broker_check.py): Mosquitto's set-up refused before
the broker starts, each problem with its fix."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from central import broker_check
from clinibox.central_command import main as central_main
from tests.tls_certs import CertificateAuthority

ACL = "\n".join([*broker_check.BOX_LINES, "", "user central-receiver",
                 *broker_check.RECEIVER_LINES]) + "\n"


@pytest.fixture
def broker() -> Iterator[Path]:
    """A broker's folder everyone may walk (a pytest tmp_path's parents are root's alone)
    with a good set-up: CA, server certificate and key (group mosquitto, 0640), conf, ACL."""
    folder = Path(tempfile.mkdtemp(prefix="broker-check-", dir="/tmp"))
    folder.chmod(0o755)
    ca = CertificateAuthority.create(folder)
    cert, key = ca.issue_server("mqtt.hospital.example", folder, stem="server")
    shutil.chown(key, group="mosquitto")
    key.chmod(0o640)
    (folder / "clinibox.acl").write_text(ACL)
    (folder / "conf.d").mkdir()
    (folder / "mosquitto.conf").write_text(f"persistence true\ninclude_dir {folder}/conf.d\n")
    (folder / "conf.d" / "clinibox.conf").write_text(
        f"per_listener_settings false\nallow_anonymous false\nacl_file {folder}/clinibox.acl\n"
        f"listener 8883\ncafile {ca.cert_path}\ncertfile {cert}\nkeyfile {key}\n"
        "require_certificate true\nuse_identity_as_username true\n")
    yield folder
    shutil.rmtree(folder)


def _problems(folder: Path) -> list[str]:
    return [f.problem.value for f in broker_check.check(folder / "mosquitto.conf")]


def test_the_documented_set_up_passes(broker, capsys):
    assert _problems(broker) == []
    assert central_main(["check-broker", "--conf", str(broker / "mosquitto.conf")]) == 0
    assert "ACL complete" in capsys.readouterr().out


def test_a_key_only_root_may_read_is_refused_with_the_fix(broker, capsys):
    key = broker / "server.key"
    shutil.chown(key, group="root")
    key.chmod(0o600)
    [finding] = broker_check.check(broker / "mosquitto.conf")
    assert finding.problem == "unreadable" and finding.path == str(key)
    assert f"chgrp mosquitto {key} && chmod 0640 {key}" in finding.fix
    assert central_main(["check-broker", "--conf", str(broker / "mosquitto.conf")]) == 2
    assert "unreadable" in capsys.readouterr().out
    key.chmod(0o644)
    assert _problems(broker) == ["key_exposed"]


def test_a_folder_the_broker_cannot_walk_hides_its_files(broker):
    os.chmod(broker, 0o700)
    try:
        assert set(_problems(broker)) == {"unreadable"}
    finally:
        os.chmod(broker, 0o755)


def test_a_certificate_not_the_keys_or_not_from_the_ca_is_refused(broker):
    other = CertificateAuthority.create(broker / "other")
    cert, _ = other.issue_server("mqtt.hospital.example", broker / "other", stem="stranger")
    conf = broker / "conf.d" / "clinibox.conf"
    conf.write_text(conf.read_text().replace(str(broker / "server.pem"), str(cert)))
    (broker / "other").chmod(0o755)
    assert _problems(broker) == ["key_mismatch", "not_from_ca"]


def test_tls_without_client_certificates_and_an_acl_without_the_downlink_are_refused(broker):
    conf = broker / "conf.d" / "clinibox.conf"
    conf.write_text(conf.read_text().replace("require_certificate true", ""))
    acl = broker / "clinibox.acl"
    acl.write_text(acl.read_text().replace("pattern read clinibox-downlink/%u\n", "")
                   .replace("topic write clinibox-downlink/#\n", ""))
    findings = broker_check.check(broker / "mosquitto.conf")
    assert [f.problem.value for f in findings] == ["tls_off", "acl"]
    assert "require_certificate true" in findings[0].fix
    assert "pattern read clinibox-downlink/%u" in findings[1].fix
    assert "topic write clinibox-downlink/#" in findings[1].fix
