"""What a technician can do with a quarantined (or failed) object: process it again, or delete it.

Both are deliberate acts by a named person, so each is recorded as an event
(``clinibox status`` and the viewer's device page list them). "Process again"
moves the object back into the spool and queues it with its attempts reset
(useful after a model update that accepts the modality, or a codec fix).
"Delete" removes the object, its reason note and its queue row: the sender
may then send it again and it is treated as new.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass

from clinibox_common.contracts.reasons import decode, english
from clinibox_common.contracts.statuses import HELD_STATUSES, InstanceStatus
from clinibox_common.errors import EXIT_USAGE, CliniboxError
from clinibox_common.fs import fsync_dir
from firmware_app.storage import audit, db, event_codes
from firmware_app.storage.spool import Spool

#: Instance states a technician may act on.
ACTIONABLE = HELD_STATUSES


class QuarantineError(CliniboxError, ValueError):
    """A quarantine action that cannot be done, with the reason."""

    kind = "quarantine"
    exit_status = EXIT_USAGE


@dataclass(frozen=True)
class Quarantined:
    """One object held back from processing, with the reason shown to staff."""

    id: int
    local_id: str
    status: str
    #: the stored reasons (``contracts.reasons.decode`` reads them)
    reason: str
    source: str
    size_bytes: int
    received_at: float
    attempts: int

    @property
    def reason_english(self) -> str:
        """The reasons in English (the event log and the audit trail)."""
        return english(decode(self.reason))


#: The columns of ``Quarantined``, read from ``instances``.
_COLUMNS = ("SELECT id, local_id, status, COALESCE(reason, '') AS reason, source, size_bytes,"
            " received_at, attempts FROM instances")


def held_objects(conn: sqlite3.Connection, limit: int = 500) -> list[Quarantined]:
    """Quarantined and failed objects still on the box (not yet deleted by retention), newest
    first."""
    rows = conn.execute(
        f"{_COLUMNS} WHERE status IN ({', '.join('?' * len(ACTIONABLE))})"
        " AND image_deleted_at IS NULL ORDER BY received_at DESC, id DESC LIMIT ?",
        (*ACTIONABLE, limit))
    return [Quarantined(**dict(row)) for row in rows]


def _held(conn: sqlite3.Connection, instance_id: int) -> Quarantined:
    row = conn.execute(f"{_COLUMNS} WHERE id = ?", (instance_id,)).fetchone()
    if row is None:
        raise QuarantineError(f"object {instance_id} does not exist")
    if row["status"] not in ACTIONABLE:
        raise QuarantineError(f"object {instance_id} is {row['status']}, not quarantined")
    deleted = conn.execute("SELECT image_deleted_at FROM instances WHERE id = ?",
                           (instance_id,)).fetchone()[0]
    if deleted is not None:
        raise QuarantineError(f"object {instance_id} was deleted by retention on "
                              f"{time.strftime('%Y-%m-%d', time.localtime(deleted))}")
    return Quarantined(**dict(row))


def process_again(conn: sqlite3.Connection, spool: Spool, instance_id: int, by: str,
                  address: str = "") -> None:
    """Put a quarantined or failed object back in the queue (attempts reset); recorded as an
    event and in the audit trail (``by`` from ``address``)."""
    held = _held(conn, instance_id)
    target = spool.path_for(held.local_id)
    kept = spool.held_path(held.local_id)
    if kept.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(kept, target)
        fsync_dir(target.parent)
    if not target.exists():
        raise QuarantineError(f"object {instance_id}: the file is gone from the box")
    with db.transaction(conn):
        conn.execute(
            "UPDATE instances SET status=?, attempts=0, reason=NULL, spool_path=?,"
            " updated_at=? WHERE id=?",
            (InstanceStatus.QUEUED, str(target), time.time(), instance_id))
        db.record_event(conn, "INFO", "quarantine",
                        f"object {instance_id} queued again by {by} (was: {held.reason_english})",
                        event_codes.code(event_codes.REQUEUED, instance_id, by))
        audit.record(conn, "quarantine_requeued", account=by, address=address,
                     target=f"object:{instance_id}",
                     detail=f"{held.status}: {held.reason_english}")
    spool.reason_path(held.local_id).unlink(missing_ok=True)


def delete(conn: sqlite3.Connection, spool: Spool, instance_id: int, by: str,
           address: str = "") -> None:
    """Remove a quarantined or failed object and its queue row, recording who did it (an
    event, and the audit trail with ``address``)."""
    held = _held(conn, instance_id)
    with db.transaction(conn):
        conn.execute("DELETE FROM feedback WHERE instance_id=?", (instance_id,))
        conn.execute("DELETE FROM results WHERE instance_id=?", (instance_id,))
        conn.execute("DELETE FROM instances WHERE id=?", (instance_id,))
        db.record_event(conn, "INFO", "quarantine",
                        f"object {instance_id} deleted by {by} (was: {held.reason_english})",
                        event_codes.code(event_codes.DELETED, instance_id, by))
        audit.record(conn, "quarantine_deleted", account=by, address=address,
                     target=f"object:{instance_id}",
                     detail=f"{held.status}: {held.reason_english}")
    for path in spool.object_files(held.local_id):
        path.unlink(missing_ok=True)
