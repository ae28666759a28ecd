"""The receiver's intake (issue 56): what the link takes in is held in the database and
acknowledged, then handled in turns across the boxes, so one box's flood takes one box's
share and another box's message is handled within a turn of arriving."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from central import intake
from central.config import CentralConfig
from central.receiver import MqttService, Receiver
from tests.central_fixtures import (  # noqa: F401 (pytest fixtures)
    central_box,
    central_database,
    central_hospital,
    central_store,
)
from tests.telemetry_payloads import Box, alert_payload


@dataclass
class _Client:
    acked: list[int] = field(default_factory=list)

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)


@dataclass
class _Message:
    topic: str
    payload: bytes
    mid: int
    qos: int = 1


def _stored(store, device: str) -> int:
    return sum(1 for a in store.alerts() if a["device"] == device)


@pytest.mark.slow
def test_a_quiet_box_is_handled_within_a_turn_of_a_flood(store, hospital, box):
    """Found by the red team: the receiver handled messages first in, first out, so a quiet
    clinic's alert sent after a flood of 5,000 waited 25 s. Now the flood is held and the
    quiet box's alert is handled in the first turn, and nothing of the flood is lost."""
    quiet = Box("clinic-b", "box-9", hospital[1])
    store.enrol(quiet.clinic, quiet.device, quiet.pem)
    service, client = MqttService(CentralConfig(), Receiver(CentralConfig(), store,
                                                            hospital[0])), _Client()
    flood = 60
    for mid in range(1, flood + 1):
        service._on_message(client, None, _Message(*box.envelope("alert", alert_payload()),
                                                   mid=mid))
    service._on_message(client, None, _Message(*quiet.envelope("alert", alert_payload()),
                                               mid=flood + 1))
    assert service.take_in(client) == flood + 1
    assert client.acked == list(range(1, flood + 2))  # held, so acknowledged
    assert intake.held(store.database) == {("clinic-a", "box-1"): flood,
                                          ("clinic-b", "box-9"): 1}
    handled = 0
    while _stored(store, "box-9") == 0:
        assert service.handle_held(budget=0.0) is True  # one message a call
        handled += 1
    # the first turn: the flood's oldest, then the quiet box's
    assert handled <= 2, service.receiver.counts
    assert service.handle_held(budget=60.0) is False
    assert _stored(store, "box-1") == flood and service.intake.waiting() == 0
    assert service.receiver.counts == {"stored": flood + 1}


def test_a_turn_takes_a_few_of_each_box_in_order(store):
    held = intake.Intake(store.database, "receiver-1")
    other = intake.Intake(store.database, "receiver-2")
    held.put([("clinibox/clinic-a/box-1/alert", bytes([i]), float(i)) for i in range(10)])
    held.put([("clinibox/clinic-b/box-2/alert", b"b", 20.0), ("not a topic", b"?", 21.0)])
    other.put([("clinibox/clinic-c/box-3/alert", b"c", 22.0)])
    turn = held.next_turn(per_box=3, limit=100)
    assert [(h.topic.split("/")[1] if "/" in h.topic else h.topic, h.payload) for h in turn] == [
        ("clinic-a", b"\x00"), ("clinic-b", b"b"), ("not a topic", b"?"),
        ("clinic-a", b"\x01"), ("clinic-a", b"\x02")]
    for message in turn:
        held.done(message.id)
    assert [h.payload for h in held.next_turn(per_box=3, limit=100)] == [b"\x03", b"\x04",
                                                                          b"\x05"]
    assert held.waiting() == 7 and other.waiting() == 1  # each receiver its own
    assert intake.held(store.database) == {("clinic-a", "box-1"): 7, ("clinic-c", "box-3"): 1}
