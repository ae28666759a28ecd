"""The DICOM outbox's rows: every SQL statement on the ``dicom_outbox`` table.

One row per result document (SR, SEG, key image) and PACS destination. The
document's file is written durably before its rows are added, and the rows
commit in the caller's transaction; a row is ``sent`` only once the
destination answered the C-STORE with Success (or a warning that says it
stored the object), so a restart or a power cut loses nothing, and what was
acknowledged is not sent again.

* A failed try (peer down, association refused, timeout) keeps the row
  ``pending`` with its error, one more attempt, and a next try after an
  exponential backoff (``retry_min_seconds`` doubling up to
  ``retry_max_seconds``), for as long as it takes.
* A refusal (the destination answered the C-STORE with a failure status:
  0xA700 out of resources, 0xA900 data set does not match the SOP class,
  0xC000 cannot understand …) is a failed try that also counts a refusal and
  keeps the status (``last_status``); at ``max_refusals`` the row is ``held``:
  not tried again until a technician re-queues it (``requeue_held``,
  ``clinibox dicom-out retry``). Held rows are shown in the status, never
  purged.
* A newer version of a document (another SOP Instance UID of the same kind for
  the same study) supersedes a still-pending older one for the same
  destination (or a held one): only the latest version waits. Documents added
  together (one study's results) never supersede each other.
* Sent and superseded rows stay for the audit period (``[telemetry]
  audit_days``, as the MQTT outbox), then are purged with their files.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinibox_common.contracts.dicom_outputs import output_keys
from clinibox_common.contracts.statuses import DicomOutboxState

#: how old an unreferenced file in the outbox folder must be before a purge removes it
#: (one younger may belong to rows its writer is about to commit)
ORPHAN_GRACE_SECONDS = 3600.0


@dataclass(frozen=True)
class DocumentFile:
    """A result document written durably to ``path``, ready to be queued."""

    kind: str
    study_key: str
    sop_class_uid: str
    sop_instance_uid: str
    path: Path


@dataclass(frozen=True)
class DueDocument:
    """One pending row whose next try is due: what the sender needs to send it."""

    id: int
    destination: str
    kind: str
    study_key: str
    sop_class_uid: str
    sop_instance_uid: str
    path: Path
    attempts: int


def add_documents(conn: sqlite3.Connection, files: Iterable[DocumentFile],
                  routes: Mapping[str, Collection[str]], now: float | None = None) -> list[int]:
    """Queue ``files`` for every destination whose kinds include theirs; return the new row ids.

    ``routes`` maps a destination's name to the kinds it is sent (``send``). Runs
    inside the caller's transaction. A document already queued for a destination
    (same SOP Instance UID) is not queued again; a still-pending older version (same
    kind and study, another SOP Instance UID not in ``files``) is superseded.
    """
    now = time.time() if now is None else now
    files = list(files)
    batch = {(f.kind, f.study_key): set() for f in files}
    for f in files:
        batch[(f.kind, f.study_key)].add(f.sop_instance_uid)
    added: list[int] = []
    for destination, kinds in routes.items():
        for (kind, study_key), uids in batch.items():
            if kind not in kinds:
                continue
            marks = ",".join("?" * len(uids))
            conn.execute(
                "UPDATE dicom_outbox SET state = ? WHERE state IN (?, ?)"
                " AND destination = ? AND kind = ? AND study_key = ?"
                f" AND sop_instance_uid NOT IN ({marks})",
                (DicomOutboxState.SUPERSEDED, DicomOutboxState.PENDING, DicomOutboxState.HELD,
                 destination, kind, study_key, *sorted(uids)))
        for f in files:
            if f.kind not in kinds:
                continue
            cursor = conn.execute(
                "INSERT OR IGNORE INTO dicom_outbox(destination, kind, study_key, sop_class_uid,"
                " sop_instance_uid, path, state, attempts, next_attempt_at, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                (destination, f.kind, f.study_key, f.sop_class_uid, f.sop_instance_uid,
                 str(f.path), DicomOutboxState.PENDING, now, now))
            if cursor.rowcount:
                added.append(int(cursor.lastrowid))
    return added


def _due(row: sqlite3.Row) -> DueDocument:
    return DueDocument(int(row["id"]), row["destination"], row["kind"], row["study_key"],
                       row["sop_class_uid"], row["sop_instance_uid"], Path(row["path"]),
                       int(row["attempts"]))


def due_documents(conn: sqlite3.Connection, now: float | None = None,
                  destination: str | None = None, limit: int = 1000) -> list[DueDocument]:
    """Pending rows whose next try is due (``next_attempt_at <= now``), oldest first."""
    now = time.time() if now is None else now
    where = "state = ? AND next_attempt_at <= ?"
    params: list[Any] = [DicomOutboxState.PENDING, now]
    if destination is not None:
        where += " AND destination = ?"
        params.append(destination)
    rows = conn.execute(
        "SELECT id, destination, kind, study_key, sop_class_uid, sop_instance_uid, path,"
        f" attempts FROM dicom_outbox WHERE {where} ORDER BY created_at, id LIMIT ?",
        (*params, limit)).fetchall()
    return [_due(row) for row in rows]


def due_destinations(conn: sqlite3.Connection, now: float | None = None) -> list[str]:
    """Destinations with at least one pending row due now, by name."""
    now = time.time() if now is None else now
    rows = conn.execute(
        "SELECT DISTINCT destination FROM dicom_outbox"
        " WHERE state = ? AND next_attempt_at <= ? ORDER BY destination",
        (DicomOutboxState.PENDING, now))
    return [row[0] for row in rows]


def next_due_at(conn: sqlite3.Connection, destinations: Collection[str]) -> float | None:
    """When the earliest pending row for one of ``destinations`` is due (None: none waits)."""
    names = sorted(destinations)
    if not names:
        return None
    marks = ",".join("?" * len(names))
    value = conn.execute("SELECT MIN(next_attempt_at) FROM dicom_outbox WHERE state = ?"
                         f" AND destination IN ({marks})",
                         (DicomOutboxState.PENDING, *names)).fetchone()[0]
    return None if value is None else float(value)


def mark_sent(conn: sqlite3.Connection, row_id: int, now: float | None = None) -> None:
    """The destination stored the document (C-STORE Success or a storing warning)."""
    now = time.time() if now is None else now
    # a row superseded while it was on its way was still delivered: say so
    sent = DicomOutboxState.SENT
    conn.execute("UPDATE dicom_outbox SET state = ?, sent_at = ?, attempts = attempts + 1"
                 " WHERE id = ? AND state != ?", (sent, now, row_id, sent))


def retry_delay(attempts: int, first: float, longest: float) -> float:
    """Seconds before the next try after ``attempts`` failed ones: ``first`` doubling, at most
    ``longest``."""
    return min(longest, first * 2 ** min(max(attempts - 1, 0), 40))


def mark_failed(conn: sqlite3.Connection, row_id: int, error: str, first: float,
                longest: float, now: float | None = None) -> float:
    """A try failed: count it, keep ``error``, back off; return when the next try is due."""
    now = time.time() if now is None else now
    row = conn.execute("SELECT attempts FROM dicom_outbox WHERE id = ?", (row_id,)).fetchone()
    if row is None:
        return now
    attempts = int(row[0]) + 1
    due = now + retry_delay(attempts, first, longest)
    conn.execute("UPDATE dicom_outbox SET attempts = ?, last_error = ?, next_attempt_at = ?"
                 " WHERE id = ? AND state = ?",
                 (attempts, error[:500], due, row_id, DicomOutboxState.PENDING))
    return due


def mark_refused(conn: sqlite3.Connection, row_id: int, error: str, status: int,
                 max_refusals: int, first: float, longest: float,
                 now: float | None = None) -> str:
    """The destination refused the document with failure ``status``: count the try and the
    refusal, keep ``error`` and the status; back off, or hold the row at ``max_refusals``.
    Return the row's state (pending or held; "gone" when it is no longer pending)."""
    now = time.time() if now is None else now
    row = conn.execute("SELECT refusals FROM dicom_outbox WHERE id = ? AND state = ?",
                       (row_id, DicomOutboxState.PENDING)).fetchone()
    if row is None:
        return "gone"
    mark_failed(conn, row_id, error, first, longest, now)
    refusals = int(row[0]) + 1
    state = (DicomOutboxState.HELD if refusals >= max_refusals
             else DicomOutboxState.PENDING)
    conn.execute("UPDATE dicom_outbox SET refusals = ?, last_status = ?, state = ?"
                 " WHERE id = ?", (refusals, int(status), state, row_id))
    return state


@dataclass(frozen=True)
class HeldDocument:
    """A document the destination kept refusing: its last status and error."""

    id: int
    destination: str
    kind: str
    study_key: str
    sop_instance_uid: str
    refusals: int
    last_status: int | None
    last_error: str


def held_documents(conn: sqlite3.Connection, destination: str | None = None
                   ) -> list[HeldDocument]:
    """Held rows (of one destination, or all), oldest first."""
    where, params = "state = ?", [DicomOutboxState.HELD]
    if destination is not None:
        where += " AND destination = ?"
        params.append(destination)
    rows = conn.execute(
        "SELECT id, destination, kind, study_key, sop_instance_uid, refusals, last_status,"
        f" last_error FROM dicom_outbox WHERE {where} ORDER BY created_at, id", params)
    return [HeldDocument(int(r["id"]), r["destination"], r["kind"], r["study_key"],
                         r["sop_instance_uid"], int(r["refusals"]), r["last_status"],
                         str(r["last_error"] or "")) for r in rows]


def requeue_held(conn: sqlite3.Connection, destination: str | None = None,
                 ids: Collection[int] = (), now: float | None = None) -> int:
    """Send held rows again (of one destination, or those of ``ids``, else all) at once,
    their refusals counted from zero; return how many. Run it inside a transaction."""
    now = time.time() if now is None else now
    where, params = "state = ?", [now, DicomOutboxState.HELD]
    if destination is not None:
        where += " AND destination = ?"
        params.append(destination)
    if ids:
        where += f" AND id IN ({','.join('?' * len(ids))})"
        params += [int(i) for i in ids]
    cursor = conn.execute("UPDATE dicom_outbox SET state = ?, refusals = 0,"
                          f" next_attempt_at = ? WHERE {where}",
                          [DicomOutboxState.PENDING, *params])
    return int(cursor.rowcount)


def pending_count(conn: sqlite3.Connection, destination: str | None = None) -> int:
    """Rows waiting for a destination's acknowledgement (all destinations when None)."""
    if destination is None:
        row = conn.execute("SELECT COUNT(*) FROM dicom_outbox WHERE state = ?",
                           (DicomOutboxState.PENDING,))
    else:
        row = conn.execute("SELECT COUNT(*) FROM dicom_outbox WHERE state = ?"
                           " AND destination = ?", (DicomOutboxState.PENDING, destination))
    return int(row.fetchone()[0])


def event_component(destination: str) -> str:
    """The ``events`` component under which a destination's failures are recorded."""
    return f"pacs {destination}"


def last_event(conn: sqlite3.Connection, destination: str) -> tuple[float, str, str] | None:
    """The newest failure recorded for ``destination`` (time, message, code: ``pacs_failed:…``
    or ``pacs_held:…`` of ``storage.event_codes``, "" in rows from before codes), if any is
    kept."""
    row = conn.execute("SELECT at, message, code FROM events WHERE component = ?"
                       " ORDER BY id DESC LIMIT 1", (event_component(destination),)).fetchone()
    return None if row is None else (float(row[0]), str(row[1]), str(row[2] or ""))


def last_said(conn: sqlite3.Connection, destination: str, message: str) -> float | None:
    """When ``message`` was last recorded for ``destination`` (None: never, or not kept)."""
    row = conn.execute("SELECT at FROM events WHERE component = ? AND message = ?"
                       " ORDER BY id DESC LIMIT 1",
                       (event_component(destination), message)).fetchone()
    return None if row is None else float(row[0])


def destination_figures(conn: sqlite3.Connection, configured: Iterable[str] = ()
                        ) -> list[dict[str, Any]]:
    """Backlog and last error of every destination (configured, or with rows), by name.

    ``waiting``: pending rows; ``oldest_waiting_at``: when the oldest was queued;
    ``attempts``: the most tries any waiting document has had; ``next_attempt_at``;
    ``sent`` and ``last_sent_at``; ``last_error`` and ``last_error_at`` (the newest
    failure recorded in the events, else the error kept on a waiting row) and
    ``last_error_code`` (the event's code, ``storage.event_codes``; "" when none is known);
    ``configured``: whether the destination is in the config; ``held``: documents
    it kept refusing, with ``held_status`` (the C-STORE status, e.g. 0xA900) and
    ``held_error`` (its meaning and the destination's comment) of the newest.
    """
    configured = list(configured)
    figures: dict[str, dict[str, Any]] = {
        name: {"name": name, "waiting": 0, "oldest_waiting_at": None, "attempts": 0,
               "next_attempt_at": None, "sent": 0, "last_sent_at": None, "held": 0}
        for name in configured}
    rows = conn.execute(
        "SELECT destination,"
        " SUM(state = :pending) AS waiting,"
        " MIN(CASE WHEN state = :pending THEN created_at END) AS oldest_waiting_at,"
        " MAX(CASE WHEN state = :pending THEN attempts ELSE 0 END) AS attempts,"
        " MIN(CASE WHEN state = :pending THEN next_attempt_at END) AS next_attempt_at,"
        " SUM(state = :sent) AS sent, MAX(sent_at) AS last_sent_at,"
        " SUM(state = :held) AS held"
        " FROM dicom_outbox GROUP BY destination",
        {"pending": DicomOutboxState.PENDING, "sent": DicomOutboxState.SENT,
         "held": DicomOutboxState.HELD}).fetchall()
    for row in rows:
        figures[row["destination"]] = {
            "name": row["destination"], "waiting": int(row["waiting"] or 0),
            "oldest_waiting_at": row["oldest_waiting_at"], "attempts": int(row["attempts"] or 0),
            "next_attempt_at": row["next_attempt_at"], "sent": int(row["sent"] or 0),
            "last_sent_at": row["last_sent_at"], "held": int(row["held"] or 0)}
    for name, item in figures.items():
        item["configured"] = name in configured
        held = held_documents(conn, name)
        item["held_status"] = held[-1].last_status if held else None
        item["held_error"] = held[-1].last_error if held else None
        event = last_event(conn, name)
        item["last_error_code"] = ""
        if event is not None:
            item["last_error_at"], item["last_error"], item["last_error_code"] = event
        else:
            kept = conn.execute(
                "SELECT last_error FROM dicom_outbox WHERE destination = ? AND state = ?"
                " AND last_error IS NOT NULL ORDER BY attempts DESC, id DESC LIMIT 1",
                (name, DicomOutboxState.PENDING)).fetchone()
            item["last_error_at"], item["last_error"] = None, kept[0] if kept else None
    return [figures[name] for name in sorted(figures)]


def purge(conn: sqlite3.Connection, folder: Path, audit_seconds: float,
          now: float | None = None) -> int:
    """Forget sent and superseded rows older than the audit window (held ones wait for a
    technician), and delete files no row
    needs any more (also files no row ever named, after ORPHAN_GRACE_SECONDS); return how
    many rows were purged. Run it inside a transaction."""
    now = time.time() if now is None else now
    cutoff = now - audit_seconds
    gone = conn.execute(
        "DELETE FROM dicom_outbox WHERE state IN (?, ?)"
        " AND COALESCE(sent_at, created_at) < ? RETURNING path",
        (DicomOutboxState.SENT, DicomOutboxState.SUPERSEDED, cutoff)).fetchall()
    kept = {row[0] for row in conn.execute("SELECT DISTINCT path FROM dicom_outbox")}
    for path in {row[0] for row in gone} - kept:
        Path(path).unlink(missing_ok=True)
    kept_names = {Path(path).name for path in kept}  # names are SOP Instance UIDs: unique
    folder = Path(folder)
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name in kept_names or not path.is_file():
                continue
            try:
                if path.stat().st_mtime < now - ORPHAN_GRACE_SECONDS:
                    path.unlink(missing_ok=True)
            except FileNotFoundError:
                continue
    return len(gone)


#: the triggers that keep ``dicom_outbox.kind`` to the kinds in ``dicom_output_kinds``
#: (made by the schema script, ``storage/schema.py``, and the v15 migration)
KIND_TRIGGERS = ("dicom_outbox_kind_insert", "dicom_outbox_kind_update")


def kind_rule(conn: sqlite3.Connection) -> None:
    """Make ``dicom_output_kinds`` the keys of the table of DICOM outputs now.

    SQLite cannot widen a CHECK without rebuilding the table, so ``dicom_outbox.kind``
    is kept by triggers that look the kind up in ``dicom_output_kinds``, and this (called
    by ``initialise`` whenever the database opens) writes the table's keys there: an
    output added to the table needs no migration. It writes only what changed. Rows of
    an output no longer in the table stay (and are sent); no new one can be added.
    """
    wanted = set(output_keys())
    have = {str(row[0]) for row in conn.execute("SELECT kind FROM dicom_output_kinds")}
    for kind in sorted(have - wanted):
        conn.execute("DELETE FROM dicom_output_kinds WHERE kind = ?", (kind,))
    for kind in sorted(wanted - have):
        conn.execute("INSERT INTO dicom_output_kinds(kind) VALUES (?)", (kind,))
