"""Land one received object: spool it durably, then commit its queue row.

Both the DICOM SCP and the USB importer go through ``Lander.land``; only when
it returns may the sender be told "stored". A failure at any step raises and
leaves nothing half-done (the spooled file is removed again).
"""

from __future__ import annotations

import enum
import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from firmware_app import db
from firmware_app.queue import DuplicateInstance, JobQueue
from firmware_app.spool import Spool, new_local_id

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    """What happened to a landed object."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Landed:
    """The result of landing one object."""

    outcome: Outcome
    instance_id: int


class Lander:
    """Spool + queue, with one SQLite connection per calling thread."""

    def __init__(self, spool: Spool, database: Path, max_object_bytes: int) -> None:
        self.spool = spool
        self.database = database
        self.max_object_bytes = max_object_bytes
        self._local = threading.local()

    def _queue(self) -> JobQueue:
        queue = getattr(self._local, "queue", None)
        if queue is None:
            queue = JobQueue(db.connect(self.database))
            self._local.queue = queue
        return queue

    def land(
        self, data: bytes, *, sop_instance_uid: str | None, source: str, origin: str | None
    ) -> Landed:
        """Store ``data`` and queue it; a repeated SOP Instance UID is not stored twice.

        Raises OSError (SpoolFull included) or sqlite3.Error when the object could
        not be stored; the caller must then report failure to the sender.
        """
        if len(data) > self.max_object_bytes:
            raise ValueError(
                f"object is {len(data) // 2**20} MB, over the "
                f"{self.max_object_bytes // 2**20} MB limit"
            )
        queue = self._queue()
        if sop_instance_uid:
            existing = queue.find_instance(sop_instance_uid)
            if existing is not None:
                queue.note_duplicate(existing)
                return Landed(Outcome.DUPLICATE, existing)
        try:
            instance_id, _ = self._store(data, sop_instance_uid, source, origin)
        except DuplicateInstance as dup:  # the same object on two associations at once
            queue.note_duplicate(dup.instance_id)
            return Landed(Outcome.DUPLICATE, dup.instance_id)
        return Landed(Outcome.ACCEPTED, instance_id)

    def land_rejected(self, data: bytes, *, reason: str, source: str, origin: str | None) -> int:
        """Keep an object that is bad on arrival: spooled, queued as quarantined, with why."""
        instance_id, local_id = self._store(data[: self.max_object_bytes], None, source, origin)
        queue = self._queue()
        with db.transaction(queue.conn):
            queue.set_status(instance_id, "quarantined", reason)
        self.spool.quarantine(local_id, reason)
        return instance_id

    def _store(self, data: bytes, sop_instance_uid: str | None, source: str,
               origin: str | None) -> tuple[int, str]:
        """Spool durably, then commit the queue row; undo the spool file if the row fails.

        Returns (instance id, local id).
        """
        local_id = new_local_id()
        path = self.spool.write(local_id, data)
        try:
            instance_id = self._queue().enqueue(
                local_id=local_id,
                spool_path=path,
                size_bytes=len(data),
                source=source,
                origin=origin,
                sop_instance_uid=sop_instance_uid,
            )
        except (DuplicateInstance, sqlite3.Error, OSError):
            self.spool.discard(local_id)
            raise
        return instance_id, local_id
