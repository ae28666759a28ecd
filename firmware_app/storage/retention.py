"""Retention: delete received images once they are old or the disk is filling; keep the results.

``clinibox retention`` (run hourly by a systemd timer) makes one pass:

1. **Age.** The image of every *safe* processed instance that arrived more than
   ``[retention] image_days`` ago (0: never by age).
2. **Quarantine age.** Every held object (``quarantined`` or ``failed``) that
   arrived more than ``quarantine_days`` ago (0: never by age): its file,
   wherever it lies (``quarantine/<id>.dcm`` or the spool), and its
   ``.reason.json`` note (the reason itself stays in the row).
3. **Disk.** While the disk holding the state folder is more than
   ``max_disk_used_pct`` used: the oldest safe processed images first, then,
   only if that was not enough, the oldest held objects. Processed images go
   first because their findings stay on the box; a held object has no result
   and may still be rescued with "process again", but a full disk stops the
   box receiving anything, so in the end it goes too, unless
   ``quarantine_days = 0`` ("keep them") says otherwise. Usage is estimated by
   subtracting the bytes freed and measured again (``disk_usage``) each time
   the estimate says the target is reached.
4. **Kept documents.** The result documents kept for the box's DICOMweb service
   (``kept_documents``) of every study none of whose images is left.

**Safe** (exactly; checked in SQL inside the same write transaction that marks
the row, so nothing can change in between). A processed image may be deleted
only when all of these hold:

* the instance is ``processed`` (``queued`` and ``processing`` never qualify:
  an object a technician just put back with "process again" is ``queued``
  again and so protected until it is processed anew);
* its ``results`` row is committed (the worker stores the result and marks
  the row processed in one transaction, so a committed ``processed`` row
  always has one; the join checks it anyway);
* the telemetry producer has already turned it into outbox messages:
  if its study alerted (``studies.alert``, or the result's own flag when the
  study row is missing) every alert of the study's latest completion is
  queued (one per study and model: ``studies.alerts_done_at``, committed
  together with those alert messages, ``storage.study_alerts``); and the
  summary period holding the result has been queued: ``results.created_at <
  telemetry_state summary_end`` (periods are ``[start, end)``, so a result
  made exactly at ``summary_end`` belongs to the next one; no
  ``summary_end`` yet means nothing is safe);
* its study is complete since its last result (``studies.completed_at``,
  ``storage.study_completion``): the study's DICOM results, made from its
  images, are written and queued, and its alerts may be.

Those messages stay in the SQLite outbox until the broker acknowledges them,
and none of them carries or needs a pixel, so once they are queued the image
is needed by nobody but the viewer, which then says it was deleted. A held
object has no result and no message built from its file (the summary counts
held objects from the row's status and ``updated_at``); its final state is
enough. Retention never changes ``status`` or ``updated_at``, so those counts
do not move.

**Kept.** The ``instances``, ``results``, ``studies``, feedback and outbox rows
all stay. A deleted image is marked with ``instances.image_deleted_at`` (and
its size in pixels, read from the DICOM header just before, in
``image_rows``/``image_columns``, so the viewer can still say where a finding
lies); the viewer and ``clinibox status`` read the mark.

**Crash safety: the mark first, then the file.** Each batch marks its rows in
one committed transaction and only then unlinks the files. A crash in
between leaves rows that say "deleted" over files still on disk, never a row
that says "present" over a missing file (the viewer would then fail where it
should explain). Every pass is a ``retention_passes`` row finished at its
end; a pass that finds an unfinished one (a crash) deletes again the files of
every row marked since that pass started. A file already missing is not an
error: its row is marked and counted as ``missing``. One pass runs at a time
(``flock`` on ``<state_dir>/retention.lock``). Each real pass is recorded as
an event with its counts; a dry run changes nothing, records nothing, and
estimates the disk use after it.

**The audit trail.** Each real pass also prunes the audit rows older than
``[audit] keep_days`` (``storage.audit.prune``: from the front of the hash
chain, whose anchor moves past them; a broken chain is never pruned); a dry
run counts them.

Logs and events carry counts, bytes and percentages only, never a patient
string or UID.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clinibox_common.contracts.statuses import FINISHED_STATUSES, InstanceStatus
from clinibox_common.errors import EXIT_OK, CliniboxError
from firmware_app.settings.box import Config
from firmware_app.storage import audit, db, disk, event_codes, kept_documents
from firmware_app.storage.spool import PREVIEW_SUFFIX, Spool

log = logging.getLogger(__name__)

DAY = 86_400.0
#: Rows selected and marked per write transaction (keeps the worker's waits short).
BATCH = 200
#: retention_passes rows kept.
PASSES_KEPT = 200

DiskUsage = Callable[[Path], Any]

#: Processed instances whose image is present and safe to delete (see the module docstring),
#: oldest first, after a (received_at, id) key. ``+i.status`` keeps SQLite off the status
#: index, so it walks the partial index of present images in order and stops at LIMIT
#: (about 1 ms a batch at 100,000 instances) instead of sorting every processed row.
_SAFE_IMAGES = (
    "SELECT i.id, i.local_id, i.received_at FROM instances i"
    " JOIN results r ON r.instance_id = i.id"
    " LEFT JOIN studies s ON s.study_key = i.study_instance_uid"
    " WHERE i.image_deleted_at IS NULL AND +i.status = :processed"
    " AND i.received_at < :cutoff AND (i.received_at, i.id) > (:after_at, :after_id)"
    " AND r.created_at < :summary_end"
    " AND s.completed_at >= s.updated_at"
    " AND (COALESCE(s.alert, r.alert) = 0 OR s.alerts_done_at >= s.completed_at)"
    " ORDER BY i.received_at, i.id LIMIT :limit")
#: Held objects (quarantined or failed) whose file is present, oldest first.
_HELD = (
    "SELECT i.id, i.local_id, i.received_at FROM instances i"
    " WHERE i.image_deleted_at IS NULL"
    " AND +i.status IN (:quarantined, :failed, :not_analysed)"
    " AND i.received_at < :cutoff AND (i.received_at, i.id) > (:after_at, :after_id)"
    " ORDER BY i.received_at, i.id LIMIT :limit")


class RetentionBusy(CliniboxError, RuntimeError):
    """Another retention pass holds the lock."""

    kind = "retention busy"


@dataclass
class Tally:
    """Images deleted (or that a dry run would delete) for one reason, and their bytes."""

    images: int = 0
    bytes: int = 0

    def add(self, freed: int) -> None:
        """Count one image of ``freed`` bytes."""
        self.images += 1
        self.bytes += freed


@dataclass
class RetentionReport:
    """What one pass deleted, or would delete in a dry run."""

    dry_run: bool
    at: float
    limits: dict[str, float]
    by_age: Tally = field(default_factory=Tally)
    quarantine: Tally = field(default_factory=Tally)
    for_disk: Tally = field(default_factory=Tally)
    held_for_disk: Tally = field(default_factory=Tally)
    #: rows marked whose file was already gone (included in the tallies, 0 bytes)
    missing: int = 0
    #: files of rows marked by an interrupted earlier pass, deleted now
    resumed: int = 0
    disk_used_pct_before: float = 0.0
    disk_used_pct_after: float = 0.0
    #: True when the disk is still above the limit with nothing safe left to delete
    disk_still_full: bool = False
    #: arrival time of the oldest image still on the box after the pass (None: none left)
    oldest_kept: float | None = None
    #: audit rows pruned as older than ``[audit] keep_days`` (or that a dry run would prune)
    audit_rows: int = 0
    #: instance ids deleted (or that would be), oldest first per step; not printed
    instance_ids: list[int] = field(default_factory=list, repr=False)

    @property
    def images(self) -> int:
        """Images deleted in all."""
        return sum(t.images for t in self._tallies())

    @property
    def bytes(self) -> int:
        """Bytes freed in all."""
        return sum(t.bytes for t in self._tallies())

    def _tallies(self) -> tuple[Tally, ...]:
        return (self.by_age, self.quarantine, self.for_disk, self.held_for_disk)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready figures (counts, bytes, dates; no ids, no patient data)."""
        out = asdict(self)
        del out["instance_ids"]
        out.update(images=self.images, bytes=self.bytes, at=_iso(self.at),
                   oldest_kept=_iso(self.oldest_kept),
                   disk_used_pct_before=round(self.disk_used_pct_before, 2),
                   disk_used_pct_after=round(self.disk_used_pct_after, 2))
        return out

    def code(self) -> str:
        """The pass's event code (``storage.event_codes.RETENTION``)."""
        return event_codes.code(event_codes.RETENTION, self.images, self.bytes,
                                int(self.disk_still_full), int(self.dry_run))

    def summary(self) -> str:
        """One line for the log and the event."""
        verb = "would delete" if self.dry_run else "deleted"
        still = "; disk still above the limit, nothing safe left" if self.disk_still_full else ""
        if self.audit_rows:
            days = self.limits.get("audit_days", 0)
            still += f"; {self.audit_rows} audit row(s) older than {days:g} days"
        return (f"retention{' (dry run)' if self.dry_run else ''}: {verb} {self.images} "
                f"image(s), {mb_text(self.bytes)}: {self.by_age.images} by age, "
                f"{self.quarantine.images} held by age, "
                f"{self.for_disk.images + self.held_for_disk.images} for disk space; "
                f"{self.missing} already gone, {self.resumed} left by an interrupted pass; "
                f"disk {self.disk_used_pct_before:.1f} % -> {self.disk_used_pct_after:.1f} %"
                f"{still}")


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch))


def mb_text(count: int) -> str:
    """Bytes in the unit that reads best: 512 B, 4.2 kB, 37.5 MB, 1.3 GB."""
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def _used_pct(usage: Any) -> float:
    return 100.0 * usage.used / usage.total if usage.total else 0.0


def _image_size(path: Path) -> tuple[int | None, int | None]:
    """(rows, columns) from the DICOM header, or (None, None) when it cannot be read."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        return int(ds.Rows), int(ds.Columns)
    except Exception:  # a missing or unreadable file only loses the words "upper left"
        return None, None


@dataclass
class _Doomed:
    """One object chosen in a batch: its files and their size."""

    id: int
    received_at: float
    files: list[Path]
    bytes: int
    present: bool
    rows: int | None = None
    columns: int | None = None


@contextlib.contextmanager
def _pass_lock(state_dir: Path) -> Iterator[None]:
    """Hold ``<state_dir>/retention.lock`` for one pass, or raise RetentionBusy."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / "retention.lock", os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RetentionBusy("another retention pass is running") from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class _Pass:
    """The three steps of one retention pass over one database connection."""

    def __init__(self, conn: sqlite3.Connection, config: Config, now: float, dry_run: bool,
                 disk_usage: DiskUsage) -> None:
        self.conn = conn
        self.config = config
        self.spool = Spool(config.spool_dir, config.quarantine_dir)
        self.now = now
        self.dry_run = dry_run
        self.disk_usage = disk_usage
        keep = config.retention
        self.report = RetentionReport(dry_run=dry_run, at=now, limits={
            "image_days": keep.image_days, "quarantine_days": keep.quarantine_days,
            "max_disk_used_pct": keep.max_disk_used_pct,
            "audit_days": config.audit.keep_days})
        #: ids chosen so far (a dry run marks nothing, so later steps must skip them)
        self.chosen: set[int] = set()
        found = conn.execute(
            "SELECT value FROM telemetry_state WHERE name = 'summary_end'").fetchone()
        self.summary_end = None if found is None else float(found[0])

    def run(self) -> RetentionReport:
        """Age, quarantine age, then disk; the report with the oldest image kept."""
        keep, report = self.config.retention, self.report
        before = self.disk_usage(self.config.state_dir)
        report.disk_used_pct_before = _used_pct(before)
        self.by_age(True, keep.image_days, report.by_age)
        self.by_age(False, keep.quarantine_days, report.quarantine)
        self.for_disk(before)
        report.oldest_kept = self.oldest_kept()
        return report

    def _select(self, images: bool, cutoff: float, after: tuple[float, int]) -> list[sqlite3.Row]:
        params = {"cutoff": cutoff, "after_at": after[0], "after_id": after[1],
                  "limit": BATCH, "summary_end": self.summary_end,
                  **{status.value: status for status in InstanceStatus}}
        return self.conn.execute(_SAFE_IMAGES if images else _HELD, params).fetchall()

    def _choose(self, rows: list[sqlite3.Row], images: bool,
                budget: float | None) -> tuple[list[_Doomed], bool]:
        """The rows to delete, in order; True when it stopped because ``budget`` was reached."""
        chosen: list[_Doomed] = []
        freed = 0
        for row in rows:
            if row["id"] in self.chosen:
                continue
            files = object_files(self.spool, row["local_id"])
            size, present = 0, False
            for path in files:
                with contextlib.suppress(FileNotFoundError):
                    size += path.stat().st_size
                    # the image itself (spooled or held), not a preview left beside it
                    present = present or not path.name.endswith(PREVIEW_SUFFIX)
            doomed = _Doomed(row["id"], row["received_at"], files, size, present)
            if images and present and not self.dry_run:
                doomed.rows, doomed.columns = _image_size(files[0])
            chosen.append(doomed)
            freed += size
            if budget is not None and freed >= budget:
                return chosen, True
        return chosen, False

    def batch(self, images: bool, cutoff: float, after: tuple[float, int],
              budget: float | None, tally: Tally) -> tuple[list[_Doomed], tuple[float, int] | None]:
        """Select, mark (committed), then unlink one batch.

        Returns the objects deleted and the key to continue after (None: no more candidates).
        """
        if self.dry_run:
            rows = self._select(images, cutoff, after)
            doomed, reached = self._choose(rows, images, budget)
        else:
            with db.transaction(self.conn):
                rows = self._select(images, cutoff, after)
                doomed, reached = self._choose(rows, images, budget)
                self.conn.executemany(
                    "UPDATE instances SET image_deleted_at = ?, image_rows = ?,"
                    " image_columns = ? WHERE id = ? AND image_deleted_at IS NULL",
                    [(self.now, d.rows, d.columns, d.id) for d in doomed])
            for d in doomed:  # only now that the marks are committed
                for path in d.files:
                    path.unlink(missing_ok=True)
        for d in doomed:
            self.chosen.add(d.id)
            self.report.instance_ids.append(d.id)
            tally.add(d.bytes)
            self.report.missing += not d.present
        if reached:
            return doomed, (doomed[-1].received_at, doomed[-1].id)
        if len(rows) < BATCH:
            return doomed, None
        return doomed, (rows[-1]["received_at"], rows[-1]["id"])

    def by_age(self, images: bool, days: float, tally: Tally) -> None:
        """Delete every candidate that arrived more than ``days`` ago (0 days: none)."""
        if days <= 0:
            return
        cutoff = self.now - days * DAY
        cutoff -= clock_moved_since(self.conn, cutoff)
        after: tuple[float, int] | None = (-math.inf, 0)
        while after is not None:
            _, after = self.batch(images, cutoff, after, None, tally)

    def for_disk(self, before: Any) -> None:
        """Oldest safe images, then oldest held objects, until the disk is below the limit.

        ``before`` is the usage measured at the start of the pass; a real pass
        measures again (the age steps freed space), a dry run subtracts what
        they would have freed.
        """
        root, report = self.config.state_dir, self.report
        if self.dry_run:
            usage = before
            used = float(before.used) - report.by_age.bytes - report.quarantine.bytes
        else:
            usage = self.disk_usage(root)
            used = float(usage.used)
        total = float(usage.total)
        limit = total * self.config.retention.max_disk_used_pct / 100.0
        steps = [(True, self.report.for_disk)]
        if self.config.retention.quarantine_days > 0:  # 0 keeps held objects, full disk or not
            steps.append((False, self.report.held_for_disk))
        for images, tally in steps:
            after: tuple[float, int] | None = (-math.inf, 0)
            while used > limit and after is not None:
                doomed, after = self.batch(images, math.inf, after, used - limit, tally)
                used -= sum(d.bytes for d in doomed)
                if used <= limit and not self.dry_run:  # the estimate says done: measure
                    used = float(self.disk_usage(root).used)
        self.report.disk_still_full = used > limit
        self.report.disk_used_pct_after = 100.0 * used / total if total else 0.0

    def oldest_kept(self) -> float | None:
        """Arrival time of the oldest object whose file is still on the box after this pass."""
        for row in self.conn.execute("SELECT id, received_at FROM instances"
                                     " WHERE image_deleted_at IS NULL ORDER BY received_at, id"):
            if row["id"] not in self.chosen:
                return float(row["received_at"])
        return None


def clock_moved_since(conn: sqlite3.Connection, since: float) -> float:
    """Seconds the clock was moved forward since ``since`` (the hospital's time,
    ``ops/hospital_clock.py``: ``clock_moved:<minutes>`` events). What arrived before such a
    move was stamped by the clock that was behind and looks that much older than it is: an
    age limit is pushed back by it, so a jump of the clock never deletes an image early."""
    moved = 0.0
    for (code,) in conn.execute("SELECT code FROM events WHERE code LIKE ? AND at >= ?",
                                (f"{event_codes.CLOCK_MOVED}:%", since)):
        _, found = event_codes.parts(code, 1)
        if found and found[0].isdigit():
            moved += int(found[0]) * 60.0
    return moved


def object_files(spool: Spool, local_id: str) -> list[Path]:
    """Every file an object may have: the spool copy, a quarantined copy, the reason note.

    Found by the object's local id (as ``quarantine.delete`` does), never by a
    stored path; an id that is not a local id has no files.
    """
    try:
        return spool.object_files(local_id)
    except ValueError:
        return []


def _resume(conn: sqlite3.Connection, spool: Spool) -> int:
    """Delete the files an interrupted pass marked but left; return how many objects had some."""
    started = conn.execute("SELECT MIN(started_at) FROM retention_passes"
                            " WHERE finished_at IS NULL").fetchone()[0]
    if started is None:
        return EXIT_OK
    removed = 0
    for row in conn.execute("SELECT local_id FROM instances WHERE image_deleted_at >= ?"
                            f" AND status IN ({', '.join('?' * len(FINISHED_STATUSES))})",
                            (started, *FINISHED_STATUSES)).fetchall():
        found = False
        for path in object_files(spool, row[0]):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                found = True
        removed += found
    with db.transaction(conn):
        conn.execute("UPDATE retention_passes SET finished_at = ? WHERE finished_at IS NULL",
                     (time.time(),))
    return removed


def apply_retention(conn: sqlite3.Connection, config: Config, *, now: float | None = None,
                    dry_run: bool = False,
                    disk_usage: DiskUsage = disk.usage) -> RetentionReport:
    """Run one retention pass (see the module docstring) and return what it deleted.

    ``now`` is the pass's clock (tests move it); ``disk_usage(path)`` returns an
    object with ``total`` and ``used`` bytes (``storage.disk.usage`` on the box: the figure
    the device page, ``clinibox status`` and the self-test show).
    A dry run deletes, marks and records nothing. Raises RetentionBusy when
    another pass is running.
    """
    now = time.time() if now is None else now
    if dry_run:
        report = _Pass(conn, config, now, True, disk_usage).run()
        report.audit_rows = audit.would_prune(conn, config.audit.keep_days, now)
        log.info("%s", report.summary())
        return report
    with _pass_lock(config.state_dir):
        step = _Pass(conn, config, now, False, disk_usage)
        resumed = _resume(conn, step.spool)
        with db.transaction(conn):
            pass_id = int(conn.execute("INSERT INTO retention_passes(started_at) VALUES (?)",
                                       (now,)).lastrowid)
        report = step.run()
        report.resumed = resumed
        report.audit_rows = audit.prune(conn, config.audit.keep_days, now)
        with db.transaction(conn):  # a study's kept documents go with its last image
            forgotten = kept_documents.forget_without_images(conn)
        for path in forgotten:
            path.unlink(missing_ok=True)
        level = logging.WARNING if report.disk_still_full else logging.INFO
        with db.transaction(conn):
            conn.execute("UPDATE retention_passes SET finished_at = ?, images = ?, bytes = ?"
                         " WHERE id = ?", (time.time(), report.images, report.bytes, pass_id))
            conn.execute("DELETE FROM retention_passes WHERE id <= ?", (pass_id - PASSES_KEPT,))
            db.record_event(conn, logging.getLevelName(level), "retention", report.summary(),
                            report.code())
    log.log(level, "%s", report.summary())
    return report


def status_figures(conn: sqlite3.Connection) -> dict[str, Any]:
    """For ``clinibox status``: images deleted by retention so far, and the last pass."""
    deleted = conn.execute("SELECT COUNT(*) FROM instances"
                           " WHERE image_deleted_at IS NOT NULL").fetchone()[0]
    last = conn.execute("SELECT started_at FROM retention_passes WHERE finished_at IS NOT NULL"
                        " ORDER BY id DESC LIMIT 1").fetchone()
    return {"images_deleted_by_retention": int(deleted),
            "last_retention_pass": None if last is None else _iso(last[0])}
