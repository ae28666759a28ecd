"""Issue 43 with real parts: Mosquitto (TLS, client certificates, the clinibox ACL) and
``clinibox central serve`` as a separate process, shared by the tests below.

1. An enrolled box, on its own certificate and topic, publishes an envelope whose signed
   header nests 5,000 levels, then one with a 5,000-digit sequence number, then a valid
   alert. The alert is stored; both poison messages are refused as malformed, their bytes
   kept as dead letters, and acknowledged: after a restart of the receiver the broker does
   not hand them over again.
2. The box's real audit trail (SQLite, the service's own heartbeat code) is rewritten by
   its service user the way the hash chain cannot see: the next heartbeat arrives at the
   hospital as ``rewritten``, the report warns, and the witness file the hospital writes
   makes ``clinibox audit --verify --witness`` on the box say broken.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.store import Store
from clinibox_common.contracts.envelope import generate_x25519_pair, load_x25519_public
from clinibox_common.contracts.topics import topic
from firmware_app.storage import db
from tests.audit_trail_attack import fill_trail, queue_heartbeat, rewrite_without
from tests.envelope_forge import deep_header, long_seq_header, seal_raw
from tests.integration.conftest import REPO, to_toml, wait_for
from tests.mqtt_broker import (
    Broker,
    MqttPki,
    client,
    close,
    make_mqtt_pki,
    publish_and_wait,
    receiver_settings,
)
from tests.telemetry_payloads import Box, public_pem

pytestmark = pytest.mark.integration

CLINIC, DEVICE, RECEIVER_ID = "clinic-a", "box-1", "central-poison"


def _serve(config: Path, log: Path) -> subprocess.Popen:
    with log.open("a") as handle:
        return subprocess.Popen([sys.executable, "-m", "clinibox", "central", "serve",
                                 "--config", str(config)], stdout=handle,
                                stderr=subprocess.STDOUT, cwd=REPO)


def _stop(process: subprocess.Popen) -> int:
    process.terminate()
    return process.wait(timeout=30)


def _clinibox(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clinibox", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


@dataclass
class Hospital:
    """The broker, the running receiver and one enrolled box's keys."""

    root: Path
    pki: MqttPki
    broker: Broker
    box: Box
    config: Path
    database: Path
    log: Path
    receiver: subprocess.Popen

    def subscribed_since(self, offset: int) -> bool:
        """Whether the receiver has subscribed since byte ``offset`` of the broker log."""
        with self.broker.log_path.open("rb") as log:
            log.seek(offset)
            return f"Received SUBSCRIBE from {RECEIVER_ID}".encode() in log.read()

    def rows(self, sql: str) -> list[tuple]:
        """Query the hospital's SQLite database."""
        conn = sqlite3.connect(self.database, timeout=30)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def publish(self, *messages: tuple[str, bytes]) -> None:
        """Publish (topic, bytes) as the box, on its own certificate, QoS 1."""
        identity = self.pki.device(CLINIC, DEVICE)
        sender = client(self.broker, identity.cert, identity.key, client_id=DEVICE)
        try:
            for name, data in messages:
                assert not publish_and_wait(sender, name, data).is_failure
        finally:
            close(sender)


@pytest.fixture(scope="module")
def hospital(tmp_path_factory) -> Iterator[Hospital]:
    """Mosquitto and ``clinibox central serve`` with box clinic-a/box-1 enrolled."""
    root = tmp_path_factory.mktemp("hospital")
    pki = make_mqtt_pki(root / "pki", [(CLINIC, DEVICE)])
    database = root / "central.db"
    generate_x25519_pair(root / "hospital.pem", root / "hospital.pub")
    box = Box(CLINIC, DEVICE, load_x25519_public(root / "hospital.pub"),
              key=Ed25519PrivateKey.generate())
    store = Store(f"sqlite:///{database}")
    store.enrol(CLINIC, DEVICE, public_pem(box.key))
    store.close()
    with Broker(root / "broker", pki) as broker:
        config = root / "central.toml"
        config.write_text(to_toml(receiver_settings(broker, pki, database, root / "hospital.pem",
                                                      RECEIVER_ID)))
        log = root / "receiver.log"
        place = Hospital(root, pki, broker, box, config, database, log, _serve(config, log))
        try:
            wait_for(lambda: place.subscribed_since(0), 60, "the receiver to subscribe")
            yield place
        finally:
            if place.receiver.poll() is None:
                _stop(place.receiver)


def test_poison_messages_are_refused_kept_and_acknowledged(hospital):
    box = hospital.box
    poison = [seal_raw(deep_header(5000), b"{}", box.hospital, box.key),
              seal_raw(long_seq_header(CLINIC, DEVICE, "alert", 5000), b"{}", box.hospital,
                       box.key)]
    hospital.publish(*[(topic(CLINIC, DEVICE, "alert"), data) for data in poison],
                     box.envelope("alert"))
    wait_for(lambda: hospital.rows("SELECT seq FROM alerts") == [(1,)], 30,
             "the valid alert to be stored")
    assert hospital.receiver.poll() is None, hospital.log.read_text()  # it stayed up
    assert hospital.rows("SELECT reason, claimed_device FROM rejections ORDER BY id") == [
        ("malformed", DEVICE), ("malformed", DEVICE)]
    assert hospital.rows("SELECT reason, size, payload FROM dead_letters ORDER BY id") == [
        ("malformed", len(data), data) for data in poison]
    assert "Traceback" not in hospital.log.read_text()

    # acknowledged: a restarted receiver is not handed them again
    assert _stop(hospital.receiver) == 0
    offset = hospital.broker.log_path.stat().st_size
    hospital.receiver = _serve(hospital.config, hospital.log)
    wait_for(lambda: hospital.subscribed_since(offset), 60, "the receiver to return")
    hospital.publish(box.envelope("alert"))
    wait_for(lambda: len(hospital.rows("SELECT seq FROM alerts")) == 2, 30, "the next alert")
    assert len(hospital.rows("SELECT id FROM rejections")) == 2
    assert hospital.receiver.poll() is None


def test_a_rewritten_trail_shows_at_the_hospital_and_against_its_witness(hospital, tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    conn = db.connect(state / "clinibox.db")
    db.initialise(conn)
    box_config = tmp_path / "box.toml"
    box_config.write_text(f'[storage]\nstate_dir = "{state.as_posix()}"\n'
                          f'[telemetry]\nclinic = "{CLINIC}"\ndevice = "{DEVICE}"\n')

    def beat() -> dict:
        payload = queue_heartbeat(conn)
        del payload["seq"]  # the outbox's number, not part of the message
        hospital.publish(hospital.box.envelope("status", payload))
        return payload["audit"]

    fill_trail(conn, 4)
    first = beat()
    fill_trail(conn, 4, start=2_000.0)
    second = beat()  # row 8, since row 4
    fill_trail(conn, 3, start=3_000.0)
    rewrite_without(conn, 3)  # rows 4 to 11 become 3 to 10, every hash made again
    third = beat()
    conn.close()
    assert (first["row"], second["row"], second["since_row"], third["since_row"]) == (4, 8, 4, 8)

    def verdicts() -> list[tuple]:
        return hospital.rows("SELECT head_row, verdict FROM audit_heads ORDER BY seq")

    wait_for(lambda: len(verdicts()) == 3, 30, "three witnessed heads")
    assert verdicts() == [(4, "first"), (8, "extends"), (10, "rewritten")]
    report = _clinibox("central", "report", "--config", str(hospital.config))
    assert "audit trail rewritten" in report.stdout, report.stdout + report.stderr

    witness = tmp_path / "heads.json"
    written = _clinibox("central", "audit-heads", "--config", str(hospital.config), "--device",
                        f"{CLINIC}/{DEVICE}", "--witness-file", str(witness))
    assert written.returncode == 0, written.stderr
    heads = json.loads(witness.read_text())["heads"]
    assert [(h["row"], h["at"]) for h in heads] == [(4, 1003), (8, 2003), (10, 3002)]
    alone = _clinibox("audit", "--verify", "--config", str(box_config))
    assert alone.returncode == 0  # the chain itself was made again: it checks
    checked = _clinibox("audit", "--verify", "--witness", str(witness), "--config",
                        str(box_config))
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "broken at row 4: the hospital saw another hash" in checked.stdout, checked.stdout
