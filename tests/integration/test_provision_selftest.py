"""Provisioning a box from a hospital's bundle, then its self-test, with real parts.

The hospital's CA issues the bundle through ``clinibox central bundle``; a real
Mosquitto broker trusts that CA; ``clinibox provision`` and ``clinibox
selftest`` run as a technician runs them (``.venv/bin/clinibox``), against a
real ``clinibox serve``. The QR code printed in the terminal is decoded with
zbar, and the code in it enrols the box at a real central store, which then
accepts a message the box itself sent through the broker.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from central.bundle import issue_client_certificate, make_bundle
from central.config import CentralConfig
from central.receiver import Receiver
from central.store import Store
from clinibox_common.contracts.enrolment import EnrolmentBundle, read_bundle, write_bundle
from clinibox_common.contracts.envelope import generate_x25519_pair, load_x25519_private
from clinibox_common.contracts.signing import generate_key_pair
from firmware_app.ops.provision import ProvisionError, provision
from firmware_app.ops.selftest import Check, check_broker, check_clock, check_dicom_echo, check_disk
from firmware_app.settings.box import Config, from_dict, load
from firmware_app.settings.mqtt import MqttConfig
from firmware_app.storage import db
from tests.integration.conftest import REPO, Box, to_toml, wait_for
from tests.model_packages import make_package
from tests.mqtt_broker import Auditor, Broker, MqttPki, make_mqtt_pki
from tests.provisioned_box import (
    as_service_user,
    assert_provisioned_for_the_service,
    box_root,
    service_ids,
)
from tests.tls_certs import CertificateAuthority, make_pki

pytestmark = pytest.mark.integration

CLINIBOX = Path(sys.executable).with_name("clinibox")
CLINIC, DEVICE = "clinic-a", "box-1"
QR_BITS = {" ": (1, 1), "▀": (0, 1), "▄": (1, 0), "█": (0, 0)}  # segno's compact terminal


def clinibox(*args: str, env: dict[str, str] | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``.venv/bin/clinibox`` as a technician would."""
    return subprocess.run([str(CLINIBOX), *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=cwd)


@dataclass(frozen=True)
class Hospital:
    """The hospital's CA (as files), its telemetry key pair and a bundle for clinic-a/box-1."""

    root: Path
    pki: MqttPki
    ca_key: Path
    hospital_pem: Path
    hospital_pub: Path
    bundle: Path
    #: the hospital's model-signing key (a provisioned box never trusts the demo key)
    model_key: Path



@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Hospital:
    """A CA with a broker certificate, the hospital key, and a bundle written by the CLI."""
    root = tmp_path_factory.mktemp("hospital")
    pki = make_mqtt_pki(root / "pki", [])
    ca_key = root / "ca.key"
    ca_key.write_bytes(pki.authority.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    generate_x25519_pair(root / "hospital.pem", root / "hospital.pub")
    generate_key_pair(root / "model-signing.pem", root / "model-signing.pub")
    place = Hospital(root, pki, ca_key, root / "hospital.pem", root / "hospital.pub",
                     root / "box-1.bundle", root / "model-signing.pem")
    done = clinibox("central", "bundle", "--ca-cert", str(pki.ca_cert), "--ca-key", str(ca_key),
                    "--clinic", CLINIC, "--device", DEVICE, "--broker-host", "127.0.0.1",
                    "--broker-port", "8883", "--hospital-key", str(place.hospital_pub),
                    "--signing-key", str(root / "model-signing.pub"), "--no-downlink",
                    "--out", str(place.bundle))
    assert done.returncode == 0, done.stderr
    assert f"wrote enrolment bundle {place.bundle} for {CLINIC}/{DEVICE}" in done.stdout
    assert stat.S_IMODE(place.bundle.stat().st_mode) == 0o600
    return place


def bundle_for_broker(hospital: Hospital, port: int, folder: Path) -> Path:
    """The CLI's bundle with the broker port of this test (re-written, still checked)."""
    bundle = replace(read_bundle(hospital.bundle), broker_port=port)
    path = folder / "box-1.bundle"
    write_bundle(bundle, path)
    return path


def selftest(box: Box) -> tuple[int, dict[str, tuple[str, str]]]:
    """``clinibox selftest --json``: exit status and name → (status, detail)."""
    done = clinibox("selftest", "--config", str(box.config), "--json", "--timeout", "3")
    checks = {c["name"]: (c["status"], c["detail"]) for c in json.loads(done.stdout)["checks"]}
    return done.returncode, checks


def decode_terminal_qr(output: str, folder: Path) -> str:
    """Read the QR code drawn with half blocks back into an image and decode it with zbar."""
    lines = [line for line in output.splitlines() if line and set(line) <= set(QR_BITS)]
    rows: list[list[int]] = []
    for line in lines:
        rows.append([QR_BITS[c][0] for c in line])
        rows.append([QR_BITS[c][1] for c in line])
    if set(lines[-1]) == {"▀"}:  # an odd number of rows: the last half line is padding
        rows.pop()
    scale = 6
    pixels = b"".join((b"".join(bytes([0 if dark else 255]) * scale for dark in row)) * scale
                      for row in rows)
    image = folder / "terminal-qr.pgm"
    image.write_bytes(b"P5 %d %d 255\n" % (len(rows[0]) * scale, len(rows) * scale) + pixels)
    return zbar(image)


def zbar(image: Path) -> str:
    """The text of the one QR code in ``image``, decoded by zbarimg."""
    zbarimg = shutil.which("zbarimg")
    assert zbarimg, "zbarimg not found: apt-get install zbar-tools"
    done = subprocess.run([zbarimg, "--raw", "-q", str(image)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def enrol_line(output: str) -> str:
    """The code on the ``clinibox central enrol-code CODE`` line of provision's output."""
    [line] = [x for x in output.splitlines() if "clinibox central enrol-code" in x]
    return line.split("enrol-code", 1)[1].strip()


def test_provision_then_selftest_passes_and_names_what_breaks(hospital: Hospital,
                                                              tmp_path: Path) -> None:
    with Broker(tmp_path / "broker", hospital.pki) as broker, \
            Auditor(broker, hospital.pki) as auditor:
        bundle = bundle_for_broker(hospital, broker.port, tmp_path)
        (tmp_path / "box").mkdir()
        # the hospital's own signed copy of the model (the box will trust only its key)
        make_package(tmp_path / "packages", "1.0.0", key=hospital.model_key)
        box = Box(tmp_path / "box", {"telemetry": {"retry_min_seconds": 0.2,
                                                   "retry_max_seconds": 1.0},
                                     "models": {"dir": str(tmp_path / "packages")}})
        done = clinibox("provision", str(bundle), "--config", str(box.config))
        assert done.returncode == 0, done.stderr
        assert f"provisioned {CLINIC}/{DEVICE} from enrolment bundle" in done.stdout
        config = load(box.config)
        assert (config.telemetry.clinic, config.mqtt.port) == (CLINIC, broker.port)
        assert config.dicom.port == box.port  # what was there is kept
        # the hospital's files lie beside the config, readable by the config folder's group
        key_file = Path(config.mqtt.key_file)
        assert key_file.parent.parent == box.config.with_suffix(".enrolment")
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o640
        try:
            box.start()
            status, checks = selftest(box)
            assert status == 0, checks
            assert list(checks) == ["model package", "golden cases", "DICOM echo", "disk space",
                                    "clock", "broker", "device identity", "hospital key",
                                    "signing keys"]
            assert config.models.trust_demo_key is False
            assert {name: s for name, (s, _) in checks.items()} == dict.fromkeys(checks, "PASS")
            assert f"{broker.host}:{broker.port} accepted CONNECT" in checks["broker"][1]
            assert checks["DICOM echo"][1].startswith("answered by clinibox (")
            assert f"on CLINIBOX@127.0.0.1:{box.port}: C-ECHO from " in checks["DICOM echo"][1]
            table = clinibox("selftest", "--config", str(box.config))
            assert table.returncode == 0
            assert table.stdout.splitlines()[-1] == "selftest passed (9 pass)"

            # the running box connected with the bundle's certificate: its "online" status
            status_topic = f"clinibox/{CLINIC}/{DEVICE}/status"
            wait_for(lambda: any(m.topic == status_topic for m in auditor.messages()), 30,
                     "the box's status message")
            seen = next(m for m in auditor.messages() if m.topic == status_topic)

            broker.stop()
            status, checks = selftest(box)
            assert status == 1
            assert checks["broker"] == ("FAIL", f"connection refused by {broker.host}:"
                                                f"{broker.port}: no broker listens there")
            assert [n for n, (s, _) in checks.items() if s != "PASS"] == ["broker"]
        finally:
            box.stop()
    status, checks = selftest(box)
    assert status == 1
    assert checks["DICOM echo"] == (
        "FAIL", f"nothing answers on port {box.port} — is clinibox running?")

    # the hospital enrols the printed code; then the box's own message is accepted
    code = enrol_line(done.stdout)
    central = tmp_path / "central.toml"
    central.write_text(to_toml({"database": {"url": str(tmp_path / "central.db")}}))
    enrolled = clinibox("central", "enrol-code", code, "--config", str(central))
    assert enrolled.returncode == 0, enrolled.stderr
    key_id = load_identity_key_id(config)
    assert enrolled.stdout.strip() == f"enrolled {CLINIC}/{DEVICE} with key {key_id}"
    store = Store(str(tmp_path / "central.db"))
    try:
        receiver = Receiver(CentralConfig(), store, load_x25519_private(hospital.hospital_pem))
        assert receiver.handle(seen.topic, seen.payload) == "stored"
    finally:
        store.close()


def load_identity_key_id(config: Config) -> str:
    """The key id of the box's device key (read, not made)."""
    from clinibox_common.contracts.signing import key_id, load_private_key

    return key_id(load_private_key(config.device_key_path).public_key())


def test_the_qr_code_carries_the_enrolment_code(hospital: Hospital, tmp_path: Path) -> None:
    config = tmp_path / "box.toml"
    png = tmp_path / "enrol.png"
    done = clinibox("provision", str(hospital.bundle), "--config", str(config), "--qr-png",
                    str(png), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    code = enrol_line(done.stdout)
    assert code.startswith(f"CBX1:{CLINIC.upper()}:{DEVICE.upper()}:")
    assert zbar(png) == code
    assert decode_terminal_qr(done.stdout, tmp_path) == code
    key_id = load_identity_key_id(load(config))
    assert f"  key id  {key_id}" in done.stdout
    # the state folder was the relative default: the config now names the one used here
    assert load(config).state_dir == (tmp_path / "var").resolve()
    assert "(now written in the config)" in done.stdout


def _bad_bundle(hospital: Hospital, tmp_path: Path, kind: str) -> Path:
    good = read_bundle(hospital.bundle)
    if kind == "foreign-ca":
        other = CertificateAuthority.create(tmp_path / "other", name="another CA")
        cert, key = issue_client_certificate(other.cert, other.key, CLINIC, DEVICE)
    else:
        cert, key = issue_client_certificate(hospital.pki.authority.cert,
                                             hospital.pki.authority.key, CLINIC, DEVICE, days=1,
                                             now=dt.datetime.now(dt.timezone.utc)
                                             - dt.timedelta(days=5))
    path = tmp_path / f"{kind}.bundle"
    path.write_text(EnrolmentBundle.to_json(replace(good, client_cert=cert, client_key=key)))
    return path


@pytest.mark.parametrize(("kind", "message"), [
    ("foreign-ca", "tls.client_cert: not signed by the bundle's CA (tls.ca_cert): issued by "
                   "'CN=another CA'"),
    ("expired", "tls.client_cert: the certificate expired on"),
], ids=["foreign-ca", "expired"])
def test_a_bundle_with_a_bad_certificate_writes_nothing(hospital: Hospital, tmp_path: Path,
                                                        kind: str, message: str) -> None:
    bad = _bad_bundle(hospital, tmp_path, kind)
    state = tmp_path / "state"
    config = tmp_path / "box.toml"
    original = to_toml({"storage": {"state_dir": str(state)}, "dicom": {"port": 11999}})
    config.write_text(original)
    done = clinibox("provision", str(bad), "--config", str(config))
    assert done.returncode == 1
    assert f"clinibox provision: bundle {bad} refused: {message}" in done.stderr
    assert "nothing was changed" in done.stderr
    assert config.read_text() == original
    assert not state.exists() and not (tmp_path / "box.toml.bak").exists()
    assert not (tmp_path / "box.enrolment").exists()


def test_provision_needs_to_know_which_config_to_write(hospital: Hospital,
                                                       tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CLINIBOX_CONFIG"}
    done = clinibox("provision", str(hospital.bundle), env=env)
    assert done.returncode == 2
    assert "name it with --config PATH (or set CLINIBOX_CONFIG)" in done.stderr
    done = clinibox("provision", str(hospital.bundle),
                    env={**env, "CLINIBOX_CONFIG": str(tmp_path / "env.toml")}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert load(tmp_path / "env.toml").telemetry.device == DEVICE


def test_reprovisioning_keeps_the_identity_unless_asked(hospital: Hospital,
                                                        tmp_path: Path) -> None:
    config = tmp_path / "box.toml"
    config.write_text(to_toml({"storage": {"state_dir": str(tmp_path / "state")},
                               "dicom": {"port": 11998, "ae_title": "CLINIC-A-BOX"}}))
    first = provision(hospital.bundle, config)
    assert first.identity_created and not first.state_dir_pinned
    again = provision(hospital.bundle, config)  # e.g. a renewed bundle: the key stays
    assert not again.identity_created and again.identity.key_id == first.identity.key_id
    assert again.identity.downlink_key_text == first.identity.downlink_key_text
    assert again.config.telemetry.hospital_signing_key == ""  # --no-downlink: no downlink
    enrolment = tmp_path / "box.enrolment"
    assert [p.name for p in enrolment.iterdir()] == [first.bundle.fingerprint]
    (first.folder / "client-cert.pem").unlink()  # a damaged enrolment is written anew
    provision(hospital.bundle, config)
    assert (first.folder / "client-cert.pem").read_text() == first.bundle.client_cert

    other = tmp_path / "box-2.bundle"
    write_bundle(make_bundle(
        ca_cert_path=hospital.pki.ca_cert, ca_key_path=hospital.ca_key, clinic=CLINIC,
        device="box-2", broker_host="127.0.0.1", broker_port=8883,
        hospital_key_path=hospital.hospital_pub,
        signing_key_paths=[hospital.model_key.with_suffix(".pub")],
        hospital_signing_key_path=hospital.model_key.with_suffix(".pub")), other)
    before = config.read_text()
    with pytest.raises(ProvisionError, match=r"already provisioned as clinic-a/box-1.*--force"):
        provision(other, config)
    assert config.read_text() == before
    moved = provision(other, config, force=True)
    assert moved.identity.key_id == first.identity.key_id  # enrol the new code, same key
    assert (moved.config.telemetry.device, moved.config.dicom.ae_title) == ("box-2",
                                                                           "CLINIC-A-BOX")
    assert [p.name for p in enrolment.iterdir()] == [moved.bundle.fingerprint]
    assert (tmp_path / "box.toml.bak").read_text() == before
    signer = moved.folder / "hospital-signing.pub"
    assert moved.config.telemetry.hospital_signing_key == str(signer)
    assert signer.read_text() == hospital.model_key.with_suffix(".pub").read_text()

    fresh = provision(other, config, new_identity=True)
    assert fresh.identity_created and fresh.identity.key_id != first.identity.key_id
    keys = tmp_path / "state" / "keys"
    assert len(list(keys.glob("device.pem.retired-*"))) == 1
    assert len(list(keys.glob("device-downlink.key.retired-*"))) == 1
    assert fresh.identity.downlink_key_text != first.identity.downlink_key_text
    assert fresh.identity.secret == first.identity.secret  # earlier study references still work


def lay_out_as_installed(root: Path) -> Path:
    """``root`` as scripts/install.sh makes a box: the service user and its folders from
    systemd/sysusers.d and tmpfiles.d, the config root:clinibox 0640; the config's path."""
    (root / "etc").mkdir(mode=0o755)
    subprocess.run(["systemd-sysusers", f"--root={root}",
                    str(REPO / "systemd" / "sysusers.d" / "clinibox.conf")],
                   check=True, capture_output=True)
    subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create",
                    str(REPO / "systemd" / "tmpfiles.d" / "clinibox.conf")],
                   check=True, capture_output=True)
    config = root / "etc" / "clinibox" / "clinibox.toml"
    config.write_text(to_toml({"storage": {"state_dir": str(root / "var" / "lib" / "clinibox")},
                               "models": {"trusted_keys": [], "trust_demo_key": False}}))
    os.chown(config, 0, service_ids(root)[1])
    config.chmod(0o640)
    return config


def test_root_provisions_an_installed_box_for_its_service_user(hospital: Hospital) -> None:
    # sudo clinibox provision BUNDLE --config /etc/clinibox/clinibox.toml (the test is root)
    with box_root() as root:
        config = lay_out_as_installed(root)
        ids = service_ids(root)
        installed = config.read_text()
        # as the service user it refuses before writing anything: the config is root's
        stick = root / "media" / "usb"
        stick.mkdir(parents=True)
        shutil.copy(hospital.bundle, stick / "box-1.bundle")
        os.chown(stick / "box-1.bundle", *ids)
        said = as_service_user(ids, lambda: str(provision(stick / "box-1.bundle", config)))
        assert said == (f"ProvisionError: cannot write {config.parent}: provisioning writes the "
                        "box's config and the hospital's files there; on an installed box run "
                        "it as root: sudo clinibox provision BUNDLE --config " + str(config))
        assert config.read_text() == installed
        assert sorted(p.name for p in config.parent.iterdir()) == ["clinibox.toml"]
        assert not (root / "var" / "lib" / "clinibox" / "keys").exists()

        done = clinibox("provision", str(hospital.bundle), "--config", str(config))
        assert done.returncode == 0, done.stderr
        assert_provisioned_for_the_service(config, ids)
        assert "Then restart the services (systemctl restart clinibox clinibox-web)" in \
            done.stdout
        # again (a renewed bundle): the key made by the service user is read, not made anew
        again = clinibox("provision", str(hospital.bundle), "--config", str(config))
        assert again.returncode == 0, again.stderr
        assert f"(kept: {root}/var/lib/clinibox/keys/device.pem)" in again.stdout
        assert_provisioned_for_the_service(config, ids)


def test_a_failure_names_what_was_written(hospital: Hospital, tmp_path: Path) -> None:
    state, config = tmp_path / "state", tmp_path / "box.toml"
    original = to_toml({"storage": {"state_dir": str(state)}})
    config.write_text(original)
    keys = state / "keys"
    state.mkdir()
    keys.write_text("a file where the keys folder belongs")  # the identity cannot be made
    done = clinibox("provision", str(hospital.bundle), "--config", str(config))
    assert done.returncode == 1
    assert f"clinibox provision: cannot make the device identity under {keys}:" in done.stderr
    assert done.stderr.rstrip().endswith("nothing was changed")
    assert config.read_text() == original
    assert not (tmp_path / "box.enrolment").exists()  # the hospital's new files: removed again

    keys.unlink()
    # the old config's copy cannot be made: its name is a folder holding a folder of its name
    (tmp_path / "box.toml.bak" / "box.toml").mkdir(parents=True)
    done = clinibox("provision", str(hospital.bundle), "--config", str(config))
    assert done.returncode == 1
    assert "clinibox provision: cannot write: [Errno 21] Is a directory" in done.stderr
    assert "nothing was changed" not in done.stderr
    assert (f"the config was not changed; written before the failure: made {keys}/device.pem; "
            f"made {keys}/study-ref.secret; made {keys}/device-downlink.key\n") in done.stderr
    assert config.read_text() == original
    assert not (tmp_path / "box.enrolment").exists()
    made = (keys / "device.pem").read_bytes()

    shutil.rmtree(tmp_path / "box.toml.bak")
    done = clinibox("provision", str(hospital.bundle), "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert f"(kept: {keys}/device.pem)" in done.stdout  # the key made before is the box's
    assert (keys / "device.pem").read_bytes() == made
    assert (tmp_path / "box.toml.bak").read_text() == original


def test_the_dicom_echo_speaks_tls_when_the_box_does(box_factory, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    box = box_factory(dicom={"tls_enabled": True, "tls_cert": str(pki.server_cert),
                             "tls_key": str(pki.server_key),
                             "allowed_calling_aets": ["CT-ROOM-1"]}, start=False)
    box.start(wait=False)
    config = load(box.config)

    def answered() -> bool:
        box._alive()
        return "nothing answers" not in check_dicom_echo(config, 3).detail

    wait_for(answered, 120, "the TLS listener")
    check = check_dicom_echo(config, 3)
    assert check.status == "PASS", check
    assert check.detail.startswith("answered by clinibox (")
    assert f") on CLINIBOX@127.0.0.1:{box.port}: C-ECHO from CT-ROOM-1 in " in check.detail
    assert check.detail.endswith(" over TLS")


def test_the_broker_check_names_each_failure(hospital: Hospital, tmp_path: Path) -> None:
    with Broker(tmp_path / "broker", hospital.pki) as broker:
        bundle = bundle_for_broker(hospital, broker.port, tmp_path)
        config = provision(bundle, tmp_path / "box.toml").config
        where = f"{broker.host}:{broker.port}"
        assert check_broker(config, 3).status == "PASS"

        other = CertificateAuthority.create(tmp_path / "other", name="another CA")
        cert, key = other.issue_client(f"{CLINIC}/{DEVICE}", tmp_path / "other")
        foreign = dataclasses.replace(config.mqtt, cert_file=str(cert), key_file=str(key))
        check = check_broker(dataclasses.replace(config, mqtt=foreign), 3)
        assert check == Check("broker", "FAIL", f"TLS handshake refused by {where}: the broker "
                                                "does not accept this box's client certificate "
                                                "(tlsv1 alert unknown ca)")

        wrong_ca = dataclasses.replace(config.mqtt, ca_file=str(other.cert_path))
        check = check_broker(dataclasses.replace(config, mqtt=wrong_ca), 3)
        assert check == Check("broker", "FAIL", f"TLS handshake with {where} failed: the "
                                                "broker's certificate is not accepted "
                                                "(self-signed certificate in certificate chain)")

    with socket.socket() as silent:  # accepts the connection, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        mute = dataclasses.replace(config.mqtt, port=port)
        check = check_broker(dataclasses.replace(config, mqtt=mute), 1)
    assert check == Check("broker", "FAIL", f"timeout: no answer from 127.0.0.1:{port} "
                                            "within 1 s")
    assert check_broker(dataclasses.replace(config, mqtt=MqttConfig()), 1) == Check(
        "broker", "SKIP", "no broker configured ([mqtt] host is empty)")


def test_a_clock_sent_back_by_a_dead_battery_fails(tmp_path: Path) -> None:
    config = from_dict({"storage": {"state_dir": str(tmp_path / "state")}})
    config.state_dir.mkdir()
    conn = db.open_database(config.database_path)
    db.record_event(conn, "INFO", "test", "the box worked today")
    conn.close()
    today = dt.datetime.now(dt.timezone.utc)
    check = check_clock(config, None, now=today)
    assert check.status == "PASS" and "(the newest event in the box's log)" in check.detail
    for wrong in (dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc),
                  dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc),
                  today - dt.timedelta(days=2)):
        check = check_clock(config, None, now=wrong)
        assert check.status == "FAIL", wrong
        assert ("(the newest event in the box's log, less a day): set the clock (dead RTC "
                "battery?)") in check.detail
    check = check_clock(config, None, now=dt.datetime(2199, 1, 1, tzinfo=dt.timezone.utc))
    assert check.status == "FAIL" and "absurdly far after" in check.detail


def test_too_little_disk_fails(tmp_path: Path) -> None:
    config = from_dict({"storage": {"state_dir": str(tmp_path), "min_free_mb": 10_000_000}})
    check = check_disk(config)
    assert check.status == "FAIL" and check.detail.endswith(
        "new images are refused below min_free_mb")
    config.storage.min_free_mb = 0
    config.retention.max_disk_used_pct = 100
    assert check_disk(config).status == "PASS"
