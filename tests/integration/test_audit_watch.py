"""Issue 56, the audit trail the hospital watches, with real parts: Mosquitto (TLS, client
certificates, the clinibox ACL), ``clinibox central serve`` as a separate process, two boxes'
real audit trails (SQLite, the service's own heartbeat code) and the console's fleet page in
headless Chromium.

* box-1's service user deletes the front of its trail — rows the hospital witnessed, written
  days ago and kept 30 days — and moves the anchor past them without an ``audit_pruned``
  row. ``clinibox audit --verify`` on the box still passes; its next heartbeat raises
  ``pruned_early`` at the hospital by itself, shown on the fleet page in Chinese and English,
  and again at the heartbeat after.
* box-2's retention pass prunes its rows older than 30 days properly (an ``audit_pruned``
  row): its heartbeats extend the trail and the fleet page shows no alarm.
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

from central.store import Store
from clinibox_common.contracts.envelope import generate_x25519_pair, load_x25519_public
from firmware_app.storage import audit, db
from tests.audit_trail_attack import delete_front, fill_trail, queue_heartbeat
from tests.console_browser import admin_console, read_in_chinese, read_in_english
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

CLINIC, DELETED, PRUNED, RECEIVER_ID = "clinic-a", "box-1", "box-2", "central-audit-watch"
DAY = 86400.0
KEEP_DAYS = 30.0


@dataclass
class Hospital:
    """The broker, the running receiver and the two boxes' keys."""

    root: Path
    pki: MqttPki
    broker: Broker
    boxes: dict[str, Box]
    config: Path
    database: Path
    log: Path
    receiver: subprocess.Popen

    def publish(self, device: str, payload: dict) -> None:
        """Publish a status as ``device``, on its own certificate, QoS 1."""
        identity = self.pki.device(CLINIC, device)
        sender = client(self.broker, identity.cert, identity.key, client_id=device)
        try:
            assert not publish_and_wait(sender, *self.boxes[device].envelope(
                "status", payload)).is_failure
        finally:
            close(sender)

    def verdicts(self, device: str) -> list[tuple[int, str]]:
        """(row, verdict) of each head the hospital witnessed from ``device``, in order."""
        conn = sqlite3.connect(self.database, timeout=30)
        try:
            return conn.execute("SELECT head_row, verdict FROM audit_heads WHERE device = ?"
                                " ORDER BY seq", (device,)).fetchall()
        finally:
            conn.close()


def _clinibox(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clinibox", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.fixture(scope="module")
def hospital(tmp_path_factory) -> Iterator[Hospital]:
    """Mosquitto and ``clinibox central serve`` with box-1 and box-2 enrolled."""
    root = tmp_path_factory.mktemp("hospital")
    pki = make_mqtt_pki(root / "pki", [(CLINIC, DELETED), (CLINIC, PRUNED)])
    database = root / "central.db"
    generate_x25519_pair(root / "hospital.pem", root / "hospital.pub")
    public = load_x25519_public(root / "hospital.pub")
    boxes = {d: Box(CLINIC, d, public, key=Ed25519PrivateKey.generate())
             for d in (DELETED, PRUNED)}
    store = Store(f"sqlite:///{database}")
    for device, box in boxes.items():
        store.enrol(CLINIC, device, public_pem(box.key))
    store.close()
    with Broker(root / "broker", pki) as broker:
        config = root / "central.toml"
        config.write_text(to_toml(receiver_settings(broker, pki, database, root / "hospital.pem",
                                                      RECEIVER_ID)))
        log = root / "receiver.log"
        with log.open("a") as handle:
            receiver = subprocess.Popen(
                [sys.executable, "-m", "clinibox", "central", "serve", "--config",
                 str(config)], stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
        place = Hospital(root, pki, broker, boxes, config, database, log, receiver)
        try:
            wait_for(lambda: f"Received SUBSCRIBE from {RECEIVER_ID}".encode()
                     in broker.log_path.read_bytes(), 60, "the receiver to subscribe")
            yield place
        finally:
            receiver.terminate()
            receiver.wait(timeout=30)


class Trail:
    """One box's state folder, database and config, and its heartbeats to the hospital."""

    def __init__(self, hospital: Hospital, device: str, folder: Path) -> None:
        self.hospital, self.device = hospital, device
        folder.mkdir()
        state = folder / "state"
        state.mkdir(mode=0o750)
        self.conn = db.connect(state / "clinibox.db")
        db.initialise(self.conn)
        self.config = folder / "box.toml"
        self.config.write_text(f'[storage]\nstate_dir = "{state.as_posix()}"\n'
                               f'[audit]\nkeep_days = {KEEP_DAYS}\n'
                               f'[telemetry]\nclinic = "{CLINIC}"\ndevice = "{device}"\n')

    def beat(self) -> dict:
        """Queue a heartbeat as the service does and publish it; its ``audit`` field."""
        payload = queue_heartbeat(self.conn, keep_days=KEEP_DAYS)
        del payload["seq"]  # the outbox's number, not part of the message
        self.hospital.publish(self.device, payload)
        return payload["audit"]

    def verify(self) -> subprocess.CompletedProcess:
        """``clinibox audit --verify`` on the box, alone."""
        return _clinibox("audit", "--verify", "--config", str(self.config))


def _audit_cells(driver) -> dict[str, str]:
    """Each box's audit cell on the fleet page: the verdict code programs read, and the
    words of its head (the line under it says how long ago)."""
    from selenium.webdriver.common.by import By

    cells = {}
    for device in (DELETED, PRUNED):
        cell = driver.find_element(
            By.CSS_SELECTOR, f'tr[data-box="{CLINIC}/{device}"] td.audit-head')
        cells[device] = f"{cell.get_attribute('data-verdict')}|{cell.text.splitlines()[0]}"
    return cells


def test_rows_deleted_before_keep_days_raise_an_alarm_at_the_hospital_by_themselves(
        hospital, tmp_path):
    now = time.time()
    deleted = Trail(hospital, DELETED, tmp_path / "box-1")
    fill_trail(deleted.conn, 4, start=now - 10 * DAY)  # rows 1-4, ten days old
    deleted.beat()
    fill_trail(deleted.conn, 4, start=now - 5 * DAY)  # rows 5-8
    deleted.beat()
    pruned = Trail(hospital, PRUNED, tmp_path / "box-2")
    fill_trail(pruned.conn, 4, start=now - 40 * DAY)  # rows 1-4, past keep_days
    pruned.beat()
    fill_trail(pruned.conn, 4, start=now - 5 * DAY)
    pruned.beat()
    wait_for(lambda: len(hospital.verdicts(DELETED)) == len(hospital.verdicts(PRUNED)) == 2,
             30, "two witnessed heads of each box")

    delete_front(deleted.conn, 6)  # rows 1-6 gone, witnessed row 4 among them
    assert audit.prune(pruned.conn, KEEP_DAYS) == 4  # rows 1-4, and an audit_pruned row
    assert [a for (a,) in pruned.conn.execute("SELECT action FROM audit")][-1] == \
        "audit_pruned"
    for trail in (deleted, pruned):  # the box alone cannot see it (and notes its check)
        alone = trail.verify()
        assert alone.returncode == 0, alone.stdout + alone.stderr
    fill_trail(deleted.conn, 1, start=now)
    head = deleted.beat()
    assert (head["since_row"], head["anchor_row"], head["keep_days"]) == (8, 6, KEEP_DAYS)
    assert head["row"] > 8
    kept = pruned.beat()
    assert (kept["since_row"], kept["anchor_row"]) == (8, 4)
    wait_for(lambda: len(hospital.verdicts(DELETED)) == len(hospital.verdicts(PRUNED)) == 3,
             30, "the heartbeats after")
    assert hospital.verdicts(DELETED) == [(4, "first"), (8, "extends"),
                                          (head["row"], "pruned_early")]
    assert hospital.verdicts(PRUNED) == [(4, "first"), (8, "extends"), (kept["row"], "extends")]
    deleted.beat()  # the next heartbeat says it again: the alarm stays
    wait_for(lambda: len(hospital.verdicts(DELETED)) == 4, 30, "one more heartbeat")
    assert hospital.verdicts(DELETED)[-1] == (head["row"], "pruned_early")

    # what programs read back: codes
    listed = _clinibox("central", "audit-heads", "--json", "--config", str(hospital.config))
    alarms = json.loads(listed.stdout)["alarms"]
    assert {(a["device"], a["verdict"]) for a in alarms} == {(DELETED, "pruned_early")}

    # the fleet page, in Chinese (Chromium) and in English
    with admin_console(hospital.database, tmp_path) as app:
        text, cells = read_in_chinese(app, tmp_path, "/fleet", "zh-fleet-audit-pruned-early",
                                      _audit_cells)
        page = read_in_english(app, "/fleet")
    assert cells[DELETED] == \
        f"pruned_early|第 {head['row']} 条，审计记录在保留期限内被删除", cells
    assert cells[PRUNED].startswith("extends|"), cells
    assert "pruned_early" not in text and "keep_days" not in text
    assert f"row {head['row']}, rows the hospital saw were deleted before keep_days ended" \
        in page
    assert page.count('data-verdict="pruned_early"') == 1
    deleted.conn.close()
    pruned.conn.close()
