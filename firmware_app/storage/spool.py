"""The durable landing zone for received objects.

An object is written to a temporary file, flushed and fsync'd, renamed into
place, and the folder is fsync'd, so once ``write`` returns the bytes survive
a power cut. A data set received over DICOM is already in a file (``adopt``):
it is renamed into place, then it and its folder are fsync'd; its queue row,
committed afterwards, is what makes it received. File names are local ids
made here, never the sender's strings.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from clinibox_common.errors import CliniboxError
from clinibox_common.fs import fsync_dir
from firmware_app.settings.box import Config

#: data sets being received over DICOM are written to ``tmp/<prefix>…`` as they arrive
RECEIVING_PREFIX = "receiving-"
#: an object's display previews (``engine.imaging.preview``) sit beside it
PREVIEW_SUFFIX = ".preview.npz"


def preview_path(object_path: Path) -> Path:
    """The display-preview file of the spooled object at ``object_path``."""
    object_path = Path(object_path)
    return object_path.with_name(object_path.name.split(".", 1)[0] + PREVIEW_SUFFIX)


class SpoolFull(CliniboxError, OSError):
    """The disk is below the configured free-space floor."""

    kind = "spool full"


def new_local_id() -> str:
    """A fresh local id (32 hex digits) naming a received object on this box."""
    return uuid.uuid4().hex


def _fsync_file(path: Path) -> None:
    """Flush a file's data to disk (before it is renamed into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Objects waiting for (or kept after) processing, one file per local id."""

    def __init__(self, root: Path, quarantine: Path, min_free_bytes: int = 0) -> None:
        self.root = Path(root)
        self.quarantine_root = Path(quarantine)
        self.min_free_bytes = min_free_bytes
        self.tmp = self.root / "tmp"
        for folder in (self.root, self.tmp, self.quarantine_root):
            folder.mkdir(parents=True, exist_ok=True)
        self._known_dirs: set[Path] = set()

    def path_for(self, local_id: str) -> Path:
        """Where the object with ``local_id`` lives (two-level fan-out)."""
        if len(local_id) != 32 or not all(c in "0123456789abcdef" for c in local_id):
            raise ValueError(f"not a local id: {local_id!r}")
        return self.root / local_id[:2] / f"{local_id}.dcm"

    def preview_path(self, local_id: str) -> Path:
        """Where the worker writes the object's display previews (beside the object)."""
        return preview_path(self._final(local_id))

    def free_bytes(self) -> int:
        """Free bytes on the spool's file system."""
        return shutil.disk_usage(self.root).free

    def check_space(self, incoming: int) -> None:
        """Raise SpoolFull when storing ``incoming`` bytes would cross the floor."""
        free = self.free_bytes()
        if free - incoming < self.min_free_bytes:
            raise SpoolFull(
                f"disk nearly full: {free // 2**20} MB free, "
                f"floor is {self.min_free_bytes // 2**20} MB"
            )

    def write(self, local_id: str, data: bytes) -> Path:
        """Store ``data`` durably under ``local_id``; return the final path."""
        self.check_space(len(data))
        final = self._final(local_id)
        folder = final.parent
        tmp = self.tmp / f"{local_id}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.rename(tmp, final)
        fsync_dir(folder)
        return final

    def adopt(self, local_id: str, received: Path) -> Path:
        """Make a file received into ``tmp`` the object ``local_id``: rename it into place,
        then fsync it and its folder (no copy). Returns the final path.

        Renaming first is safe because the queue row, committed after this returns, is
        what makes an object received: a power cut before that commit leaves a file no
        row names, which start-up removes (``remove_orphans``), and the sender, never
        told "stored", sends it again. On a journalling file system the file's fsync
        then commits the rename in the same journal transaction, and the folder's
        fsync finds nothing left to write: one journal commit instead of two.
        """
        self.check_space(0)
        final = self._final(local_id)
        os.chmod(received, 0o640)
        os.rename(received, final)
        _fsync_file(final)
        fsync_dir(final.parent)
        return final

    def _final(self, local_id: str) -> Path:
        """The object's final path, its fan-out folder made (and made durable) once."""
        final = self.path_for(local_id)
        folder = final.parent
        if folder not in self._known_dirs:
            folder.mkdir(exist_ok=True)
            fsync_dir(self.root)
            self._known_dirs.add(folder)
        return final

    def conflict_path(self, local_id: str) -> Path:
        """Where an object that conflicts with one the box holds is kept aside."""
        return self.quarantine_root / "conflicts" / f"{local_id}.dcm"

    def keep_conflict(self, local_id: str, received: Path, reason: str) -> Path:
        """Keep a conflicting object aside (durably, with a reason note); return its path."""
        target = self.conflict_path(local_id)
        target.parent.mkdir(exist_ok=True)
        note = target.with_suffix(".reason.json")
        note.write_text(json.dumps({"local_id": local_id, "reason": reason}) + "\n")
        _fsync_file(received)
        os.replace(received, target)
        fsync_dir(target.parent)
        return target

    def discard(self, local_id: str) -> None:
        """Remove an object that was not acknowledged (no error if absent)."""
        self.path_for(local_id).unlink(missing_ok=True)
        preview_path(self.path_for(local_id)).unlink(missing_ok=True)

    def held_path(self, local_id: str) -> Path:
        """Where a quarantined object's copy is kept."""
        return self.quarantine_root / f"{local_id}.dcm"

    def reason_path(self, local_id: str) -> Path:
        """The ``.reason.json`` note beside a quarantined object."""
        return self.quarantine_root / f"{local_id}.reason.json"

    def object_files(self, local_id: str) -> list[Path]:
        """Every file an object may have: the spool copy, a quarantined copy, the reason
        note, its display previews."""
        spooled = self.path_for(local_id)
        return [spooled, self.held_path(local_id), self.reason_path(local_id),
                preview_path(spooled)]

    def quarantine(self, local_id: str, reason: str) -> Path:
        """Move an object to quarantine with a ``.reason.json`` beside it."""
        source = self.path_for(local_id)
        target = self.held_path(local_id)
        note = self.reason_path(local_id)
        note.write_text(json.dumps({"local_id": local_id, "reason": reason}) + "\n")
        if source.exists():
            os.replace(source, target)
        preview_path(source).unlink(missing_ok=True)  # nobody views a quarantined image
        fsync_dir(self.quarantine_root)
        return target

    def quarantined_reason(self, local_id: str) -> str | None:
        """The reason an object was quarantined with, if it is in quarantine."""
        try:
            return str(json.loads(self.reason_path(local_id).read_text())["reason"])
        except (OSError, ValueError, KeyError):
            return None

    def clean_temporary(self) -> int:
        """Delete partial files left by a crash mid-write; return how many."""
        removed = 0
        leftovers = [*self.tmp.glob("*.part"), *self.tmp.glob(f"{RECEIVING_PREFIX}*"),
                     *self.root.glob(f"??/.*{PREVIEW_SUFFIX}.part")]  # a preview half-written
        for leftover in leftovers:
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def remove_orphans(self, known: set[str]) -> int:
        """Delete spooled objects no queue row names; return how many.

        Such a file was renamed into place but its queue row was never
        committed (a crash in between), so the sender was never told "stored"
        and sends it again. Call only while nothing is landing (at start-up).
        """
        removed = 0
        for path in self.root.glob("??/*.dcm"):
            if path.stem not in known:
                path.unlink()
                removed += 1
        for path in self.root.glob(f"??/*{PREVIEW_SUFFIX}"):
            if path.name.split(".", 1)[0] not in known:
                path.unlink()
        return removed


def make_spool(config: Config) -> Spool:
    """The spool with the configured folders and free-space floor."""
    return Spool(config.spool_dir, config.quarantine_dir, config.storage.min_free_mb * 2**20)
