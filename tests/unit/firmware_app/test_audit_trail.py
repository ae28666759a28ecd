"""The audit trail's storage: append-only rows in a hash chain that shows edits, deletions and
reordering; triggers that refuse changes; pruning that keeps the chain checkable."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from firmware_app.storage import audit, db
from firmware_app.storage.audit_chain import verify
from firmware_app.storage.audit_query import AuditQuery, BadDate, count_rows, parse_when, read_rows
from firmware_app.storage.audit_schema import TRIGGERS

DAY = 86_400.0


def _fill(conn: sqlite3.Connection, n: int = 6, start: float = 1_000.0) -> None:
    for i in range(n):
        audit.record(conn, "study_view", account="carl", address="10.0.0.5",
                     target=f"study:{i + 1}", detail=f"instance {i}", at=start + i)


def _unguarded(conn: sqlite3.Connection) -> None:
    """An attacker with the sqlite3 shell: the triggers dropped first."""
    for name in TRIGGERS:
        conn.execute(f"DROP TRIGGER {name}")


def test_rows_chain_and_verify_intact(conn):
    _fill(conn)
    rows = read_rows(conn, AuditQuery(), newest_first=False)
    assert [r.id for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0].to_dict()["account"] == "carl" and rows[0].address == "10.0.0.5"
    chain = [tuple(r) for r in conn.execute("SELECT prev_hash, hash FROM audit ORDER BY id")]
    assert all(chain[i][0] == chain[i - 1][1] for i in range(1, len(chain)))
    check = verify(conn)
    assert check.intact and check.rows == 6 and check.describe() == "intact (6 rows)"
    assert check.last_hash == chain[-1][1]


def test_the_triggers_refuse_update_and_delete(conn):
    _fill(conn, 3)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit SET account = 'mallory' WHERE id = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit WHERE id = 2")
    with pytest.raises(sqlite3.IntegrityError, match="anchor"):
        conn.execute("UPDATE audit_anchor SET last_id = 2")
    with pytest.raises(sqlite3.IntegrityError, match="anchor"):
        conn.execute("DELETE FROM audit_anchor")
    assert count_rows(conn, AuditQuery()) == 3 and verify(conn).intact


def test_an_edited_row_is_found(conn):
    _fill(conn)
    _unguarded(conn)
    conn.execute("UPDATE audit SET account = 'tina' WHERE id = 3")
    check = verify(conn)
    assert (check.broken_at, check.rows) == (3, 2)
    assert "edited" in check.reason
    assert check.describe().startswith("broken at row 3: ")


def test_a_row_deleted_in_the_middle_is_found(conn):
    _fill(conn)
    _unguarded(conn)
    conn.execute("DELETE FROM audit WHERE id = 4")
    check = verify(conn)
    assert check.broken_at == 5 and "row 4 is missing" in check.reason


def test_a_deleted_row_is_found_even_when_the_ids_are_closed_up(conn):
    _fill(conn)
    _unguarded(conn)
    conn.execute("DELETE FROM audit WHERE id = 4")
    conn.execute("UPDATE audit SET id = id - 1 WHERE id > 4")
    conn.execute("UPDATE sqlite_sequence SET seq = 5 WHERE name = 'audit'")
    check = verify(conn)
    assert check.broken_at == 4 and "does not follow the row before it" in check.reason


def test_swapped_rows_are_found(conn):
    _fill(conn)
    _unguarded(conn)
    conn.execute("UPDATE audit SET id = -2 WHERE id = 2")
    conn.execute("UPDATE audit SET id = 2 WHERE id = 3")
    conn.execute("UPDATE audit SET id = 3 WHERE id = -2")
    check = verify(conn)
    assert check.broken_at == 2 and "does not follow" in check.reason


def test_rows_cut_off_the_end_are_found(conn):
    _fill(conn)
    _unguarded(conn)
    conn.execute("DELETE FROM audit WHERE id >= 5")
    check = verify(conn)
    assert check.broken_at == 5 and "rows 5 to 6 are cut off the end" in check.reason


def test_a_removed_trigger_is_named(conn):
    _fill(conn, 2)
    conn.execute("DROP TRIGGER audit_rows_are_not_changed")
    check = verify(conn)
    assert not check.intact and check.broken_at is None
    assert "audit_rows_are_not_changed" in check.describe()
    db.initialise(conn)  # the next start of the software puts it back
    assert verify(conn).intact


def test_prune_keeps_the_chain_verifiable(conn):
    _fill(conn, 6, start=1_000.0)
    audit.record(conn, "login", account="tina", address="10.0.0.9", at=1_000.0 + 10 * DAY)
    now = 1_000.0 + 10 * DAY + 60
    assert audit.would_prune(conn, 5, now) == 6
    assert audit.prune(conn, 5, now) == 6
    rows = read_rows(conn, AuditQuery(), newest_first=False)
    assert [(r.id, r.action) for r in rows] == [(7, "login"), (8, "audit_pruned")]
    assert rows[1].account == audit.RETENTION_ACTOR and "6 row(s)" in rows[1].detail
    assert tuple(conn.execute("SELECT last_id FROM audit_anchor").fetchone()) == (6,)
    check = verify(conn)
    assert check.intact and check.rows == 2
    audit.record(conn, "logout", account="tina", address="10.0.0.9", at=now + 1)
    assert verify(conn).intact
    assert audit.prune(conn, 5, now) == 0  # nothing older left
    assert audit.prune(conn, 0, now + 100 * DAY) == 0  # 0: keep everything


def test_prune_takes_only_the_front_of_the_chain(conn):
    """A clock set back must not make pruning punch a hole in the chain."""
    audit.record(conn, "login", account="a", address="x", at=100.0)
    audit.record(conn, "login", account="b", address="x", at=10 * DAY)  # kept
    audit.record(conn, "login", account="c", address="x", at=200.0)  # clock set back
    assert audit.prune(conn, 1, 10 * DAY + 1) == 1
    assert [r.account for r in read_rows(conn, AuditQuery(), newest_first=False)] == [
        "b", "c", audit.RETENTION_ACTOR]
    assert verify(conn).intact


def test_a_broken_chain_is_not_pruned(conn):
    _fill(conn, 4, start=1_000.0)
    _unguarded(conn)
    conn.execute("UPDATE audit SET detail = 'nothing to see' WHERE id = 2")
    db.initialise(conn)  # the triggers back, the evidence still there
    assert audit.prune(conn, 1, 1_000.0 + 30 * DAY) == 0
    assert count_rows(conn, AuditQuery()) == 4
    event = conn.execute("SELECT level, message FROM events ORDER BY id DESC").fetchone()
    assert event[0] == "WARNING" and "broken at row 2" in event[1]


def test_a_record_joins_the_callers_transaction(conn):
    with pytest.raises(RuntimeError), db.transaction(conn):
        audit.record(conn, "feedback", account="carl", address="10.0.0.5")
        raise RuntimeError("the act failed")
    assert count_rows(conn, AuditQuery()) == 0
    assert audit.record(conn, "feedback", account="carl", address="10.0.0.5") == 1
    assert verify(conn).intact  # the rolled-back id was given again


def test_repeats_are_coalesced_and_text_is_one_safe_line(conn):
    first = audit.record(conn, "image_view", account="carl", address="a", target="instance:1",
                         at=500.0, coalesce_seconds=600)
    assert first == 1
    assert audit.record(conn, "image_view", account="carl", address="a", target="instance:1",
                        at=800.0, coalesce_seconds=600) is None
    assert audit.record(conn, "image_view", account="carl", address="a", target="instance:2",
                        at=800.0, coalesce_seconds=600) == 2
    assert audit.record(conn, "image_view", account="carl", address="a", target="instance:1",
                        at=1200.0, coalesce_seconds=600) == 3
    audit.record(conn, "login_failed", account="x\nFORGED 2025 login tina", address="b",
                 detail="d" * 1000)
    row = read_rows(conn, AuditQuery(action="login_failed"))[0]
    assert "\n" not in row.account and "\\x0a" in row.account
    assert len(row.detail) == audit.LIMITS["detail"]
    with pytest.raises(audit.UnknownAction):
        audit.record(conn, "coffee_break", account="carl")
    assert verify(conn).intact


def test_filters_counts_and_dates(conn):
    day = dt.date(2025, 3, 14)
    start = parse_when("2025-03-14")
    assert parse_when("today", today=day) == start
    assert parse_when("yesterday", today=day) == parse_when("2025-03-13")
    assert parse_when("2025-03-14", end=True) == parse_when("2025-03-15")
    assert parse_when("2025-03-14T09:30") == start + 9.5 * 3600
    with pytest.raises(BadDate):
        parse_when("last tuesday")
    audit.record(conn, "login", account="carl", address="a", at=start - 1)
    audit.record(conn, "study_view", account="carl", address="a", target="study:1",
                 at=start + 10)
    audit.record(conn, "study_view", account="tina", address="b", target="study:2",
                 at=start + 20)
    today = AuditQuery(since=start, until=parse_when("2025-03-14", end=True))
    assert [r.target for r in read_rows(conn, today)] == ["study:2", "study:1"]
    assert count_rows(conn, AuditQuery(since=start, account="carl")) == 1
    assert count_rows(conn, AuditQuery(action="login")) == 1
    assert [r.id for r in read_rows(conn, AuditQuery(), limit=1, offset=1)] == [2]
    assert audit.counts(conn, start, start + DAY) == {"study_view": 2}


def test_a_fresh_database_has_the_anchor_and_triggers(tmp_path):
    conn = db.open_database(tmp_path / "box.db")
    try:
        assert tuple(conn.execute("SELECT id, last_id FROM audit_anchor").fetchone()) == (1, 0)
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
        assert set(TRIGGERS) <= names
        assert verify(conn).describe() == "intact (0 rows)"
    finally:
        conn.close()


def test_the_hourly_retention_pass_prunes_by_keep_days(tmp_path):
    from collections import namedtuple

    from firmware_app.settings.box import from_dict
    from firmware_app.storage.retention import apply_retention

    usage = namedtuple("Usage", "total used free")(100, 10, 90)
    config = from_dict({"storage": {"state_dir": str(tmp_path / "state")},
                        "audit": {"keep_days": 30}})
    assert from_dict({}).audit.keep_days == 365
    conn = db.open_database(config.database_path)
    try:
        now = 100 * DAY
        _fill(conn, 3, start=now - 40 * DAY)
        _fill(conn, 2, start=now - 10 * DAY)
        dry = apply_retention(conn, config, now=now, dry_run=True,
                              disk_usage=lambda _path: usage)
        assert dry.audit_rows == 3 and count_rows(conn, AuditQuery()) == 5
        report = apply_retention(conn, config, now=now, disk_usage=lambda _path: usage)
        assert report.audit_rows == 3 and "3 audit row(s) older than 30 days" in report.summary()
        assert [r.action for r in read_rows(conn, AuditQuery(), newest_first=False)] == [
            "study_view", "study_view", "audit_pruned"]
        assert verify(conn).intact
    finally:
        conn.close()


def test_the_console_actor_names_the_person_at_the_terminal(monkeypatch):
    import os
    import pwd

    me = pwd.getpwuid(os.geteuid()).pw_name
    monkeypatch.setattr(os, "getlogin", lambda: me)
    assert audit.console_actor() == f"cli:{me}"
    monkeypatch.setattr(os, "getlogin", lambda: "tech")
    assert audit.console_actor() == f"cli:tech as {me}"

    def no_terminal() -> str:
        raise OSError(6, "No such device or address")

    monkeypatch.setattr(os, "getlogin", no_terminal)
    monkeypatch.setenv("SUDO_USER", "tina")
    assert audit.console_actor() == f"cli:tina as {me}"
    monkeypatch.delenv("SUDO_USER")
    assert audit.console_actor() == f"cli:{me}"
