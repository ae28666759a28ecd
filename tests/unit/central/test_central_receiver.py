"""Receiver.handle: every outcome, with envelopes sealed by the real code and real keys."""

from __future__ import annotations

import logging
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.config import CentralConfig
from central.receiver import OUTCOMES, Receiver
from central.store import Store
from clinibox_common.contracts.envelope import Header, seal
from clinibox_common.contracts.topics import topic
from tests.central_fixtures import (  # noqa: F401 (pytest fixtures)
    central_box,
    central_database,
    central_hospital,
    central_store,
)
from tests.telemetry_payloads import Box, alert_payload, hospital_keys, summary_payload


@pytest.fixture
def receiver(store, hospital):
    return Receiver(CentralConfig(), store, hospital[0])


def _only_rejection(store: Store) -> dict:
    [rejection] = store.rejections()
    return rejection


@pytest.mark.smoke
def test_a_good_alert_is_stored_with_its_alert_row(receiver, store, box):
    topic_name, envelope = box.envelope("alert", alert_payload(score=0.99))
    received_at = float(int(time.time()))  # the receiver's clock (not before created_at)
    assert receiver.handle(topic_name, envelope, received_at=received_at) == "stored"
    [alert] = store.alerts(waiting=True)
    assert (alert["clinic"], alert["device"], alert["seq"], alert["score"]) == (
        "clinic-a", "box-1", 1, 0.99)
    assert alert["received_at"] == received_at
    assert store.rejections() == []


def test_every_kind_is_stored(receiver, store, box):
    for kind in ("alert", "summary", "status"):
        assert receiver.handle(*box.envelope(kind)) == "stored"
    assert store.counts()["messages"] == 3
    assert receiver.counts == {"stored": 3}


def test_the_same_envelope_twice_is_a_duplicate(receiver, store, box):
    topic_name, envelope = box.envelope("alert")
    assert receiver.handle(topic_name, envelope) == "stored"
    assert receiver.handle(topic_name, envelope) == "duplicate"
    assert store.counts() == {"devices": 1, "messages": 1, "alerts": 1, "rejections": 0}


def test_a_resealed_message_with_a_used_seq_is_a_duplicate(receiver, store, box):
    assert receiver.handle(*box.envelope("alert", seq=5)) == "stored"
    assert receiver.handle(*box.envelope("alert", alert_payload(score=0.5), seq=5)) == "duplicate"
    assert store.alerts()[0]["score"] == 0.93


@pytest.mark.parametrize("index", [-1, -40, -100])
def test_a_tampered_byte_is_a_bad_signature(receiver, store, box, index, caplog):
    topic_name, envelope = box.envelope("alert")
    tampered = bytearray(envelope)
    tampered[index] ^= 0x01
    with caplog.at_level(logging.WARNING, logger="clinibox.central"):
        assert receiver.handle(topic_name, bytes(tampered)) == "bad-signature"
    rejection = _only_rejection(store)
    assert (rejection["reason"], rejection["claimed_device"]) == ("bad-signature", "box-1")
    assert rejection["size_bytes"] == len(envelope)
    assert "bad-signature" in caplog.text
    assert store.counts()["messages"] == 0


def test_a_message_signed_by_another_key_is_a_bad_signature(receiver, store, box, hospital):
    impostor = Box("clinic-a", "box-1", hospital[1], key=Ed25519PrivateKey.generate())
    assert receiver.handle(*impostor.envelope("alert")) == "bad-signature"
    assert store.counts()["messages"] == 0


def test_a_message_sealed_to_another_hospital_is_undecryptable(receiver, store, box):
    other = Box("clinic-a", "box-1", hospital_keys()[1], key=box.key)
    assert receiver.handle(*other.envelope("summary")) == "undecryptable"
    assert _only_rejection(store)["reason"] == "undecryptable"


def test_an_unknown_device_is_refused(receiver, store, hospital):
    stranger = Box("clinic-a", "box-9", hospital[1])
    assert receiver.handle(*stranger.envelope("alert")) == "unknown-device"
    assert _only_rejection(store)["claimed_device"] == "box-9"


def test_a_revoked_device_is_refused(receiver, store, box):
    assert receiver.handle(*box.envelope("status")) == "stored"
    store.revoke("clinic-a", "box-1")
    assert receiver.handle(*box.envelope("status")) == "revoked"
    assert store.counts()["messages"] == 1


def test_a_topic_of_another_clinic_is_a_mismatch(receiver, store, box):
    _, envelope = box.envelope("alert")
    assert receiver.handle(topic("clinic-b", "box-1", "alert"), envelope) == "topic-mismatch"
    _, envelope = box.envelope("alert")
    assert receiver.handle(topic("clinic-a", "box-1", "summary"), envelope) == "topic-mismatch"
    assert store.counts()["messages"] == 0


def test_the_same_device_name_in_another_clinic_is_another_box(receiver, store, box, hospital):
    """clinic-b's box-1 is not clinic-a's: neither can speak for the other."""
    moved = Box("clinic-b", "box-1", hospital[1], key=box.key)
    assert receiver.handle(*moved.envelope("alert")) == "unknown-device"
    rejection = _only_rejection(store)
    assert (rejection["claimed_clinic"], rejection["claimed_device"]) == ("clinic-b", "box-1")
    other = Box("clinic-b", "box-1", hospital[1])
    store.enrol(other.clinic, other.device, other.pem)
    assert receiver.handle(*moved.envelope("alert", seq=5)) == "bad-signature"
    assert receiver.handle(*box.envelope("alert", seq=5)) == "stored"
    assert receiver.handle(*other.envelope("alert", seq=5)) == "stored"  # same seq, other box
    assert store.alert_counts() == {("clinic-a", "box-1"): (1, 1), ("clinic-b", "box-1"): (1, 1)}


def test_a_payload_off_the_schema_is_refused(receiver, store, box, hospital):
    payload = dict(alert_payload(), patient_name="DOE^JANE")
    assert receiver.handle(*box.envelope("alert", payload)) == "schema"
    wrong_kind = summary_payload()
    assert receiver.handle(*box.envelope("alert", wrong_kind)) == "schema"
    out_of_range = alert_payload()
    out_of_range["score"] = 1.5
    assert receiver.handle(*box.envelope("alert", out_of_range)) == "schema"
    assert [r["reason"] for r in store.rejections()] == ["schema"] * 3
    assert store.counts()["messages"] == 0


@pytest.mark.parametrize("name", ["clinibox/clinic-a/box-1", "other/clinic-a/box-1/alert",
                                  "clinibox/clinic-a/box-1/images", ""])
def test_a_foreign_topic_is_refused(receiver, store, box, name):
    _, envelope = box.envelope("alert")
    assert receiver.handle(name, envelope) == "bad-topic"
    assert _only_rejection(store)["claimed_device"] is None


@pytest.mark.parametrize("payload", [b"", b"CBX1" + b"\x00" * 200, b"hello" * 100,
                                     b"CBX1\xff\xff" + b"\x00" * 200])
def test_garbage_is_malformed(receiver, store, box, payload):
    assert receiver.handle(topic("clinic-a", "box-1", "alert"), payload) == "malformed"
    assert _only_rejection(store)["size_bytes"] == len(payload)


def test_a_payload_that_is_not_an_object_is_malformed(receiver, store, box, hospital):
    # seal() serialises anything JSON can carry; the hospital wants an object
    envelope = seal(Header("clinic-a", "box-1", "alert", 1), [1, 2, 3],  # type: ignore[arg-type]
                    hospital[1], box.key)
    assert receiver.handle(topic("clinic-a", "box-1", "alert"), envelope) == "malformed"


def test_the_receiver_keeps_going_after_refusals(receiver, store, box):
    topic_name, good = box.envelope("alert")
    tampered = good[:-1] + bytes([good[-1] ^ 1])
    outcomes = [receiver.handle("nope", b"x"), receiver.handle(topic_name, tampered),
                receiver.handle(topic_name, good)]
    assert outcomes == ["bad-topic", "bad-signature", "stored"]
    assert set(receiver.counts) <= set(OUTCOMES)
    assert store.counts()["rejections"] == 2


def test_a_sequence_number_beyond_64_bits_is_malformed_not_a_crash(receiver, store, box):
    topic_name, envelope = box.envelope("alert", seq=2**63)
    assert receiver.handle(topic_name, envelope) == "malformed"
    assert receiver.handle(*box.envelope("alert", seq=2**63 - 1)) == "stored"


def test_a_message_older_than_the_limit_is_refused_and_counted(receiver, store, box):
    """A replay of captured traffic (or a box whose clock went wrong) is not stored."""
    limit = receiver.config.receiver.max_message_age_days
    assert limit == 90.0
    now = time.time()
    fresh = box.envelope("alert", alert_payload(created_at=int(now - (limit - 1) * 86400)))
    stale = box.envelope("alert", alert_payload(created_at=int(now - (limit + 1) * 86400)))
    assert receiver.handle(*fresh, received_at=now) == "stored"
    assert receiver.handle(*stale, received_at=now) == "too-old"
    rejection = _only_rejection(store)
    assert rejection["reason"] == "too-old" and rejection["claimed_device"] == "box-1"
    assert receiver.counts["too-old"] == 1 and "too-old" in OUTCOMES
    assert store.counts()["rejections"] == 1


def test_what_a_box_sent_before_its_enrolment_is_received_when_it_is_enrolled(store, hospital):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from clinibox_common.contracts.downlink import key_text
    from tests.telemetry_payloads import status_payload

    key = key_text(X25519PrivateKey.generate().public_key())
    early = Box("clinic-a", "box-7", hospital[1])
    receiver = Receiver(CentralConfig(), store, hospital[0])
    sent = [early.envelope("status", status_payload(downlink_key=key, downlink_seq=0)),
            early.envelope("alert")]
    before = float(int(time.time())) - 60
    assert [receiver.handle(t, e, received_at=before) for t, e in sent] == [
        "unknown-device", "unknown-device"]
    assert receiver.receive_waiting("clinic-a", "box-7") == {}  # still not enrolled: kept
    assert len(store.waiting_letters("clinic-a", "box-7")) == 2
    store.enrol("clinic-a", "box-7", early.pem)
    assert receiver.receive_waiting("clinic-a", "box-7") == {"stored": 2}
    assert store.waiting_letters("clinic-a", "box-7") == []
    [alert] = store.alerts()
    assert alert["received_at"] == before  # when it reached the broker, not now
    assert store.box_state("clinic-a", "box-7")["downlink_key"] == key
    assert receiver.receive_waiting("clinic-a", "box-7") == {}  # nothing twice
