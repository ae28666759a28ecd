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
import time
from dataclasses import dataclass
from pathlib import Path

from clinibox_common.contracts.reasons import Reason, ReasonCode, encode
from clinibox_common.contracts.statuses import InstanceStatus
from firmware_app.storage import db, event_codes
from firmware_app.storage.queue import DuplicateInstance, JobQueue
from firmware_app.storage.spool import Spool, new_local_id

log = logging.getLogger(__name__)

#: C-STORE refusals kept in the event log an hour, in all (each is logged regardless)
REFUSAL_EVENTS_PER_HOUR = 20
#: the code a C-STORE refusal's event is counted by (``events.code``)
REFUSAL_EVENT = "cstore_refused"


class Outcome(enum.Enum):
    """What happened to a landed object."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    #: same SOP Instance UID as an object the box holds, different content: kept aside
    CONFLICT = "conflict"


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
        #: queue rows are committed one at a time in this process: a thread waiting here is
        #: woken the moment the commit before it ends, where SQLite's own busy handler would
        #: let it sleep for milliseconds (several associations landing at once)
        self._commit_lock = threading.Lock()

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
        self._check_size(len(data))
        sop_instance_uid = sop_instance_uid or None  # an empty UID is no UID (found by fuzzing)
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

    def land_file(self, received: Path, *, sop_instance_uid: str | None, source: str,
                  origin: str | None) -> Landed:
        """Land a file already written into the spool's ``tmp`` folder (a data set
        received over DICOM) by renaming it into place: no second copy.

        An identical resend of an instance the box holds is a duplicate (the file is
        dropped); the same SOP Instance UID with different content is a conflict: the
        new object is kept aside in quarantine/conflicts, an event says so (local ids
        only), and it is acknowledged, since it is stored. Raises like ``land``.
        """
        size = received.stat().st_size
        try:
            self._check_size(size)
        except ValueError:
            received.unlink(missing_ok=True)
            raise
        sop_instance_uid = sop_instance_uid or None
        queue = self._queue()
        if sop_instance_uid:
            existing = queue.find_instance(sop_instance_uid)
            if existing is not None:
                return self._repeated(existing, received, origin)
        local_id = new_local_id()
        path = self.spool.adopt(local_id, received)
        try:
            instance_id = self._commit(local_id, path, size, sop_instance_uid, source, origin)
        except DuplicateInstance as dup:  # the same UID on two associations at once
            queue.note_duplicate(dup.instance_id)
            return Landed(Outcome.DUPLICATE, dup.instance_id)
        return Landed(Outcome.ACCEPTED, instance_id)

    def _repeated(self, existing: int, received: Path, origin: str | None) -> Landed:
        """A second delivery of an instance the box holds: duplicate or conflict."""
        queue = self._queue()
        held = [p for p in self.spool.object_files(queue.local_id(existing))[:2] if p.exists()]
        if not held or same_data_set(held[0], received):
            received.unlink(missing_ok=True)
            queue.note_duplicate(existing)
            return Landed(Outcome.DUPLICATE, existing)
        local_id = new_local_id()
        reason = Reason(ReasonCode.CONFLICTING_DUPLICATE,
                        {"instance": existing, "origin": origin or "?"})
        self.spool.keep_conflict(local_id, received, encode([reason]))
        with db.transaction(queue.conn):
            db.record_event(queue.conn, "WARNING", "ingest",
                            f"conflicting duplicate of instance {existing} kept aside as "
                            f"{local_id} (from {origin or 'unknown sender'})",
                            event_codes.code(event_codes.CONFLICT, existing, local_id))
        log.warning("conflicting duplicate of instance %d kept aside as %s", existing, local_id)
        return Landed(Outcome.CONFLICT, existing)

    def note_refused(self, reason: str, origin: str | None, now: float | None = None) -> bool:
        """Keep a C-STORE refusal (its reason code and caller) in the event log for the
        technician: once per reason and caller an hour, at most
        :data:`REFUSAL_EVENTS_PER_HOUR` an hour in all (a peer that lies on every C-STORE
        must not push the box's other events out of the last 1000). Whether it was kept."""
        now = time.time() if now is None else now
        message = f"C-STORE refused: reason={reason} calling={(origin or '?')[:64]!r}"
        conn = self._queue().conn
        with db.transaction(conn):
            if db.event_noted_since(conn, "ingest", message, now - 3600):
                return False
            code = event_codes.code(REFUSAL_EVENT, reason, (origin or "?")[:64])
            return db.record_event_capped(conn, "WARNING", "ingest", message, code,
                                          REFUSAL_EVENTS_PER_HOUR, now=now)

    def land_rejected(self, data: bytes, *, reasons: list[Reason], source: str,
                      origin: str | None) -> int:
        """Keep an object that is bad on arrival: spooled, queued as quarantined, with why."""
        instance_id, local_id = self._store(data[: self.max_object_bytes], None, source, origin)
        queue = self._queue()
        stored = encode(reasons)
        with db.transaction(queue.conn):
            queue.set_status(instance_id, InstanceStatus.QUARANTINED, stored)
        self.spool.quarantine(local_id, stored)
        return instance_id

    def _store(self, data: bytes, sop_instance_uid: str | None, source: str,
               origin: str | None) -> tuple[int, str]:
        """Spool durably, then commit the queue row; undo the spool file if the row fails.

        Returns (instance id, local id).
        """
        local_id = new_local_id()
        path = self.spool.write(local_id, data)
        return self._commit(local_id, path, len(data), sop_instance_uid, source,
                            origin), local_id

    def _commit(self, local_id: str, path: Path, size: int, sop_instance_uid: str | None,
                source: str, origin: str | None) -> int:
        """Commit the queue row of a spooled object; remove the file again if that fails."""
        try:
            with self._commit_lock:
                return self._queue().enqueue(local_id=local_id, spool_path=path,
                                             size_bytes=size, source=source, origin=origin,
                                             sop_instance_uid=sop_instance_uid)
        except (DuplicateInstance, sqlite3.Error, OSError):
            self.spool.discard(local_id)
            raise

    def _check_size(self, size: int) -> None:
        """ValueError for an object over the limit."""
        if size > self.max_object_bytes:
            raise ValueError(f"object is {size // 2**20} MB, over the "
                             f"{self.max_object_bytes // 2**20} MB limit")


def _data_set_start(handle) -> int:
    """Offset of the data set after a Part-10 file's meta group (0 when there is none)."""
    head = handle.read(144)
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        return 0
    return 144 + int.from_bytes(head[140:144], "little")


def same_data_set(a: Path, b: Path, chunk: int = 2**20) -> bool:
    """Whether two Part-10 files carry the same data set (their file meta may differ:
    another sender or implementation wrote it)."""
    with open(a, "rb") as left, open(b, "rb") as right:
        left.seek(_data_set_start(left))
        right.seek(_data_set_start(right))
        while True:
            x, y = left.read(chunk), right.read(chunk)
            if x != y:
                return False
            if not x:
                return True
