"""The records outbox's rows: every SQL statement on the ``records_outbox`` table (v24).

One row per report and receiver (a clinic information system of ``[[records.receivers]]``):
the study's result at each completion (``result``, its completion number as ``version``),
and again with the hospital's verdict when one comes (``verdict``, the verdict's downlink
number). ``content`` is what the report says, as JSON (``records/content.py``), committed in
the caller's transaction with the event that made it, so a restart or a power cut loses
nothing; the wire message (HL7 v2 or FHIR) is made from it at each try, the same each time.

* A failed try (receiver down, no answer, connection lost) keeps the row ``pending`` with
  its error, one more attempt, and a next try after an exponential backoff, for as long as
  it takes.
* A refusal (an HL7 ACK with AE or AR, a FHIR 4xx) is a failed try that also counts a
  refusal and keeps the answer's code (``last_status``); at ``max_refusals`` the row is
  ``held`` until a technician re-queues it (``clinibox records retry``).
* A newer report of a study supersedes the still-pending (or held) older ones for the same
  receiver: only the latest waits, and it says the study's whole result.
* Sent and superseded rows stay for the audit period, then are purged.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from clinibox_common.contracts.statuses import RecordState
from firmware_app.storage.dicom_outbox import retry_delay


@dataclass(frozen=True)
class DueReport:
    """One pending report whose next try is due."""

    id: int
    receiver: str
    study_key: str
    kind: str
    version: int
    content: dict[str, Any]
    attempts: int
    created_at: float


def add_report(conn: sqlite3.Connection, receivers: Iterable[str], study_key: str, kind: str,
               version: int, content: dict[str, Any], now: float | None = None) -> list[int]:
    """Queue a report of ``study_key`` for each receiver; return the new row ids.

    Runs in the caller's transaction. The same report (receiver, study, kind, version)
    is not queued twice; the receiver's still-waiting older reports of the study are
    superseded by it.
    """
    now = time.time() if now is None else now
    text = json.dumps(content, sort_keys=True, ensure_ascii=False)
    added: list[int] = []
    for receiver in receivers:
        cursor = conn.execute(
            "INSERT OR IGNORE INTO records_outbox(receiver, study_key, report_kind, version,"
            " content, state, attempts, next_attempt_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
            (receiver, study_key, kind, int(version), text, RecordState.PENDING, now, now))
        if not cursor.rowcount:
            continue
        row_id = int(cursor.lastrowid)
        added.append(row_id)
        conn.execute("UPDATE records_outbox SET state = ? WHERE receiver = ? AND study_key = ?"
                     " AND state IN (?, ?) AND id != ?",
                     (RecordState.SUPERSEDED, receiver, study_key, RecordState.PENDING,
                      RecordState.HELD, row_id))
    return added


def _due(row: sqlite3.Row) -> DueReport:
    return DueReport(int(row["id"]), row["receiver"], row["study_key"], row["report_kind"],
                     int(row["version"]), json.loads(row["content"]), int(row["attempts"]),
                     float(row["created_at"]))


def due_reports(conn: sqlite3.Connection, receiver: str, now: float | None = None,
                limit: int = 100) -> list[DueReport]:
    """The receiver's pending reports whose next try is due, oldest first."""
    now = time.time() if now is None else now
    rows = conn.execute(
        "SELECT id, receiver, study_key, report_kind, version, content, attempts, created_at"
        " FROM records_outbox WHERE receiver = ? AND state = ? AND next_attempt_at <= ?"
        " ORDER BY created_at, id LIMIT ?", (receiver, RecordState.PENDING, now, limit))
    return [_due(row) for row in rows]


def next_due_at(conn: sqlite3.Connection, receiver: str) -> float | None:
    """When the receiver's earliest pending report is due (None: none waits)."""
    value = conn.execute("SELECT MIN(next_attempt_at) FROM records_outbox WHERE state = ?"
                         " AND receiver = ?", (RecordState.PENDING, receiver)).fetchone()[0]
    return None if value is None else float(value)


def sent_before(conn: sqlite3.Connection, receiver: str, study_key: str, row_id: int) -> bool:
    """Whether the receiver already has an earlier report of the study (the next one is
    then a correction of it)."""
    row = conn.execute("SELECT 1 FROM records_outbox WHERE receiver = ? AND study_key = ?"
                       " AND state = ? AND id < ? LIMIT 1",
                       (receiver, study_key, RecordState.SENT, row_id)).fetchone()
    return row is not None


def mark_sent(conn: sqlite3.Connection, row_id: int, now: float | None = None) -> None:
    """The receiver accepted the report."""
    now = time.time() if now is None else now
    conn.execute("UPDATE records_outbox SET state = ?, sent_at = ?, attempts = attempts + 1"
                 " WHERE id = ? AND state != ?",
                 (RecordState.SENT, now, row_id, RecordState.SENT))


def mark_failed(conn: sqlite3.Connection, row_id: int, error: str, first: float,
                longest: float, now: float | None = None) -> float:
    """A try failed: count it, keep ``error``, back off; return when the next try is due."""
    now = time.time() if now is None else now
    row = conn.execute("SELECT attempts FROM records_outbox WHERE id = ?", (row_id,)).fetchone()
    if row is None:
        return now
    attempts = int(row[0]) + 1
    due = now + retry_delay(attempts, first, longest)
    conn.execute("UPDATE records_outbox SET attempts = ?, last_error = ?, next_attempt_at = ?"
                 " WHERE id = ? AND state = ?",
                 (attempts, error[:500], due, row_id, RecordState.PENDING))
    return due


def mark_refused(conn: sqlite3.Connection, row_id: int, error: str, status: str,
                 max_refusals: int, first: float, longest: float,
                 now: float | None = None) -> str:
    """The receiver refused the report with ``status`` (``AE``, ``AR``, an HTTP code): count
    the try and the refusal; back off, or hold the row at ``max_refusals``. Return the row's
    state (pending or held; "gone" when it is no longer pending)."""
    row = conn.execute("SELECT refusals FROM records_outbox WHERE id = ? AND state = ?",
                       (row_id, RecordState.PENDING)).fetchone()
    if row is None:
        return "gone"
    mark_failed(conn, row_id, error, first, longest, now)
    refusals = int(row[0]) + 1
    state = RecordState.HELD if refusals >= max_refusals else RecordState.PENDING
    conn.execute("UPDATE records_outbox SET refusals = ?, last_status = ?, state = ?"
                 " WHERE id = ?", (refusals, str(status)[:40], state, row_id))
    return state


def held_reports(conn: sqlite3.Connection, receiver: str | None = None
                 ) -> list[dict[str, Any]]:
    """Held rows (of one receiver, or all), oldest first: id, receiver, study, report kind,
    version, refusals, the last answer and error."""
    where, params = "state = ?", [RecordState.HELD]
    if receiver is not None:
        where += " AND receiver = ?"
        params.append(receiver)
    rows = conn.execute("SELECT id, receiver, study_key, report_kind, version, refusals,"
                        " last_status, last_error FROM records_outbox"
                        f" WHERE {where} ORDER BY created_at, id", params)
    return [dict(row) for row in rows]


def requeue_held(conn: sqlite3.Connection, receiver: str | None = None,
                 now: float | None = None) -> dict[str, int]:
    """Send the held reports (of one receiver, else all) again at once, their refusals
    counted from zero; return how many of each receiver's. Run it inside a transaction."""
    now = time.time() if now is None else now
    where, params = "state = ?", [RecordState.HELD]
    if receiver is not None:
        where += " AND receiver = ?"
        params.append(receiver)
    rows = conn.execute("UPDATE records_outbox SET state = ?, refusals = 0,"
                        f" next_attempt_at = ? WHERE {where} RETURNING receiver",
                        [RecordState.PENDING, now, *params]).fetchall()
    counts: dict[str, int] = {}
    for (name,) in rows:
        counts[name] = counts.get(name, 0) + 1
    return counts


def event_component(receiver: str) -> str:
    """The ``events`` component under which a receiver's failures are recorded."""
    return f"records {receiver}"


def last_said(conn: sqlite3.Connection, receiver: str, message: str) -> float | None:
    """When ``message`` was last recorded for ``receiver`` (None: never, or not kept)."""
    row = conn.execute("SELECT at FROM events WHERE component = ? AND message = ?"
                       " ORDER BY id DESC LIMIT 1",
                       (event_component(receiver), message)).fetchone()
    return None if row is None else float(row[0])


def receiver_figures(conn: sqlite3.Connection, configured: Collection[str] = ()
                     ) -> list[dict[str, Any]]:
    """Backlog and last failure of every receiver (configured, or with rows), by name:
    ``waiting``, ``oldest_waiting_at``, ``attempts`` (the most tries a waiting report has had),
    ``next_attempt_at``, ``sent``, ``last_sent_at``, ``held`` with ``held_status`` and
    ``held_error`` (the newest held report's answer and the receiver's words), ``configured``,
    and ``last_error``, ``last_error_at`` and ``last_error_code`` (the newest event recorded
    for it; None, None and "" when none is kept)."""
    empty = {"waiting": 0, "oldest_waiting_at": None, "attempts": 0, "next_attempt_at": None,
             "sent": 0, "last_sent_at": None, "held": 0}
    figures: dict[str, dict[str, Any]] = {name: {"name": name, **empty} for name in configured}
    for row in conn.execute(
            "SELECT receiver, SUM(state = :pending) AS waiting,"
            " MIN(CASE WHEN state = :pending THEN created_at END) AS oldest_waiting_at,"
            " MAX(CASE WHEN state = :pending THEN attempts ELSE 0 END) AS attempts,"
            " MIN(CASE WHEN state = :pending THEN next_attempt_at END) AS next_attempt_at,"
            " SUM(state = :sent) AS sent, MAX(sent_at) AS last_sent_at,"
            " SUM(state = :held) AS held FROM records_outbox GROUP BY receiver",
            {"pending": RecordState.PENDING, "sent": RecordState.SENT,
             "held": RecordState.HELD}):
        figures[row["receiver"]] = {
            "name": row["receiver"], "waiting": int(row["waiting"] or 0),
            "oldest_waiting_at": row["oldest_waiting_at"], "attempts": int(row["attempts"] or 0),
            "next_attempt_at": row["next_attempt_at"], "sent": int(row["sent"] or 0),
            "last_sent_at": row["last_sent_at"], "held": int(row["held"] or 0)}
    for name, item in figures.items():
        item["configured"] = name in configured
        held = held_reports(conn, name)
        item["held_status"] = held[-1]["last_status"] if held else None
        item["held_error"] = held[-1]["last_error"] if held else None
        event = conn.execute("SELECT at, message, code FROM events WHERE component = ?"
                             " ORDER BY id DESC LIMIT 1", (event_component(name),)).fetchone()
        item["last_error_at"], item["last_error"], item["last_error_code"] = (
            (float(event[0]), str(event[1]), str(event[2] or "")) if event
            else (None, None, ""))
    return [figures[name] for name in sorted(figures)]


def purge(conn: sqlite3.Connection, receiver: str, audit_seconds: float,
          now: float | None = None) -> int:
    """Forget the receiver's sent and superseded rows older than the audit window (held ones
    wait for a technician); return how many. Run it inside a transaction."""
    now = time.time() if now is None else now
    cursor = conn.execute("DELETE FROM records_outbox WHERE receiver = ? AND state IN (?, ?)"
                          " AND COALESCE(sent_at, created_at) < ?",
                          (receiver, RecordState.SENT, RecordState.SUPERSEDED,
                           now - audit_seconds))
    return int(cursor.rowcount)
