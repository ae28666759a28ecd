"""What the telemetry publisher reads and writes in the box's database.

The publisher's own state (``telemetry_state``: link up or down and since
when, the end of the last summary period, when the appliance last noted it
was alive, counters) and the rows a summary counts. The alerts a study owes
(one per study and model) are ``storage/study_alerts.py``; the messages
themselves are built in ``firmware_app/telemetry/messages.py``; the outbox is
``storage/outbox.py``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from clinibox_common.contracts.statuses import WAITING_STATUSES, InstanceStatus, Verdict
from firmware_app.storage.queue import JobQueue


def state_value(conn: sqlite3.Connection, name: str) -> float | None:
    """One value of the publisher's state, or None when it was never written."""
    row = conn.execute("SELECT value FROM telemetry_state WHERE name=?", (name,)).fetchone()
    return None if row is None else float(row[0])


def set_state(conn: sqlite3.Connection, name: str, value: float) -> None:
    """Write one value of the publisher's state (in the caller's transaction, if any)."""
    conn.execute("INSERT INTO telemetry_state(name, value) VALUES (?, ?)"
                 " ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))


def start_summaries(conn: sqlite3.Connection, now: float) -> None:
    """Let the first summary period start at the first result (or now), once per box."""
    conn.execute("INSERT OR IGNORE INTO telemetry_state(name, value)"
                 " SELECT 'summary_end', MIN(COALESCE((SELECT MIN(created_at)"
                 " FROM results), ?), ?)", (now, now))


def _count(conn: sqlite3.Connection, sql: str, params: tuple) -> int:
    return int(conn.execute(sql, params).fetchone()[0] or 0)


def period_rows(conn: sqlite3.Connection, start: float, end: float) -> list[sqlite3.Row]:
    """Results created in [start, end): probability, finding, warnings_json, timings_json,
    input_mean, input_std, modality, study_instance_uid, assessment."""
    return conn.execute(
        "SELECT r.probability, r.finding, r.warnings_json, r.timings_json, r.input_mean,"
        " r.input_std, i.modality, i.study_instance_uid, r.assessment"
        " FROM results r JOIN instances i ON i.id = r.instance_id"
        " WHERE r.created_at >= ? AND r.created_at < ?", (start, end)).fetchall()


def period_counts(conn: sqlite3.Connection, start: float, end: float) -> dict[str, Any]:
    """Alerts (one per study and model) queued, quarantined, not analysed and failed objects,
    and clinicians' verdicts in [start, end)."""
    verdicts = dict(conn.execute(
        "SELECT verdict, COUNT(*) FROM feedback WHERE at >= ? AND at < ? GROUP BY verdict",
        (start, end)).fetchall())
    settled = "SELECT COUNT(*) FROM instances WHERE status=? AND updated_at >= ? AND updated_at < ?"
    return {
        "alerts": _count(conn, "SELECT COUNT(*) FROM alerted_studies WHERE at >= ? AND at < ?",
                         (start, end)),
        **{status.value: _count(conn, settled, (status, start, end))
           for status in (InstanceStatus.QUARANTINED, InstanceStatus.NOT_ANALYSED,
                          InstanceStatus.FAILED)},
        "feedback": {v.value: int(verdicts.get(v, 0)) for v in Verdict},
    }


def queue_depth(conn: sqlite3.Connection) -> int:
    """Objects received and not yet processed (as ``clinibox status`` counts them)."""
    counts = JobQueue(conn).counts()
    return sum(counts[status] for status in WAITING_STATUSES)


def study_keys(conn: sqlite3.Connection) -> list[str]:
    """Every study's key (its Study Instance UID) on the box."""
    return [row[0] for row in conn.execute("SELECT study_key FROM studies")]


def study_instances(conn: sqlite3.Connection, study_key: str) -> list[sqlite3.Row]:
    """The study's instances: id, modality, probability and alert (None when not analysed)."""
    return conn.execute(
        "SELECT i.id, i.modality, r.probability, r.alert FROM instances i"
        " LEFT JOIN results r ON r.instance_id = i.id WHERE i.study_instance_uid = ?"
        " ORDER BY i.id", (study_key,)).fetchall()
