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
identifier survived (``leaks.py``), an image in whose pixels OCR can still read
one, or that could not be read (``pixel_ocr.py``; each with its reason code).
Nothing is written under the final name unless at least one file can go; every
export is recorded (who, when, from where, which study, how many files, where
to) before its files appear under their final name.

An export streams, one object at a time, whatever the size of the study: it
reads one instance, de-identifies it, writes it straight to its file in a
staging folder beside the target, searches that file for leaks a chunk at a
time (``file_leaks.py``), reads its pixels back with OCR, and keeps it (in the staged folder, or
added to the staged zip and removed) or removes it, before the next instance is read. The
staging folder goes whatever happens; the staged folder or zip is renamed to
the target only after the export is recorded.
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
from pydicom.uid import generate_uid

from clinibox_common.contracts.statuses import HELD_STATUSES
from clinibox_common.contracts.study_reference import looks_like_study_ref, matches
from clinibox_common.errors import EXIT_USAGE, CliniboxError
from clinibox_common.fs import fsync_dir
from clinibox_common.i18n import N_
from engine.imaging.dataset_values import valid_uid
from firmware_app.dicom_out.burned_in import CannotClean
from firmware_app.dicom_out.deidentify import Deidentifier
from firmware_app.dicom_out.file_leaks import leaked_in_file
from firmware_app.dicom_out.leaks import identifying_values
from firmware_app.dicom_out.pixel_ocr import check_pixels, ocr_targets
from firmware_app.dicom_out.source_header import normalise
from firmware_app.settings.box import Config
from firmware_app.storage import exports as queries

log = logging.getLogger(__name__)

#: instances in these states hold no usable image (broken, or failed to process)
HELD_BACK = HELD_STATUSES


class ExportError(CliniboxError):
    """The export cannot be made (unknown study, no image left, target not empty …)."""

    kind = N_("export refused")


@dataclass(frozen=True)
class LeftOut:
    """An object of the study that is not in the export, and why (no patient data in either):
    ``code`` for a program (:data:`LEFT_OUT_CODES`), ``reason`` in words."""

    what: str
    reason: str
    code: str = "not-available"


#: the codes of :class:`LeftOut` (the pixel check's are ``pixel_ocr.OcrCode``)
LEFT_OUT_CODES = ("not-available", "burned-in-text", "not-deidentified", "value-survived",
                  "ocr-identifier-readable", "ocr-unavailable", "ocr-timeout", "ocr-failed")


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
                "left_out": [{"what": x.what, "reason": x.reason, "code": x.code}
                             for x in self.left_out]}


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
    deidentifier = Deidentifier()
    with Staging(out, as_zip) as staging:
        present = sum(_add_instance(staging, left_out, deidentifier, instance)
                      for instance in instances)
        if not present:
            why = "; ".join(f"{x.what}: {x.reason}" for x in left_out) or "no instance received"
            raise ExportError(f"study {found.id} has no image left on this box ({why})")
        for n, document in enumerate(extra_documents, start=1):
            _add(staging, left_out, deidentifier, _detached(document), f"document {n}",
                 "DOCUMENT", own=True)
        if not staging.names:
            why = "; ".join(f"{x.what}: {x.reason}" for x in left_out)
            raise ExportError(f"nothing of study {found.id} can be exported ({why})")
        names = list(staging.names)
        export_id = staging.place(lambda: queries.record_export(
            conn, account=account, address=address, study_key=found.study_key,
            files=len(names), target=target_label or str(out)))
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


def _add_instance(staging: Staging, left_out: list[LeftOut], deidentifier: Deidentifier,
                  instance: queries.ExportInstance) -> bool:
    """Export one instance (or note why not); whether its image was on the box. Its data set
    is let go on return, before the next one is read."""
    source, reason = _source(instance)
    if source is None:
        left_out.append(LeftOut(f"instance {instance.id}", reason))
        return False
    _add(staging, left_out, deidentifier, source, f"instance {instance.id}", "IMAGE")
    return True


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


def _add(staging: Staging, left_out: list[LeftOut], deidentifier: Deidentifier,
         ds: Dataset, what: str, prefix: str, *, own: bool = False) -> None:
    """De-identify one object and stage its file, or note why it is left out. ``own``: a
    document the box made (its report text is kept); else a received image, whose header
    is first made fit to be written (:func:`fit_for_export`)."""
    values = identifying_values(ds, own=own)
    targets = ocr_targets(ds)
    name, path = staging.reserve(prefix)
    try:
        if not own:
            fit_for_export(ds)
        deidentifier.deidentify(ds, own=own, source_values=values)
        ds.save_as(path, enforce_file_format=True)
    except CannotClean as exc:
        staging.discard(path)
        left_out.append(LeftOut(what, f"burned-in text: {exc}", "burned-in-text"))
        return
    except (ValueError, TypeError, AttributeError, KeyError, NotImplementedError) as exc:
        staging.discard(path)
        left_out.append(LeftOut(what, f"could not be de-identified ({type(exc).__name__})",
                                "not-deidentified"))
        return
    survivors = leaked_in_file(path, values)
    if survivors:
        staging.discard(path)
        left_out.append(LeftOut(what, "a source value survived de-identification in "
                                      + ", ".join(survivors), "value-survived"))
        return
    finding = check_pixels(path, targets)
    if finding is not None:
        staging.discard(path)
        left_out.append(LeftOut(what, f"pixel check: {finding.detail}", finding.code.value))
        log.warning("export: %s left out: %s (%s)", what, finding.code.value, finding.detail)
        return
    staging.keep(name, path)


def fit_for_export(ds: Dataset) -> None:
    """Make a received image's imperfect header fit to be de-identified and written (in
    place): a missing or invalid instance, series, study or frame-of-reference UID gets a
    new one (the export replaces every UID anyway), a missing SOP Class UID is taken from
    the file meta; then :func:`~firmware_app.dicom_out.source_header.normalise` (dates and
    numbers that cannot be read emptied or removed, strings cut to their VR's length,
    control characters removed). Raises ValueError when the SOP class is not known at all.
    """
    if not valid_uid(ds.get("SOPClassUID")):
        meta_class = getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID")
        if not valid_uid(meta_class):
            raise ValueError("no valid SOP Class UID")
        ds.SOPClassUID = meta_class
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        if not valid_uid(ds.get(keyword)):
            setattr(ds, keyword, generate_uid())
    fixes = normalise(ds)
    if fixes:
        log.info("export: header fixed before de-identification: %s",
                 " ".join(str(fix) for fix in fixes))


class Staging:
    """The export's files beside their final place, written one object at a time: files of
    a folder, or the members of a zip (each object staged as a file first, searched for
    leaks, then added and removed). :meth:`place` records the export and moves the folder
    or zip under its final name; leaving the ``with`` block removes whatever is left."""

    def __init__(self, out: Path, as_zip: bool) -> None:
        self.out, self.as_zip = out, as_zip
        self.names: list[str] = []
        out.parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=".clinibox-export-", dir=out.parent))
        self._archive: zipfile.ZipFile | None = None
        self.staged = self.root / ("export.zip" if as_zip else "export")
        try:
            if as_zip:
                self._archive = zipfile.ZipFile(self.staged, "w", zipfile.ZIP_DEFLATED)
            else:
                self.staged.mkdir()
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._archive is not None:
                self._archive.close()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def reserve(self, prefix: str) -> tuple[str, Path]:
        """The next name for ``prefix`` (``IMAGE0001.dcm`` …) and the file to write it to."""
        name = f"{prefix}{sum(1 for n in self.names if n.startswith(prefix)) + 1:04d}.dcm"
        return name, (self.root / "object.dcm" if self.as_zip else self.staged / name)

    def discard(self, path: Path) -> None:
        """Forget an object that is left out (its file, if written, goes)."""
        path.unlink(missing_ok=True)

    def keep(self, name: str, path: Path) -> None:
        """Keep the object written to ``path`` (from :meth:`reserve`) as ``name``."""
        if self._archive is not None:
            self._archive.write(path, name)  # read and compressed in small pieces
            path.unlink()
        else:
            _fsync(path)
        self.names.append(name)

    def place(self, record: Callable[[], int]) -> int:
        """Record the export (``record`` gives its id), then move it under its final name."""
        if self._archive is not None:
            self._archive.close()
            self._archive = None
            _fsync(self.staged)
        else:
            fsync_dir(self.staged)
        export_id = int(record())
        if not self.as_zip and self.out.is_dir():
            self.out.rmdir()  # checked empty before; a file that appeared since makes this fail
        os.replace(self.staged, self.out)
        fsync_dir(self.out.parent)
        return export_id


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
