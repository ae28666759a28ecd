"""The SQLite-backed job queue: one row per received instance.

Rows carry ids and paths, never pixels. Status moves
``queued → processing → processed | quarantined | failed``; a row left in
``processing`` by a crash goes back to ``queued`` at start-up, unless it has
already crashed the worker ``max_attempts`` times, in which case it is marked
failed so one poisonous object cannot stop the box.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from clinibox_common.contracts.reasons import Reason, ReasonCode, encode
from clinibox_common.contracts.statuses import InstanceStatus
from clinibox_common.errors import CliniboxError
from firmware_app.storage import event_codes
from firmware_app.storage.db import object_code, record_event, transaction

#: every instance status, in its order (``contracts/statuses.InstanceStatus``); ``not_analysed``:
#: a good image no model here is meant for (kept apart from quarantine, for broken input)
STATUSES = tuple(InstanceStatus)


class DuplicateInstance(CliniboxError):
    """An instance with this SOP Instance UID is already on the box."""

    kind = "duplicate instance"

    def __init__(self, instance_id: int) -> None:
        super().__init__(f"duplicate of instance {instance_id}")
        self.instance_id = instance_id


@dataclass(frozen=True)
class Job:
    """A claimed queue row handed to the worker."""

    id: int
    local_id: str
    spool_path: Path
    source: str
    sop_instance_uid: str | None
    attempts: int


class JobQueue:
    """Enqueue, claim and finish jobs on one SQLite connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def find_instance(self, sop_instance_uid: str) -> int | None:
        """The row id holding ``sop_instance_uid``, if the box already has it."""
        row = self.conn.execute(
            "SELECT id FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
        ).fetchone()
        return None if row is None else int(row["id"])

    def local_id(self, instance_id: int) -> str:
        """The spool name of instance ``instance_id``."""
        return str(self.conn.execute("SELECT local_id FROM instances WHERE id = ?",
                                     (instance_id,)).fetchone()["local_id"])

    def note_duplicate(self, instance_id: int) -> None:
        """Count a repeated delivery of an instance the box already holds."""
        self.conn.execute(
            "UPDATE instances SET duplicates = duplicates + 1 WHERE id = ?", (instance_id,)
        )

    def enqueue(
        self,
        *,
        local_id: str,
        spool_path: Path,
        size_bytes: int,
        source: str,
        origin: str | None,
        sop_instance_uid: str | None,
    ) -> int:
        """Commit a queued row durably; raise DuplicateInstance on a repeated SOP UID."""
        now = time.time()
        try:
            with transaction(self.conn):
                cursor = self.conn.execute(
                    "INSERT INTO instances(local_id, sop_instance_uid, source, origin, spool_path,"
                    " size_bytes, status, received_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (local_id, sop_instance_uid, source, origin, str(spool_path), size_bytes,
                     InstanceStatus.QUEUED, now, now),
                )
                return int(cursor.lastrowid)
        except sqlite3.IntegrityError:
            existing = self.find_instance(sop_instance_uid) if sop_instance_uid else None
            if existing is None:
                raise
            raise DuplicateInstance(existing) from None

    def recover(self, max_attempts: int) -> tuple[int, int]:
        """After a restart: requeue interrupted jobs; fail those that crashed too often.

        Returns (requeued, failed).
        """
        now = time.time()
        with transaction(self.conn):
            failed = self.conn.execute(
                "UPDATE instances SET status=?, updated_at=?,"
                " reason=json_array(json_object('code', ?, 'params',"
                " json_object('attempts', attempts)))"
                " WHERE status=? AND attempts >= ?",
                (InstanceStatus.FAILED, now, ReasonCode.INTERRUPTED.value,
                 InstanceStatus.PROCESSING, max_attempts),
            ).rowcount
            requeued = self.conn.execute(
                "UPDATE instances SET status=?, updated_at=? WHERE status=?",
                (InstanceStatus.QUEUED, now, InstanceStatus.PROCESSING),
            ).rowcount
            if failed:
                record_event(self.conn, "ERROR", "worker",
                             f"{failed} object(s) failed after repeated interrupted processing",
                             event_codes.code(event_codes.INTERRUPTED, failed))
        return requeued, failed

    def claim(self, attempt: bool = True) -> Job | None:
        """Take the oldest queued job (marking it processing), or None when idle.

        ``attempt=False`` claims it without counting an attempt yet (the worker's
        look-ahead: its decode starts now, its analysis later); ``count_attempt``
        counts it when the analysis begins.
        """
        with transaction(self.conn):
            row = self.conn.execute(
                "UPDATE instances SET status=?, attempts=attempts+?, updated_at=?"
                " WHERE id = (SELECT id FROM instances WHERE status=? ORDER BY id LIMIT 1)"
                " RETURNING id, local_id, spool_path, source, sop_instance_uid, attempts",
                (InstanceStatus.PROCESSING, 1 if attempt else 0, time.time(),
                 InstanceStatus.QUEUED),
            ).fetchone()
        if row is None:
            return None
        return Job(
            id=int(row["id"]),
            local_id=row["local_id"],
            spool_path=Path(row["spool_path"]),
            source=row["source"],
            sop_instance_uid=row["sop_instance_uid"],
            attempts=int(row["attempts"]),
        )

    def count_attempt(self, job_id: int) -> None:
        """Count an attempt for a job claimed with ``claim(attempt=False)``: its analysis
        begins (a crash from here on counts against it at the next start)."""
        with transaction(self.conn):
            self.conn.execute("UPDATE instances SET attempts=attempts+1, updated_at=?"
                              " WHERE id=? AND status=?",
                              (time.time(), job_id, InstanceStatus.PROCESSING))

    def release(self, job_id: int) -> None:
        """Put a claimed job whose analysis never began back in the queue, as it was."""
        with transaction(self.conn):
            self.conn.execute("UPDATE instances SET status=?, updated_at=?"
                              " WHERE id=? AND status=?",
                              (InstanceStatus.QUEUED, time.time(), job_id,
                               InstanceStatus.PROCESSING))

    def set_status(self, job_id: int, status: InstanceStatus | str,
                   reason: str | None = None) -> None:
        """Mark a job (inside the caller's transaction when there is one); ``reason``: its
        reasons in their stored form (``contracts.reasons.encode``)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        self.conn.execute(
            "UPDATE instances SET status=?, reason=?, updated_at=? WHERE id=?",
            (status, reason, time.time(), job_id),
        )

    def retry_later(self, job_id: int, reason: Reason, max_attempts: int) -> InstanceStatus:
        """Put a job that hit a transient error back, or fail it after max_attempts (the
        event log says why in English)."""
        row = self.conn.execute("SELECT attempts FROM instances WHERE id=?", (job_id,)).fetchone()
        status = (InstanceStatus.FAILED if row is None or row["attempts"] >= max_attempts
                  else InstanceStatus.QUEUED)
        with transaction(self.conn):
            self.set_status(job_id, status, encode([reason]))
            record_event(self.conn, "ERROR", "worker", f"instance {job_id}: {reason.english()}",
                         object_code(status, job_id))
        return status

    def local_ids(self) -> set[str]:
        """The spool names (local ids) of every object the box holds a row for."""
        return {row[0] for row in self.conn.execute("SELECT local_id FROM instances")}

    def counts(self) -> dict[str, int]:
        """Number of rows per status, every status present."""
        counts = {status.value: 0 for status in STATUSES}
        for row in self.conn.execute("SELECT status, COUNT(*) AS n FROM instances GROUP BY status"):
            counts[row["status"]] = int(row["n"])
        return counts
