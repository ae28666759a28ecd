"""The hospital's time reaches a box whose clock is behind, through real Mosquitto (TLS, the
clinibox ACL): the receiver reads the box's status three days behind, the downlink publisher
sends the hospital's signed time, the box's client receives it on its own topic, the box's
downlink code keeps it and hands it over, and the clock's helper checks it again and moves
the clock forward. The test machine's clock is not set: the helper's ``set_clock`` records
where it would have set it (tests/integration/test_systemd_units.py shows its unit may)."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.config import from_dict
from central.downlink_publisher import DownlinkPublisher
from central.receiver import Receiver
from central.store import Store
from clinibox_common.contracts import downlink
from firmware_app.ops.hospital_clock import take_hospital_time
from firmware_app.settings.box import Config
from firmware_app.settings.storage import StorageConfig
from firmware_app.storage import db, event_codes
from firmware_app.telemetry.downlink import KEPT, DownlinkReceiver
from firmware_app.telemetry.identity import load_identity
from tests.mqtt_broker import (
    Broker,
    MessageLog,
    MqttPki,
    broker_fixture,  # noqa: F401 (fixture)
    client,
    close,
    mqtt_pki_fixture,  # noqa: F401 (fixture)
    receiver_settings,
    subscribe_and_wait,
)
from tests.telemetry_payloads import Box, hospital_keys, public_pem, status_payload

pytestmark = pytest.mark.integration

BEHIND = 3 * 86_400.0


def test_a_box_three_days_behind_gets_the_hospitals_time_over_the_broker(
        tmp_path, broker: Broker, mqtt_pki: MqttPki):
    hospital_private, hospital_public = hospital_keys()
    signing = Ed25519PrivateKey.generate()
    signing_pub = tmp_path / "hospital-signing.pub"
    signing_pub.write_text(public_pem(signing))
    settings = receiver_settings(broker, mqtt_pki, tmp_path / "central.db",
                                 tmp_path / "unused.pem", "central-test")
    settings["keys"]["hospital_signing_key"] = str(tmp_path / "hospital-signing.pem")
    config = from_dict(settings)
    store = Store(config.database.url)

    # the box: its own keys and database, its clock three days behind the hospital's
    box_config = Config(storage=StorageConfig(state_dir=str(tmp_path / "box")))
    box_config.telemetry.clinic, box_config.telemetry.device = "clinic-a", "box-1"
    box_config.telemetry.hospital_signing_key = str(signing_pub)
    identity = load_identity(box_config)
    conn = db.connect(box_config.database_path)
    db.initialise(conn)
    box_clock = [time.time() - BEHIND]
    sender = Box("clinic-a", "box-1", hospital_public)
    store.enrol("clinic-a", "box-1", sender.pem)
    status = status_payload("online", created_at=int(box_clock[0]), takes_time=1,
                            downlink_key=identity.downlink_key_text, downlink_seq=0)
    assert Receiver(config, store, hospital_private).handle(
        *sender.envelope("status", status)) == "stored"

    pki = mqtt_pki.device("clinic-a", "box-1")
    messages = MessageLog()
    mqtt_box = client(broker, pki.cert, pki.key, messages=messages)
    assert not any(r.is_failure for r in subscribe_and_wait(
        mqtt_box, downlink.topic("clinic-a", "box-1")))
    publisher = DownlinkPublisher(config, Store(config.database.url).database, signing,
                                  poll_seconds=0.2)
    stop = threading.Event()
    worker = threading.Thread(target=publisher.serve, args=(stop,), daemon=True)
    worker.start()
    try:
        [seen] = messages.wait_for(1, timeout=20)
    finally:
        stop.set()
        worker.join(timeout=10)
        close(mqtt_box)

    receiver = DownlinkReceiver(box_config, identity, signing.public_key())
    receiver.clock = lambda: box_clock[0]
    try:
        assert receiver.handle(seen.payload) == KEPT
    finally:
        receiver.close()

    def set_clock(moment: dt.datetime) -> None:
        box_clock[0] = moment.timestamp()

    before = box_clock[0]
    outcome = take_hospital_time(box_config, set_clock=set_clock, now=lambda: box_clock[0])
    assert outcome.refused == []
    assert outcome.moved_s == pytest.approx(BEHIND, abs=120)
    assert abs(box_clock[0] - time.time()) < 120  # the box's clock is the hospital's now
    assert box_clock[0] > before
    codes = [row[0] for row in conn.execute("SELECT code FROM events ORDER BY id")]
    conn.close()
    assert codes[-1] == event_codes.code(event_codes.CLOCK_MOVED, round(outcome.moved_s / 60))
    [sent] = store.downlinks("clinic-a", "box-1")
    assert (sent["kind"], sent["attempts"]) == ("clock", 1)
    store.close()
