"""One message cannot stop the receiver (issue 43): refusals are recorded with their bytes,
a fault of ours becomes ``internal-error`` and is acknowledged, only the database holds a
message back."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

import pytest

import central.receiver as receiver_module
import central.store as store_module
from central.config import CentralConfig
from central.receiver import INTERNAL_ERROR, OUTCOMES, MqttService, Receiver
from central.store import StoreError
from clinibox_common.contracts.topics import topic
from tests.central_fixtures import (  # noqa: F401 (pytest fixtures)
    central_box,
    central_database,
    central_hospital,
    central_store,
)
from tests.envelope_forge import deep_header, long_seq_header, seal_raw
from tests.telemetry_payloads import Box

ALERT_TOPIC = topic("clinic-a", "box-1", "alert")


def _receiver(store, hospital, **settings) -> Receiver:
    config = CentralConfig()
    for name, value in settings.items():
        setattr(config.receiver, name, value)
    return Receiver(config, store, hospital[0])


def _poison(box: Box) -> list[bytes]:
    return [seal_raw(deep_header(), b"{}", box.hospital, box.key),
            seal_raw(long_seq_header("clinic-a", "box-1", "alert"), b"{}", box.hospital, box.key)]


def test_the_two_findings_are_refused_kept_and_the_next_alert_is_stored(store, hospital, box):
    receiver = _receiver(store, hospital)
    poison = _poison(box)
    assert [receiver.handle(ALERT_TOPIC, p, received_at=50.0) for p in poison] == [
        "malformed", "malformed"]
    assert receiver.handle(*box.envelope("alert")) == "stored"
    assert [r["reason"] for r in store.rejections()] == ["malformed", "malformed"]
    letters = store.dead_letters()
    assert [(d["reason"], d["size"], d["clinic"], d["device"], d["received_at"])
            for d in letters] == [("malformed", len(p), "clinic-a", "box-1", 50.0)
                                  for p in reversed(poison)]
    assert store.dead_letter_bytes(letters[-1]["id"]) == poison[0]
    assert store.dead_letter_totals() == (2, sum(len(p) for p in poison))
    assert receiver.counts == {"malformed": 2, "stored": 1}


def test_dead_letters_can_be_turned_off(store, hospital, box):
    receiver = _receiver(store, hospital, keep_dead_letters=False)
    assert receiver.handle(ALERT_TOPIC, _poison(box)[0]) == "malformed"
    assert store.counts()["rejections"] == 1 and store.dead_letters() == []


def test_dead_letters_are_bounded_by_dropping_the_oldest(store, hospital):
    receiver = _receiver(store, hospital, dead_letter_max_mb=1)
    sizes = [250_000, 250_000, 250_000, 250_000, 100_000]
    for index, size in enumerate(sizes):
        assert receiver.handle("not/a/topic", bytes([index]) * size) == "bad-topic"
    kept = store.dead_letters()
    assert [store.dead_letter_bytes(d["id"])[:1] for d in kept] == [b"\x04", b"\x03", b"\x02",
                                                                     b"\x01"]
    assert store.dead_letter_totals() == (4, 850_000)  # under 1 MiB
    assert store.counts()["rejections"] == 5  # the refusals themselves are all kept


def test_a_message_larger_than_an_envelope_is_refused_by_its_size(store, hospital, box):
    """Found by the red team: 16, 64 and 200 MB messages were parsed, kept whole as dead
    letters (280 MiB against a 64 MB bound) and took the receiver to 871 MiB. Now one over
    MAX_ENVELOPE_BYTES is refused as too-big before anything reads it, its first 4 KiB kept,
    whether it comes through the link or straight to handle."""
    receiver = _receiver(store, hospital)
    service, client = _service(receiver), _Client()
    huge = b"{" * (16 << 20)
    _deliver(service, client, _Message(huge, mid=11))
    assert receiver.handle(ALERT_TOPIC, huge) == receiver_module.TOO_BIG
    assert client.acked == [11] and service.intake.waiting() == 0
    assert receiver.counts == {receiver_module.TOO_BIG: 2}
    rows = store.rejections()
    assert [(r["reason"], r["size_bytes"]) for r in rows] == [("too-big", 16 << 20)] * 2
    assert store.dead_letter_totals() == (2, 2 * receiver_module.TOO_BIG_KEPT)
    assert receiver.handle(*box.envelope("alert")) == "stored"  # and the receiver goes on


def test_a_fault_of_ours_is_an_internal_error_kept_and_the_receiver_goes_on(
        store, hospital, box, monkeypatch, caplog):
    receiver = _receiver(store, hospital)

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug in the schema check")

    monkeypatch.setattr(receiver_module, "check_message", broken)
    topic_name, envelope = box.envelope("alert")
    assert receiver.handle(topic_name, envelope) == INTERNAL_ERROR
    assert INTERNAL_ERROR in OUTCOMES
    [rejection] = store.rejections()
    assert (rejection["reason"], rejection["claimed_device"]) == (INTERNAL_ERROR, "box-1")
    [letter] = store.dead_letters()
    assert store.dead_letter_bytes(letter["id"]) == envelope
    assert "a bug in the schema check" in caplog.text
    monkeypatch.undo()
    assert receiver.handle(topic_name, envelope) == "stored"  # the bytes were kept intact
    assert receiver.counts == {INTERNAL_ERROR: 1, "stored": 1}


def test_only_a_database_fault_comes_out_of_handle(store, hospital, box, tmp_path):
    receiver = _receiver(store, hospital)
    conn = sqlite3.connect(tmp_path / "central.db")
    conn.execute("DROP TABLE rejections")
    conn.close()
    with pytest.raises(StoreError):
        receiver.handle(ALERT_TOPIC, _poison(box)[0])
    assert receiver.counts == {}


# -- the broker link's callback, with a stand-in client and message -----------------------

@dataclass
class _Client:
    acked: list[int] = field(default_factory=list)

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)


@dataclass
class _Message:
    payload: bytes
    mid: int = 7
    qos: int = 1
    topic: str = ALERT_TOPIC


def _service(receiver: Receiver) -> MqttService:
    return MqttService(receiver.config, receiver)


def _deliver(service: MqttService, client: _Client, message: _Message) -> None:
    """What serve() does with one message: take it in (held, acknowledged), handle it."""
    service._on_message(client, None, message)
    service.take_in(client)
    service.handle_held()


def test_the_link_acknowledges_a_message_that_broke_handle(store, hospital, box, monkeypatch):
    receiver = _receiver(store, hospital)
    service, client = _service(receiver), _Client()

    def broken(*_args, **_kwargs):
        raise KeyError("not caught by handle")

    monkeypatch.setattr(receiver, "handle", broken)
    _deliver(service, client, _Message(b"poison"))
    assert client.acked == [7] and service._store_failed is False
    assert service.intake.waiting() == 0
    assert [r["reason"] for r in store.rejections()] == [INTERNAL_ERROR]
    assert store.dead_letter_bytes(store.dead_letters()[0]["id"]) == b"poison"


def test_the_link_keeps_a_message_it_cannot_even_record(store, hospital, box, monkeypatch):
    receiver = _receiver(store, hospital)
    service, client = _service(receiver), _Client()

    def broken(*_args, **_kwargs):
        raise KeyError("not caught by handle")

    monkeypatch.setattr(receiver, "handle", broken)
    monkeypatch.setattr(store, "reject", broken)
    _deliver(service, client, _Message(b"poison"))
    # held (acknowledged: the intake has it), not dropped: handled again on the next pass
    assert client.acked == [7] and service._store_failed is True
    assert service.intake.waiting() == 1
    monkeypatch.undo()
    service._store_failed = False
    assert service.handle_held() is False and service.intake.waiting() == 0
    assert [r["reason"] for r in store.rejections()] == ["malformed"]


def test_the_link_leaves_with_the_broker_what_it_cannot_hold(store, hospital, box,
                                                             monkeypatch):
    receiver = _receiver(store, hospital)
    service, client = _service(receiver), _Client()

    def broken(*_args, **_kwargs):
        raise StoreError("database gone")

    monkeypatch.setattr(service.intake, "put", broken)
    _deliver(service, client, _Message(b"poison"))
    assert client.acked == [] and service._store_failed is True


def test_the_link_acknowledges_a_malformed_message(store, hospital, box):
    receiver = _receiver(store, hospital)
    service, client = _service(receiver), _Client()
    _deliver(service, client, _Message(_poison(box)[1], mid=9))
    assert client.acked == [9] and receiver.counts == {"malformed": 1}


def test_one_topic_keeps_a_bounded_number_of_dead_letters_an_hour(store, hospital, box):
    """Found by the red team: a box publishing empty payloads kept a dead letter of 0 bytes
    each, never pruned, and every refusal read the whole table. Now a topic keeps at most
    DEAD_LETTERS_PER_TOPIC_HOUR an hour (every refusal is still recorded), and each row
    counts against the bound."""
    receiver = _receiver(store, hospital)
    flood = store_module.DEAD_LETTERS_PER_TOPIC_HOUR + 30
    for _ in range(flood):
        assert receiver.handle(ALERT_TOPIC, b"") == "malformed"
    assert store.dead_letter_totals() == (store_module.DEAD_LETTERS_PER_TOPIC_HOUR, 0)
    assert store.counts()["rejections"] == flood
    other = topic("clinic-b", "box-2", "alert")
    assert receiver.handle(other, b"") == "malformed"  # another box's letters are kept
    assert store.dead_letter_totals()[0] == store_module.DEAD_LETTERS_PER_TOPIC_HOUR + 1


def test_empty_dead_letters_count_against_the_bound(store):
    """Found by the red team: the bound was enforced every 64 letters, so 16 MB letters kept
    280 MiB against 64 MB. Now every letter kept prunes to the bound in its transaction."""
    for index in range(40):
        store.reject("malformed", f"t/{index}", None, 0, at=float(index), dead_letter=b"",
                     dead_letter_max_bytes=10 * store_module.DEAD_LETTER_ROW_BYTES)
        kept, size = store.dead_letter_totals()
        assert size == 0 and kept == min(index + 1, 10)
