"""Import from USB media and plain folders.

The importer watches one folder (media are mounted below it, read-only; a
plain folder works the same for tests and for network shares). Each scan
walks it, and takes a file only once its size and modification time have
stayed the same for ``settle_seconds``. The medium is never modified: files
are copied into the spool, and what was taken is remembered in the database
(path, size, mtime) so it is taken once. Links are never followed out of the
watched folder, and folder links are not followed at all.

What is taken:
- DICOM Part-10 files (``DICM`` at offset 128), whatever their name;
- files listed in a DICOMDIR (so media with ISO-9660 names work; a listed file
  that is missing is reported);
- PNG and JPEG exports, wrapped as Secondary Capture objects with a local id.
Files named like images (``.dcm``, ``.png``, …) whose content is not one are
kept in quarantine with the reason, and so is a DICOM file whose file meta names
a SOP Instance UID that is not a valid UID (reason ``invalid_uid``, as the DICOM
port refuses it); other files (viewers, READMEs) are skipped.

After each scan the importer replaces ``import-status.json`` (see
``import_status_path``): when the scan started and finished, and per top-level
folder how many files still wait to settle, failed to be stored, or sit in
folders it cannot read. ``clinibox usb-import`` (``ingest/usb_mount.py``)
reads it to know when a medium mounted as ``<watch_dir>/usb-<device>`` has
been imported and may be unmounted.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.filereader import read_file_meta_info

from clinibox_common.contracts.reasons import MAX_TEXT, Reason, ReasonCode
from clinibox_common.contracts.statuses import ImportOutcome, skipped
from engine.imaging.dataset_values import valid_uid
from engine.imaging.wrap import is_picture, wrap_picture
from firmware_app.ingest.landing import Lander, Outcome
from firmware_app.ingest.store_checks import Refusal
from firmware_app.storage import db, event_codes
from firmware_app.storage.imported_files import already_imported, remember_import

log = logging.getLogger(__name__)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: name of the status file written after each scan
IMPORT_STATUS_FILE = "import-status.json"
#: a folder for the status file that is not on flash (the units set /run/clinibox)
RUNTIME_DIR_ENV = "CLINIBOX_RUNTIME_DIR"
STATUS_FORMAT = 1
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ".ima"}
PICTURE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass
class ScanReport:
    """What one scan did."""

    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    skipped: int = 0
    waiting: int = 0
    errors: list[str] = field(default_factory=list)
    #: per top-level entry of the watched folder ("" for files at its top):
    #: counts of "waiting", "errors", "taken" and "unreadable" (folders)
    folders: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, folder: str, what: str) -> None:
        """Add one to ``what`` of ``folder``."""
        tally = self.folders.setdefault(
            folder, {"waiting": 0, "errors": 0, "taken": 0, "unreadable": 0})
        tally[what] += 1


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    stable_since: float


def import_status_path(state_dir: Path) -> Path:
    """Where the importer writes its status after each scan.

    ``$CLINIBOX_RUNTIME_DIR`` (the units set ``/run/clinibox``, a tmpfs, so a scan
    every few seconds does not wear the box's flash) or else the state folder.
    """
    runtime = os.environ.get(RUNTIME_DIR_ENV, "")
    return (Path(runtime) if runtime else Path(state_dir)) / IMPORT_STATUS_FILE


@functools.cache
def boot_id() -> str:
    """This boot's id: monotonic clock readings compare only within one boot.

    Empty where /proc/sys is hidden (the units' ``ProcSubset=pid``); there the status
    lives in /run/clinibox, which a reboot empties anyway.
    """
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _inside(root: Path, path: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


class FolderImporter:
    """Scan a watched folder and land new files through a Lander."""

    def __init__(
        self,
        watch_dir: Path,
        lander: Lander,
        database: Path,
        *,
        settle_seconds: float = 2.0,
        max_depth: int = 12,
        status_path: Path | None = None,
    ) -> None:
        self.root = Path(watch_dir).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.lander = lander
        self.conn = db.connect(database)
        self.settle_seconds = settle_seconds
        self.max_depth = max_depth
        self._seen: dict[Path, _Seen] = {}
        self._warned_missing: set[Path] = set()
        #: folders the last walk could not read
        self._unreadable: list[Path] = []
        #: the status file; by default next to the database (the state folder)
        self.status_path = (Path(status_path) if status_path is not None
                            else import_status_path(Path(database).parent))
        self._status_warned = False
        #: DICOMDIR path → ((size, mtime_ns), referenced files), parsed once per version
        self._dicomdirs: dict[Path, tuple[tuple[int, int], list[Path]]] = {}

    # -- walking -------------------------------------------------------
    def _walk(self) -> list[Path]:
        files: list[Path] = []
        self._unreadable = []
        stack: list[tuple[Path, int]] = [(self.root, 0)]
        while stack:
            folder, depth = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError as exc:
                log.warning("cannot read %s: %s", folder, exc.strerror)
                self._unreadable.append(folder)
                continue
            for entry in entries:
                path = Path(entry.path)
                if entry.is_symlink():
                    target = path.resolve()
                    if _inside(self.root, target) and target.is_file():
                        files.append(target)
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if depth + 1 < self.max_depth:
                        stack.append((path, depth + 1))
                elif entry.is_file(follow_symlinks=False):
                    files.append(path)
        found = set(files)
        for path in files:
            if path.name.upper() == "DICOMDIR":
                found.update(self._dicomdir_members(path))
        return sorted(found)

    def _dicomdir_members(self, path: Path) -> list[Path]:
        """Files a DICOMDIR references that exist inside the watched folder.

        The DICOMDIR is parsed again only when its size or mtime change; a
        listed file that is missing is reported once.
        """
        try:
            stat = path.stat()
        except OSError:
            return []
        version = (stat.st_size, stat.st_mtime_ns)
        cached = self._dicomdirs.get(path)
        if cached is None or cached[0] != version:
            cached = (version, self._read_dicomdir(path))
            self._dicomdirs[path] = cached
        members = []
        for member in cached[1]:
            if member.is_file():
                members.append(member)
            elif member not in self._warned_missing:
                self._warned_missing.add(member)
                relative = member.relative_to(self.root)
                db.record_event(self.conn, "WARNING", "usb",
                                f"DICOMDIR lists {relative}, which is missing on the medium",
                                event_codes.code(event_codes.DICOMDIR_MISSING, relative))
        return members

    def _read_dicomdir(self, path: Path) -> list[Path]:
        """The referenced file paths of one DICOMDIR, inside the watched folder only."""
        try:
            records = dcmread(path, force=False).get("DirectoryRecordSequence", [])
        except Exception as exc:  # a damaged DICOMDIR must not stop the scan
            log.warning("DICOMDIR %s unreadable: %s", path, exc)
            return []
        referenced = []
        for record in records:
            file_id = record.get("ReferencedFileID")
            if not file_id:
                continue
            parts = [file_id] if isinstance(file_id, str) else list(file_id)
            member = path.parent.joinpath(*parts).resolve()
            if _inside(self.root, member):
                referenced.append(member)
        return referenced

    # -- taking files --------------------------------------------------
    def _already_taken(self, path: Path, size: int, mtime_ns: int) -> bool:
        return already_imported(self.conn, path, size, mtime_ns)

    def _remember(self, path: Path, size: int, mtime_ns: int, outcome: str,
                  instance_id: int | None) -> None:
        remember_import(self.conn, path, size, mtime_ns, outcome, instance_id)

    def _is_stable(self, path: Path, size: int, mtime_ns: int, now: float) -> bool:
        seen = self._seen.get(path)
        if seen is None or seen.size != size or seen.mtime_ns != mtime_ns:
            self._seen[path] = _Seen(size, mtime_ns, now)
            return self.settle_seconds == 0
        return now - seen.stable_since >= self.settle_seconds

    def _take(self, path: Path, data: bytes, report: ScanReport) -> tuple[str, int | None]:
        origin = f"usb:{path.relative_to(self.root)}" if _inside(self.root, path) else "usb"
        head = data[:132]
        if len(head) == 132 and head[128:132] == b"DICM":
            sop_uid, sop_class = _file_meta_uids(path)
            if sop_class == DICOMDIR_SOP_CLASS:
                report.skipped += 1
                return ImportOutcome.DICOMDIR_INDEX, None
            if sop_uid is not None and not valid_uid(sop_uid):
                # as a C-STORE with that UID is refused (store_checks): kept aside, with why
                instance = self.lander.land_rejected(
                    data, reasons=[Reason(ReasonCode.INVALID_UID)], source="usb", origin=origin)
                log.warning("%s quarantined: reason=%s", path.name, Refusal.INVALID_UID.value)
                report.quarantined += 1
                return ImportOutcome.QUARANTINED, instance
            landed = self.lander.land(data, sop_instance_uid=sop_uid, source="usb", origin=origin)
        elif is_picture(head):
            try:
                wrapped = wrap_picture(data)
            except ValueError as exc:
                unreadable = Reason(ReasonCode.PICTURE_UNREADABLE, {"detail": str(exc)[:MAX_TEXT]})
                instance = self.lander.land_rejected(
                    data, reasons=[unreadable], source="usb", origin=origin)
                report.quarantined += 1
                return ImportOutcome.QUARANTINED, instance
            landed = self.lander.land(wrapped, sop_instance_uid=None, source="usb", origin=origin)
        elif path.suffix.lower() in DICOM_SUFFIXES | PICTURE_SUFFIXES:
            # named like an image but it is not one: keep (the start of) it, with the reason
            reasons = [Reason(ReasonCode.NOT_AN_IMAGE_FILE if data else ReasonCode.EMPTY_FILE)]
            if len(data) > JUNK_EXCERPT_BYTES:
                reasons.append(Reason(ReasonCode.EXCERPT_KEPT, {
                    "kept_mb": JUNK_EXCERPT_BYTES // 2**20, "size_mb": round(len(data) / 2**20)}))
            instance = self.lander.land_rejected(data[:JUNK_EXCERPT_BYTES], reasons=reasons,
                                                 source="usb", origin=origin)
            report.quarantined += 1
            return ImportOutcome.QUARANTINED, instance
        else:
            report.skipped += 1
            return skipped("not an image"), None
        if landed.outcome is Outcome.DUPLICATE:
            report.duplicates += 1
            return ImportOutcome.DUPLICATE, landed.instance_id
        report.accepted += 1
        return ImportOutcome.ACCEPTED, landed.instance_id

    def scan_once(self, now: float | None = None) -> ScanReport:
        """Walk the folder once and take every file that has settled."""
        started, started_at = time.monotonic(), time.time()
        now = started if now is None else now
        report = ScanReport()
        present = self._walk()
        for folder in self._unreadable:
            report.count(self._top_folder(folder), "unreadable")
        for path in present:
            try:
                stat = path.stat()
            except OSError:
                continue
            if self._already_taken(path, stat.st_size, stat.st_mtime_ns):
                continue
            if not self._is_stable(path, stat.st_size, stat.st_mtime_ns, now):
                report.waiting += 1
                report.count(self._top_folder(path), "waiting")
                continue
            try:
                refusal = size_refusal(stat, self.lander.max_object_bytes)
                if refusal is not None:  # never copied: a small record says why
                    origin = f"usb:{path.relative_to(self.root)}"
                    instance_id = self.lander.land_rejected(b"", reasons=[refusal], source="usb",
                                                            origin=origin)
                    report.quarantined += 1
                    log.warning("%s refused without copying: %s", path.name, refusal.english())
                    self._remember(path, stat.st_size, stat.st_mtime_ns, ImportOutcome.REFUSED,
                                   instance_id)
                    report.count(self._top_folder(path), "taken")
                    self._seen.pop(path, None)
                    continue
                with open(path, "rb") as handle:
                    data = handle.read()
                if len(data) != stat.st_size:
                    report.waiting += 1  # still being written after all
                    report.count(self._top_folder(path), "waiting")
                    self._seen.pop(path, None)
                    continue
                outcome, instance_id = self._take(path, data, report)
            except (OSError, sqlite3.Error) as exc:
                # Could not store it now (disk full, medium pulled): try on a later scan.
                report.errors.append(f"{path.name}: {exc}")
                report.count(self._top_folder(path), "errors")
                log.error("import of %s failed, will retry: %s", path, exc)
                continue
            except ValueError as exc:
                outcome, instance_id = skipped(str(exc)), None
                report.skipped += 1
            self._remember(path, stat.st_size, stat.st_mtime_ns, outcome, instance_id)
            report.count(self._top_folder(path), "taken")
            self._seen.pop(path, None)
        gone = set(self._seen) - set(present)
        for path in gone:
            self._seen.pop(path, None)
        self._write_status(report, started, started_at)
        return report

    def _top_folder(self, path: Path) -> str:
        """The top-level entry of the watched folder that holds ``path`` ("" for the top)."""
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return ""
        return parts[0] if len(parts) > 1 else ""

    def _write_status(self, report: ScanReport, started: float, started_at: float) -> None:
        """Replace the status file atomically; a failure is logged once and never stops a scan.

        ``scan_started``/``scan_finished`` are CLOCK_MONOTONIC seconds (immune to
        the wall clock being set at boot), valid with the same ``boot_id`` only.
        """
        status = {
            "format": STATUS_FORMAT,
            "watch_dir": str(self.root),
            "boot_id": boot_id(),
            "pid": os.getpid(),
            "scan_started": started,
            "scan_finished": time.monotonic(),
            "scan_started_at": started_at,
            "scan_finished_at": time.time(),
            "waiting": report.waiting,
            "errors": len(report.errors),
            "accepted": report.accepted,
            "duplicates": report.duplicates,
            "quarantined": report.quarantined,
            "skipped": report.skipped,
            "folders": report.folders,
        }
        target = self.status_path
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            temporary.write_text(json.dumps(status, indent=1), encoding="utf-8")
            os.replace(temporary, target)
        except OSError as exc:
            if not self._status_warned:
                log.warning("cannot write the import status %s: %s", target, exc)
                self._status_warned = True
            return
        self._status_warned = False

    def run(self, stop: threading.Event, poll_seconds: float,
            on_accepted: Callable[[], None] | None = None) -> None:
        """Scan until ``stop`` is set; call ``on_accepted`` when new objects were queued."""
        log.info("watching %s for USB/folder imports", self.root)
        while not stop.is_set():
            try:
                report = self.scan_once()
                if report.accepted and on_accepted:
                    on_accepted()
                if report.accepted or report.quarantined:
                    log.info("import: %d accepted, %d quarantined, %d duplicates",
                             report.accepted, report.quarantined, report.duplicates)
            except Exception:
                log.exception("import scan failed; will try again")
            stop.wait(poll_seconds)


#: a file named like an image that is not one keeps at most this much in quarantine
JUNK_EXCERPT_BYTES = 2**20
#: below this share of its size actually stored on the medium, a file is sparse
SPARSE_RATIO = 0.5
#: files smaller than this are never called sparse (small files share blocks, tails vary)
SPARSE_MIN_BYTES = 2**20


def size_refusal(stat: os.stat_result, max_object_bytes: int) -> Reason | None:
    """Why a file must not be copied at all (its size alone says so), or None.

    The apparent size is what a copy would write, and a sparse file (a 1 GB file
    whose blocks are mostly holes, taking nothing on the medium) would be copied
    into the spool as that many real bytes: no modality or PACS export writes one.
    """
    size = stat.st_size
    if size > max_object_bytes:
        return Reason(ReasonCode.FILE_TOO_LARGE, {
            "size_mb": round(size / 2**20), "limit_mb": round(max_object_bytes / 2**20)})
    stored = getattr(stat, "st_blocks", None)
    if stored is not None and size >= SPARSE_MIN_BYTES and stored * 512 < size * SPARSE_RATIO:
        return Reason(ReasonCode.SPARSE_FILE, {
            "size_mb": round(size / 2**20), "stored_mb": round(stored * 512 / 2**20, 1)})
    return None


def _file_meta_uids(path: Path) -> tuple[str | None, str | None]:
    """(SOP Instance UID, SOP Class UID) from the file meta, or Nones if unreadable."""
    try:
        meta = read_file_meta_info(path)
    except Exception:
        return None, None
    sop_uid = str(meta.get("MediaStorageSOPInstanceUID", "") or "") or None
    sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "") or None
    return sop_uid, sop_class
