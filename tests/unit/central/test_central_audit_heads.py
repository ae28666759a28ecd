"""The hospital witnesses each box's audit-trail head: verdicts, the CLI, the witness file,
the report."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from central import audit_witness
from central.audit_witness import AuditHead, audit_head, verdict
from central.config import CentralConfig, HealthConfig
from central.receiver import Receiver
from central.report import AUDIT_ALARM_DAYS, build_report, render_table
from central.store import Store
from clinibox.central_command import main
from tests.central_fixtures import (  # noqa: F401 (pytest fixtures)
    central_box,
    central_database,
    central_hospital,
    central_store,
)
from tests.telemetry_payloads import Box, status_payload


def h(n: int) -> str:
    """A stand-in for the hash of audit row ``n`` (``n`` < 0: a rewritten one)."""
    return hashlib.sha256(str(n).encode()).hexdigest()


@pytest.mark.parametrize(("previous", "head", "expected"), [
    (None, AuditHead(5, h(5), 5, h(5)), "first"),
    ((5, h(5)), AuditHead(9, h(9), 5, h(5)), "extends"),
    ((5, h(5)), AuditHead(5, h(5), 5, h(5)), "extends"),  # nothing new on the box
    ((5, h(5)), AuditHead(9, h(9), 5, h(-5)), "rewritten"),
    ((5, h(5)), AuditHead(3, h(3), 5, h(-5)), "rewritten"),  # and rewound: rewriting wins
    ((5, h(5)), AuditHead(3, h(3), 5, h(5)), "rewound"),
    ((5, h(5)), AuditHead(2, h(2), 1, h(1)), "rewound"),
    ((5, h(5)), AuditHead(12, h(12), 9, h(9)), "gap"),
])
def test_verdicts(previous, head, expected):
    assert verdict(previous, head) == expected
    assert expected in audit_witness.VERDICTS


@pytest.mark.parametrize("audit", [
    None, {"row": 1, "hash": h(1), "since_row": 1}, {"row": -1, "hash": h(1), "since_row": 1,
                                                     "since_hash": h(1)},
    {"row": True, "hash": h(1), "since_row": 1, "since_hash": h(1)},
    {"row": 1, "hash": h(1).upper(), "since_row": 1, "since_hash": h(1)}, [1, 2],
])
def test_an_absent_or_ill_formed_audit_field_is_no_head(audit):
    assert audit_head({} if audit is None else {"audit": audit}) is None


def _beat(receiver: Receiver, box: Box, row: int, row_hash: str, since_row: int,
          since_hash: str) -> None:
    payload = status_payload("heartbeat", created_at=int(time.time()),
                             audit={"row": row, "hash": row_hash, "since_row": since_row,
                                    "since_hash": since_hash})
    assert receiver.handle(*box.envelope("status", payload)) == "stored"


def _history(store: Store, hospital, box: Box) -> Receiver:
    """first, extends, a status without audit, rewritten, gap, rewound, extends."""
    receiver = Receiver(CentralConfig(), store, hospital[0])
    _beat(receiver, box, 4, h(4), 4, h(4))
    _beat(receiver, box, 10, h(10), 4, h(4))
    assert receiver.handle(*box.envelope("status")) == "stored"  # an older box: no audit
    _beat(receiver, box, 12, h(12), 10, h(-10))
    _beat(receiver, box, 20, h(20), 15, h(15))
    _beat(receiver, box, 8, h(8), 8, h(8))
    _beat(receiver, box, 9, h(9), 8, h(8))
    return receiver


def test_heartbeats_are_witnessed_with_their_verdicts(store, hospital, box):
    _history(store, hospital, box)
    heads = store.audit_heads("clinic-a", "box-1")
    assert [(x["seq"], x["row"], x["verdict"]) for x in heads] == [
        (1, 4, "first"), (2, 10, "extends"), (4, 12, "rewritten"), (5, 20, "gap"),
        (6, 8, "rewound"), (7, 9, "extends")]
    assert heads[2]["since_hash"] == h(-10) and heads[2]["hash"] == h(12)
    latest = store.latest_audit_heads()
    assert list(latest) == [("clinic-a", "box-1")] and latest["clinic-a", "box-1"]["seq"] == 7
    assert store.audit_heads("clinic-b", "box-1") == []


def test_another_box_has_its_own_chain(store, hospital, box):
    other = Box("clinic-b", "box-1", hospital[1])
    store.enrol(other.clinic, other.device, other.pem)
    receiver = Receiver(CentralConfig(), store, hospital[0])
    _beat(receiver, box, 4, h(4), 4, h(4))
    _beat(receiver, other, 2, h(2), 2, h(2))
    _beat(receiver, box, 5, h(5), 4, h(4))
    assert [(x["clinic"], x["verdict"]) for x in store.audit_heads()] == [
        ("clinic-a", "first"), ("clinic-a", "extends"), ("clinic-b", "first")]


def _cli(database, capsys, *args: str) -> tuple[int, str]:
    config = database.parent / "central.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{database}"\n')
    status = main([*args, "--config", str(config)])
    return status, capsys.readouterr().out


def test_the_cli_lists_latest_heads_and_alarms_and_writes_a_witness_file(
        store, hospital, box, database, capsys, tmp_path):
    _history(store, hospital, box)
    status, out = _cli(database, capsys, "audit-heads", "--json")
    listing = json.loads(out)
    assert status == 0
    assert [x["seq"] for x in listing["latest"]] == [7]
    assert [x["verdict"] for x in listing["alarms"]] == ["rewritten", "gap", "rewound"]
    status, out = _cli(database, capsys, "audit-heads")
    assert status == 0 and "rewritten" in out and "clinic-a/box-1" in out
    witness = tmp_path / "witness.json"
    status, _ = _cli(database, capsys, "audit-heads", "--device", "clinic-a/box-1",
                     "--witness-file", str(witness))
    document = json.loads(witness.read_text())
    assert status == 0 and (document["clinic"], document["device"]) == ("clinic-a", "box-1")
    assert [(x["seq"], x["row"], x["hash"]) for x in document["heads"]] == [
        (1, 4, h(4)), (2, 10, h(10)), (4, 12, h(12)), (5, 20, h(20)), (6, 8, h(8)),
        (7, 9, h(9))]
    assert set(document["heads"][0]) == {"row", "hash", "seq", "received_at"}
    status, _ = _cli(database, capsys, "audit-heads", "--witness-file", str(witness))
    assert status == 2  # a witness file is one device's


def test_the_report_warns_about_an_alarm_even_after_later_heads_extend_it(store, hospital, box):
    receiver = Receiver(CentralConfig(), store, hospital[0])
    _beat(receiver, box, 4, h(4), 4, h(4))
    [row] = build_report(store, HealthConfig(), time.time())
    assert (row["health"], row["audit"], row["reasons"]) == ("ok", "first", [])
    _beat(receiver, box, 6, h(6), 4, h(-4))
    [row] = build_report(store, HealthConfig(), time.time())
    assert row["health"] == "warning" and row["audit"] == "rewritten"
    assert row["reasons"][0].startswith("audit trail rewritten (heartbeat #2")
    assert "audit trail rewritten" in render_table([row])
    _beat(receiver, box, 7, h(7), 6, h(6))  # extends the rewritten trail: no longer latest
    [row] = build_report(store, HealthConfig(), time.time())
    assert row["health"] == "warning" and row["audit"] == "rewritten"  # the alarm stays …
    later = time.time() + (AUDIT_ALARM_DAYS + 1) * 86400
    [row] = build_report(store, HealthConfig(), later)
    assert row["audit"] == "extends" and not any("audit" in r for r in row["reasons"])  # … a while


def test_the_dead_letters_cli_lists_and_saves(store, hospital, box, database, capsys, tmp_path):
    receiver = Receiver(CentralConfig(), store, hospital[0])
    assert receiver.handle("clinibox/clinic-a/box-1/alert", b"CBX1junk") == "malformed"
    status, out = _cli(database, capsys, "dead-letters", "--json")
    [letter] = json.loads(out)
    assert status == 0 and (letter["reason"], letter["size"]) == ("malformed", 8)
    status, out = _cli(database, capsys, "dead-letters")
    assert status == 0 and "malformed" in out and "1 dead letter kept, 8 bytes" in out
    saved = tmp_path / "letter.bin"
    status, _ = _cli(database, capsys, "dead-letters", "--save", str(letter["id"]), str(saved))
    assert status == 0 and saved.read_bytes() == b"CBX1junk"
    status, _ = _cli(database, capsys, "dead-letters", "--save", "999", str(saved))
    assert status == 1


DAY = 86400


@pytest.mark.parametrize(("head", "witnessed", "expected"), [
    # the trail starts after row 7; row 5 was witnessed a day ago, kept 30 days: deleted
    (AuditHead(9, h(9), 9, h(9), 0, 7, 30.0), [(5, -DAY)], 5),
    (AuditHead(9, h(9), 9, h(9), 0, 7, 30.0), [(5, -40 * DAY)], None),  # pruned in time
    (AuditHead(9, h(9), 9, h(9), 0, 4, 30.0), [(5, -DAY)], None),  # row 5 still held
    (AuditHead(9, h(9), 9, h(9), 0, 7, 0.0), [(5, -400 * DAY)], 5),  # keep_days 0: for ever
    (AuditHead(9, h(9), 9, h(9), 0, None, None), [(5, -DAY)], None),  # an older box: unsaid
    (AuditHead(9, h(9), 9, h(9), 0, 7, 30.0), [(5, None)], None),  # the head said no time
])
def test_a_witnessed_row_gone_before_keep_days_is_pruned_early(head, witnessed, expected):
    now = 2_000_000_000
    rows = [(row, None if at is None else now + at) for row, at in witnessed]
    assert audit_witness.pruned_early(head, rows, now) == expected


def test_every_heartbeat_after_rows_deleted_too_early_is_an_alarm(store, hospital, box):
    receiver = Receiver(CentralConfig(), store, hospital[0])
    now = int(time.time())

    def beat(row: int, since: int, anchor: int, at: int) -> None:
        audit = {"row": row, "hash": h(row), "since_row": since, "since_hash": h(since),
                 "at": at, "anchor_row": anchor, "keep_days": 30}
        payload = status_payload("heartbeat", created_at=now, audit=audit)
        assert receiver.handle(*box.envelope("status", payload)) == "stored"

    beat(5, 5, 0, now - 40 * DAY)  # an old row, seen
    beat(8, 5, 0, now - 2 * DAY)  # a young one, seen
    beat(12, 8, 6, now - DAY)  # pruned through row 6: row 5 was old enough
    beat(14, 12, 9, now)  # the anchor moved past row 8, written two days ago
    beat(15, 14, 9, now)  # and again at the next heartbeat
    verdicts = [row["verdict"] for row in store.audit_heads(box.clinic, box.device)]
    assert verdicts == ["first", "extends", "extends", "pruned_early", "pruned_early"]
    assert audit_witness.PRUNED_EARLY in audit_witness.ALARMS
