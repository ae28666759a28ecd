"""Box → Mosquitto (TLS, client certificates, ACL) → hospital receiver, all real processes.

One scenario runs once for the module (it is the expensive part) and the
tests below each check one promise about it:

1. the broker is stopped; canary DICOM studies (every identifying attribute a
   unique canary, lesion phantoms) reach a running box over storescu;
2. the box is killed (SIGKILL) while offline, restarted (still offline), sent
   a second burst and killed again;
3. the broker comes back; once the receiver has re-subscribed, the box is
   started and drains its outbox.

Then: every alert arrived exactly once, alerts before what waited with them,
nothing identifying anywhere the broker or the hospital saw, and the report
shows the device. Tamper, replay, wrong key and unknown device are refused by
the running receiver.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clinibox_common.contracts.envelope import Header, load_x25519_public, read_header, seal
from tests.canary import CanarySet, write_canary_studies
from tests.integration.conftest import REPO, Box, send_as_modality, to_toml, wait_for
from tests.mqtt_broker import (
    Auditor,
    Broker,
    MqttPki,
    client,
    close,
    make_mqtt_pki,
    publish_and_wait,
    receiver_settings,
)

pytestmark = pytest.mark.integration

CLINIC, DEVICE = "clinic-a", "box-1"
RECEIVER_ID = "central-e2e"


def clinibox(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the `clinibox` command line as a technician would."""
    result = subprocess.run([sys.executable, "-m", "clinibox", *args],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"clinibox {' '.join(args)} failed:\n{result.stderr}")
    return result


@dataclass
class Hospital:
    """The broker, the receiver process and its configuration."""

    root: Path
    pki: MqttPki
    broker: Broker
    config: Path
    database: Path
    hospital_pub: Path
    log: Path
    process: subprocess.Popen | None = None

    def start_receiver(self) -> None:
        """`clinibox central serve` as a separate process."""
        handle = open(self.log, "a")  # noqa: SIM115 - owned by the child process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "clinibox", "central", "serve", "--config",
             str(self.config)], stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)

    def stop_receiver(self) -> None:
        """SIGTERM the receiver."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Query the hospital's SQLite database."""
        conn = sqlite3.connect(self.database, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def subscribed_since(self, offset: int) -> bool:
        """Whether the receiver has subscribed since byte ``offset`` of the broker log."""
        with self.broker.log_path.open("rb") as log:
            log.seek(offset)
            return f"Received SUBSCRIBE from {RECEIVER_ID}".encode() in log.read()


@pytest.fixture(scope="module")
def hospital(tmp_path_factory) -> Iterator[Hospital]:
    """A broker and a receiver with its keys; the box's certificate is in the PKI."""
    root = tmp_path_factory.mktemp("hospital")
    pki = make_mqtt_pki(root / "pki", [(CLINIC, DEVICE), ("clinic-b", "box-9")])
    broker = Broker(root / "broker", pki).start()
    clinibox("keys", "generate", "--kind", "hospital", "--out", str(root / "hospital"))
    database = root / "central.db"
    config = root / "central.toml"
    config.write_text(to_toml(receiver_settings(broker, pki, database, root / "hospital.pem",
                                                  RECEIVER_ID)))
    place = Hospital(root, pki, broker, config, database, root / "hospital.pub",
                     root / "receiver.log")
    place.start_receiver()
    offset = 0
    wait_for(lambda: place.subscribed_since(offset), 60, "the receiver to subscribe")
    yield place
    place.stop_receiver()
    broker.stop()


def make_box(hospital: Hospital, root: Path) -> Box:
    """A box configured for the hospital's broker, its key enrolled at the hospital."""
    identity = hospital.pki.device(CLINIC, DEVICE)
    root.mkdir(parents=True, exist_ok=True)
    box = Box(root, {
        "mqtt": {"host": "127.0.0.1", "port": hospital.broker.port,
                 "ca_file": str(hospital.pki.ca_cert), "cert_file": str(identity.cert),
                 "key_file": str(identity.key)},
        "telemetry": {"clinic": CLINIC, "device": DEVICE,
                      "hospital_key": str(hospital.hospital_pub), "summary_seconds": 3.0,
                      "heartbeat_seconds": 2.0, "retry_min_seconds": 0.2,
                      "retry_max_seconds": 1.0},
    })
    public = root / "device.pub"
    box.cli("identity", "--out", str(public))
    clinibox("central", "enrol", "--config", str(hospital.config), "--clinic", CLINIC,
             "--device", DEVICE, "--key", str(public))
    return box


def box_outbox(box: Box) -> list[dict]:
    """The box's audit listing."""
    return box.cli_json("outbox")["messages"]


@dataclass
class Scenario:
    """What the offline/crash/reconnect scenario left behind."""

    box: Box
    canaries: CanarySet
    alerts_at_reconnect: list[int]
    others_at_reconnect: list[int]
    auditor_seen: list


@pytest.fixture(scope="module")
def scenario(hospital: Hospital, tmp_path_factory) -> Iterator[Scenario]:
    """Run the store-and-forward scenario once."""
    root = tmp_path_factory.mktemp("box")
    canaries = write_canary_studies(root / "canaries", 8, lesion=True)
    auditor = Auditor(hospital.broker, hospital.pki)
    box = make_box(hospital, root / "box")
    box.start()
    hospital.broker.stop()  # the link goes down for the whole burst

    def alerts_waiting(at_least: int) -> bool:
        return sum(m["kind"] == "alert" and m["state"] == "pending"
                   for m in box_outbox(box)) >= at_least

    ok, _ = send_as_modality(box.port, canaries.files[:4])
    assert ok == 4
    box.wait_idle(4)
    wait_for(lambda: alerts_waiting(1), 30, "alerts queued while offline")
    box.kill9()
    box.start()  # restarted while the broker is still down
    ok, _ = send_as_modality(box.port, canaries.files[4:])
    assert ok == 4
    box.wait_idle(8)
    time.sleep(3.5)  # a summary period passes offline
    box.kill9()
    waiting = [m for m in box_outbox(box) if m["state"] == "pending"]
    alerts = [m["seq"] for m in waiting if m["kind"] == "alert"]
    others = [m["seq"] for m in waiting if m["kind"] != "alert"]
    assert alerts and any(m["kind"] == "summary" for m in waiting)

    offset = hospital.broker.log_path.stat().st_size
    hospital.broker.start()
    wait_for(lambda: hospital.subscribed_since(offset), 90, "the receiver to re-subscribe")
    box.start()
    wait_for(lambda: not any(m["state"] == "pending" and m["kind"] != "status"
                             for m in box_outbox(box)), 90, "the box to drain its outbox")
    wait_for(lambda: len(hospital.rows("SELECT 1 FROM alerts")) >= len(alerts), 30,
             "the receiver to store the alerts")
    time.sleep(1.0)
    yield Scenario(box, canaries, alerts, others, auditor.messages())
    auditor.close()
    box.stop()


def test_every_alert_arrives_exactly_once(scenario: Scenario, hospital: Hospital):
    box_alerts = sorted(m["seq"] for m in box_outbox(scenario.box) if m["kind"] == "alert")
    alerted = scenario.box.db_rows("SELECT COUNT(*) FROM alerted_studies")[0][0]
    assert len(box_alerts) == alerted >= 1
    stored = hospital.rows("SELECT seq FROM alerts WHERE device=? ORDER BY seq", (DEVICE,))
    assert [r[0] for r in stored] == box_alerts  # none lost, none twice
    assert all(m["state"] == "sent" for m in box_outbox(scenario.box) if m["kind"] == "alert")
    # the box's identity on the alerts is the signed one, with its model and study reference
    payloads = hospital.rows("SELECT payload FROM messages WHERE kind='alert'")
    refs = {json.loads(p[0])["study_ref"] for p in payloads}
    assert len(refs) == len(box_alerts)
    # each carries the top image's assessment and its study's lesions, through the gate twice
    for text in (p[0] for p in payloads):
        alert = json.loads(text)
        assert alert["assessment"] == "finding" and alert["lesions"], alert
        assert {lesion["label"] for lesion in alert["lesions"]} == {alert["finding"]}
    # the clinic can go from an alert's reference back to its study; it is the box's own
    found = scenario.box.cli("study", sorted(refs)[0]).stdout
    assert "1.2.826.0.1.3680043.9.7777.41." in found and "ALERT" in found
    missing = scenario.box.cli("study", "0" * 32, check=False)
    assert missing.returncode == 1 and "no study" in missing.stderr


def test_alerts_arrive_before_what_waited_with_them(scenario: Scenario, hospital: Hospital):
    arrival = {seq: at for seq, at in hospital.rows(
        "SELECT seq, received_at FROM messages WHERE device=?", (DEVICE,))}
    last_alert = max(arrival[s] for s in scenario.alerts_at_reconnect)
    waited = [s for s in scenario.others_at_reconnect if s in arrival]
    assert waited, "the summaries that waited offline must arrive too"
    assert all(arrival[s] >= last_alert for s in waited)
    # and among the alerts, oldest first
    ordered = sorted(scenario.alerts_at_reconnect, key=lambda s: (arrival[s], s))
    assert ordered == sorted(scenario.alerts_at_reconnect)


def test_nothing_identifying_reaches_the_broker_or_the_hospital(scenario: Scenario,
                                                                 hospital: Hospital):
    seen = scenario.auditor_seen
    assert seen, "the auditor must have captured the box's messages"
    captured = b"".join(m.topic.encode() + b"\0" + m.payload for m in seen)
    assert scenario.canaries.found_in(captured) == []
    # the broker's own persistence file, the hospital's database and what it prints
    stored = b"".join(p.read_bytes() for p in hospital.root.glob("central.db*"))
    persisted = hospital.broker.db_path.read_bytes() if hospital.broker.db_path.exists() else b""
    report = clinibox("central", "report", "--config", str(hospital.config), "--json").stdout
    listed = clinibox("central", "alerts", "--config", str(hospital.config), "--json").stdout
    audit = json.dumps(box_outbox(scenario.box))
    for where, data in {"hospital database": stored, "broker persistence": persisted,
                        "report": report.encode(), "alerts": listed.encode(),
                        "box audit": audit.encode()}.items():
        assert scenario.canaries.found_in(data) == [], where
    assert b"1.2.826.0.1.3680043.9.7777" not in stored + captured
    # what the hospital decrypted is exactly what the box's audit shows, field for field
    decrypted = {seq: json.loads(p) for seq, p in hospital.rows(
        "SELECT seq, payload FROM messages WHERE device=?", (DEVICE,))}
    audited = {m["seq"]: m["payload"] for m in box_outbox(scenario.box)}
    assert decrypted and all(audited[seq] == payload for seq, payload in decrypted.items())


def test_report_shows_the_device_with_its_alerts_waiting(scenario: Scenario, hospital: Hospital):
    rows = json.loads(clinibox("central", "report", "--config", str(hospital.config),
                               "--json").stdout)
    device = next(r for r in rows if r["device"] == DEVICE)
    assert device["clinic"] == CLINIC
    assert device["alerts_waiting"] == len(scenario.alerts_at_reconnect)
    assert device["state"] == "online"
    table = clinibox("central", "report", "--config", str(hospital.config)).stdout
    assert DEVICE in table and CLINIC in table


def _rejections(hospital: Hospital) -> list[str]:
    return [r[0] for r in hospital.rows("SELECT reason FROM rejections ORDER BY id")]


def test_tamper_replay_wrong_key_and_unknown_device_are_refused(scenario: Scenario,
                                                                hospital: Hospital):
    captured = [m for m in scenario.auditor_seen if m.topic.endswith("/alert")]
    original = captured[0]
    alerts_before = hospital.rows("SELECT COUNT(*) FROM messages WHERE kind='alert'")[0][0]
    before = len(_rejections(hospital))
    own = hospital.pki.device(CLINIC, DEVICE)
    other = hospital.pki.device("clinic-b", "box-9")
    hospital_key = load_x25519_public(hospital.hospital_pub)
    header = read_header(original.payload)
    payload = json.loads(hospital.rows("SELECT payload FROM messages WHERE device=? AND seq=?",
                                       (DEVICE, header.seq))[0][0])
    forged_seq = Header(CLINIC, DEVICE, "alert", header.seq + 10_000)
    attacker = client(hospital.broker, own.cert, own.key)
    stranger = client(hospital.broker, other.cert, other.key)
    try:
        tampered = bytearray(original.payload)
        tampered[len(tampered) // 2] ^= 0x40
        assert not publish_and_wait(attacker, original.topic, bytes(tampered)).is_failure
        assert not publish_and_wait(attacker, original.topic, original.payload).is_failure
        wrong_key = seal(forged_seq, payload, hospital_key, Ed25519PrivateKey.generate())
        assert not publish_and_wait(attacker, original.topic, wrong_key).is_failure
        unknown = seal(Header("clinic-b", "box-9", "alert", 1), payload, hospital_key,
                       Ed25519PrivateKey.generate())
        assert not publish_and_wait(stranger, "clinibox/clinic-b/box-9/alert",
                                    unknown).is_failure
    finally:
        close(attacker)
        close(stranger)
    wait_for(lambda: len(_rejections(hospital)) >= before + 3, 30, "three rejections")
    # the receiver takes each device's messages in turn (no box delays another), so the
    # stranger's may be refused between the attacker's two: the same refusals, in any order
    reasons = _rejections(hospital)[before:]
    assert sorted(reasons) == ["bad-signature", "bad-signature", "unknown-device"]
    # the replayed original was recognised as already stored: nothing new
    assert hospital.rows("SELECT COUNT(*) FROM messages WHERE kind='alert'")[0][0] == alerts_before
    assert hospital.rows("SELECT COUNT(*) FROM messages WHERE seq=?",
                         (forged_seq.seq,))[0][0] == 0
