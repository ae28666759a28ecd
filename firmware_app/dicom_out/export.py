"""The de-identified export of one study: to a folder or a zip, recorded in ``exports``.

``export_study`` finds the study (the box's local study id, its Study Instance
UID, or the hospital's study reference), takes every received instance of it
whose image is still on the box, de-identifies each with one
:class:`~firmware_app.dicom_out.deidentify.Deidentifier` (so UIDs stay
consistent across the files and a report's references resolve), adds the
documents it is given (the study's SR, say) the same way, and writes them as
``IMAGE0001.dcm`` …, ``DOCUMENT0001.dcm`` … (names that say nothing of the
patient) into a new or empty folder, or into a zip file. What cannot go is
left out with its reason: an image retention deleted, an object held back, an
image with burned-in text that cannot be cleaned, a file in which a source
identifier survived (``leaks.py``). Nothing is written unless at least one
file can go; every export is recorded (who, when, from where, which study, how
many files, where to) before its files appear under their final name.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import shutil
import sqlite3
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom import Dataset
from pydicom.errors import InvalidDicomError

from firmware_app.contracts.study_reference import looks_like_study_ref, matches
from firmware_app.dicom_out.burned_in import CannotClean
from firmware_app.dicom_out.deidentify import Deidentifier
from firmware_app.dicom_out.leaks import identifying_values, leaked
from firmware_app.errors import EXIT_USAGE, CliniboxError
from firmware_app.fs import fsync_dir
from firmware_app.i18n import N_
from firmware_app.settings.box import Config
from firmware_app.storage import exports as queries

log = logging.getLogger(__name__)

#: instances in these states hold no usable image (broken, or failed to process)
HELD_BACK = ("quarantined", "failed")


class ExportError(CliniboxError):
    """The export cannot be made (unknown study, no image left, target not empty …)."""

    kind = N_("export refused")


@dataclass(frozen=True)
class LeftOut:
    """An object of the study that is not in the export, and why (no patient data in either)."""

    what: str
    reason: str


@dataclass
class ExportSummary:
    """What an export wrote: its record id, the study, the files, and what was left out."""

    export_id: int
    study_id: int
    target: str
    files: list[str] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """The summary as plain data (``--json``)."""
        return {"export_id": self.export_id, "study_id": self.study_id, "target": self.target,
                "files": self.files,
                "left_out": [{"what": x.what, "reason": x.reason} for x in self.left_out]}


def reference_secret(config: Config) -> bytes | None:
    """The box's study-reference secret, or None when telemetry never made one (no study
    can then have a reference). Never creates it."""
    try:
        return config.device_secret_path.read_bytes()
    except FileNotFoundError:
        return None


def resolve_study(conn: sqlite3.Connection, study: str,
                  secret: bytes | None = None) -> queries.ExportStudy:
    """The study named by ``study``: a local study id, a Study Instance UID (or study key),
    or a study reference from the hospital (with the box's ``secret``)."""
    text = study.strip()
    found = queries.study_by_id(conn, int(text)) if text.isdigit() and len(text) < 19 else None
    found = found or queries.study_by_key(conn, text)
    if found is None and secret is not None and looks_like_study_ref(text):
        found = next((s for s in queries.all_studies(conn)
                      if matches(secret, s.study_key, text)), None)
    if found is None:
        raise ExportError(f"no study {text!r} on this box (give the local study id, the Study "
                          "Instance UID, or the study reference of an alert)",
                          exit_status=EXIT_USAGE)
    return found


def export_study(conn: sqlite3.Connection, study: str, out: Path, *, as_zip: bool = False,
                 account: str, address: str = "", secret: bytes | None = None,
                 extra_documents: Sequence[Dataset] = (), target_label: str | None = None,
                 ) -> ExportSummary:
    """De-identify the study's images (and ``extra_documents``) into the folder ``out`` (new
    or empty) or the zip file ``out`` (new); record the export. See the module docstring.

    ``account`` and ``address`` are who asked and from where (``cli:<user>``, a viewer
    account and its client address); ``target_label`` is what the record says of the
    target (default: the path). Raises :class:`ExportError` when nothing can be exported.
    """
    out = Path(out)
    found = resolve_study(conn, study, secret)
    check_target(out, as_zip)
    instances = queries.study_instances(conn, found.study_key)
    left_out: list[LeftOut] = []
    outputs: list[tuple[str, bytes]] = []
    deidentifier = Deidentifier()
    present = 0
    for instance in instances:
        source, reason = _source(instance)
        if source is None:
            left_out.append(LeftOut(f"instance {instance.id}", reason))
            continue
        present += 1
        _add(outputs, left_out, deidentifier, source, f"instance {instance.id}", "IMAGE")
    if not present:
        why = "; ".join(f"{x.what}: {x.reason}" for x in left_out) or "no instance received"
        raise ExportError(f"study {found.id} has no image left on this box ({why})")
    for n, document in enumerate(extra_documents, start=1):
        _add(outputs, left_out, deidentifier, _detached(document), f"document {n}", "DOCUMENT")
    if not outputs:
        why = "; ".join(f"{x.what}: {x.reason}" for x in left_out)
        raise ExportError(f"nothing of study {found.id} can be exported ({why})")
    names = [name for name, _data in outputs]
    export_id = _write(out, as_zip, outputs, lambda: queries.record_export(
        conn, account=account, address=address, study_key=found.study_key,
        files=len(outputs), target=target_label or str(out)))
    log.info("export %d of study %d by %s: %d file(s), %d left out", export_id, found.id,
             account, len(names), len(left_out))
    return ExportSummary(export_id, found.id, target_label or str(out), names, left_out)


def check_target(out: Path, as_zip: bool) -> None:
    """Refuse a zip that exists, a folder that is not empty, a folder that is a file."""
    if as_zip:
        if out.exists():
            raise ExportError(f"{out} exists; give a new file name for the zip",
                              exit_status=EXIT_USAGE)
        if not out.parent.is_dir():
            raise ExportError(f"folder {out.parent} does not exist", exit_status=EXIT_USAGE)
        return
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file, not a folder", exit_status=EXIT_USAGE)
    if out.is_dir() and any(out.iterdir()):
        raise ExportError(f"folder {out} is not empty; give a new or empty folder",
                          exit_status=EXIT_USAGE)


def _source(instance: queries.ExportInstance) -> tuple[Dataset | None, str]:
    """The instance's data set read from the spool, or None with the reason it cannot go."""
    if instance.image_deleted_at is not None:
        when = dt.datetime.fromtimestamp(instance.image_deleted_at).strftime("%Y-%m-%d")
        return None, f"image deleted by retention on {when}"
    if instance.status in HELD_BACK:
        return None, f"{instance.status}: held back, not a usable image"
    try:
        return pydicom.dcmread(instance.spool_path), ""
    except FileNotFoundError:
        return None, "image file missing from the spool"
    except (InvalidDicomError, OSError, ValueError) as exc:
        return None, f"image file unreadable ({type(exc).__name__})"


def _detached(document: Dataset) -> Dataset:
    """A private copy of a caller's data set, read back from its encoding: an item object that
    appears twice in the tree (so dicognito would replace its UIDs twice) becomes two."""
    buffer = io.BytesIO()
    document.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def _add(outputs: list[tuple[str, bytes]], left_out: list[LeftOut], deidentifier: Deidentifier,
         ds: Dataset, what: str, prefix: str) -> None:
    """De-identify one object and keep its bytes, or note why it is left out."""
    values = identifying_values(ds)
    try:
        deidentifier.deidentify(ds)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
    except CannotClean as exc:
        left_out.append(LeftOut(what, f"burned-in text: {exc}"))
        return
    except (ValueError, TypeError, AttributeError, KeyError, NotImplementedError) as exc:
        left_out.append(LeftOut(what, f"could not be de-identified ({type(exc).__name__})"))
        return
    data = buffer.getvalue()
    survivors = leaked(data, values)
    if survivors:
        left_out.append(LeftOut(what, "a source value survived de-identification in "
                                      + ", ".join(survivors)))
        return
    count = sum(1 for name, _ in outputs if name.startswith(prefix)) + 1
    outputs.append((f"{prefix}{count:04d}.dcm", data))


def _write(out: Path, as_zip: bool, outputs: list[tuple[str, bytes]],
           record: Callable[[], int]) -> int:
    """Write the files beside their final place, record the export, then move them there."""
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".clinibox-export-", dir=parent))
    try:
        if as_zip:
            staged = staging / "export.zip"
            with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as archive:
                for name, data in outputs:
                    archive.writestr(name, data)
            _fsync(staged)
        else:
            staged = staging / "export"
            staged.mkdir()
            for name, data in outputs:
                (staged / name).write_bytes(data)
                _fsync(staged / name)
            fsync_dir(staged)
        export_id = int(record())
        if not as_zip and out.is_dir():
            out.rmdir()  # checked empty before; a file that appeared since makes this fail
        os.replace(staged, out)
        fsync_dir(parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return export_id


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
