"""A verdict goes down: the publisher seals a review's downlink and the box's client opens it.

Real Mosquitto with the clinibox ACL (the receiver writes ``clinibox-downlink/#``, a box
reads only its own downlink topic).
"""

from __future__ import annotations

import threading

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.config import from_dict
from central.downlink_publisher import DownlinkPublisher
from central.store import Store
from clinibox_common.contracts import downlink
from clinibox_common.contracts.envelope import Header
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
from tests.telemetry_payloads import alert_payload, public_pem, status_payload

pytestmark = pytest.mark.integration


def test_a_review_reaches_its_box_and_opens(tmp_path, broker: Broker, mqtt_pki: MqttPki):
    box_key = serialization.load_pem_private_key(downlink.new_box_key(), password=None)
    signing = Ed25519PrivateKey.generate()
    database = tmp_path / "db" / "central.db"
    config = from_dict(receiver_settings(broker, mqtt_pki, database, tmp_path / "unused.pem",
                                         "central-test"))
    store = Store(config.database.url)
    store.enrol("clinic-a", "box-1", public_pem(Ed25519PrivateKey.generate()))
    store.store(Header("clinic-a", "box-1", "alert", 3), alert_payload(study_ref="c" * 32),
                1.0)
    [alert] = store.alerts()
    store.review_alert(alert["id"], "refer", "urgent, please", "dr-li")

    identity = mqtt_pki.device("clinic-a", "box-1")
    messages = MessageLog()
    box = client(broker, identity.cert, identity.key, messages=messages)
    assert not any(r.is_failure for r in subscribe_and_wait(
        box, downlink.topic("clinic-a", "box-1")))

    publisher = DownlinkPublisher(config, Store(config.database.url).database, signing,
                                  poll_seconds=0.2)
    stop = threading.Event()
    worker = threading.Thread(target=publisher.serve, args=(stop,), daemon=True)
    worker.start()
    try:
        assert publisher.connected.wait(10)
        assert publisher.published == 0  # no downlink key reported yet: it waits
        store.store(Header("clinic-a", "box-1", "status", 4),
                    status_payload(downlink_key=downlink.key_text(box_key.public_key()),
                                   downlink_seq=0), 2.0)
        [seen] = messages.wait_for(1, timeout=10)
    finally:
        stop.set()
        worker.join(timeout=10)
        close(box)
    header, payload = downlink.open_downlink(
        seen.payload, clinic="clinic-a", device="box-1", hospital_key=signing.public_key(),
        box_key=box_key)
    assert (header.seq, header.kind) == (1, "review")
    assert (payload["verdict"], payload["note"], payload["study_ref"], payload["alert_seq"]) == (
        "refer", "urgent, please", "c" * 32, 3)
    [sent] = store.downlinks("clinic-a", "box-1")
    assert sent["sent_at"] is not None and sent["attempts"] == 1
