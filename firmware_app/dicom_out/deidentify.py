"""De-identify DICOM objects with the Basic Application Level Confidentiality Profile.

One :class:`Deidentifier` serves one export: its dicognito ``Anonymizer`` is
seeded once, so every UID (study, series, instance, frame of reference, and
the references inside a structured report) is replaced by the same new UID in
every file of the export, and the report still points at the de-identified
images. A new export gets a new seed: two exports of one study cannot be
linked by their UIDs.

The steps, per object:

1. burned-in text (``burned_in.py``): blank the pixels that may carry it by the
   rule safe for the image's kind (its code is logged and written in the
   De-identification Method), or refuse an object whose pixels cannot be
   decoded (:class:`~firmware_app.dicom_out.burned_in.CannotClean`);
2. dicognito: UIDs, names, identifiers, addresses, institution, and every date
   and time shifted back by one offset per export (62 to 730 days and some
   hours): the Retain Longitudinal Temporal Information with Modified Dates
   Option (DCM 113107);
3. the rest of the profile (``confidentiality.py``): every row of PS3.15
   Table E.1-1 (``annex_e_table.py``) at every level, free text the table
   does not list, and Code Meanings checked against the source's identifying
   values (``leaks.py``);
4. the record of what was done: Patient Identity Removed YES, De-identification
   Method and its code sequence (DCM 113100 and each option applied),
   Longitudinal Temporal Information Modified MODIFIED, and a new file meta
   header that names nothing of the source.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator

from dicognito import __version__ as dicognito_version
from dicognito.anonymizer import Anonymizer
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from firmware_app.dicom_out.burned_in import Cleaning, clean_burned_in_text
from firmware_app.dicom_out.confidentiality import apply_basic_profile
from firmware_app.dicom_out.leaks import contains_identifier, identifying_values

log = logging.getLogger(__name__)

#: PS3.16 CID 7050 "De-identification Method": code value -> meaning
BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
CLEAN_PIXEL_DATA = ("113101", "Clean Pixel Data Option")
CLEAN_STRUCTURED_CONTENT = ("113104", "Clean Structured Content Option")
MODIFIED_DATES = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
#: what De-identification Method (LO, one value per step) says
METHOD_TEXT = ("PS3.15 E.1 BASIC PROFILE", f"DICOGNITO {dicognito_version}",
               "CLINIBOX DEIDENTIFY")


class Deidentifier:
    """De-identifies every object of one export with one seed (consistent UIDs and dates)."""

    def __init__(self, seed: str | None = None) -> None:
        self._anonymizer = _anonymizer(seed)

    def deidentify(self, ds: Dataset, *, own: bool = False,
                   source_values: dict[bytes, str] | None = None) -> Dataset:
        """De-identify ``ds`` in place and return it, ready to be written as a DICOM file.

        ``own``: the box made ``ds`` (its SR, SEG, key image), so the Clean Structured
        Content Option keeps its report text; a received object is never ``own``.
        ``source_values``: its identifying values when the caller collected them already
        (:func:`~firmware_app.dicom_out.leaks.identifying_values`, for its leak check).

        Raises :class:`~firmware_app.dicom_out.burned_in.CannotClean` when the
        object's pixels cannot be cleaned (cannot be decoded or written back): it
        must then be left out of the export.
        """
        if not hasattr(ds, "file_meta"):
            ds.file_meta = FileMetaDataset()
        if source_values is None:
            source_values = identifying_values(ds, own=own)
        cleaning = clean_burned_in_text(ds)
        if cleaning.changed:
            log.info("clean pixel data %s", cleaning.method)
        self._anonymizer.anonymize(ds)
        apply_basic_profile(ds, lambda text: contains_identifier(text, source_values), own=own)
        _record_method(ds, cleaning)
        _new_file_meta(ds)
        return ds


def _anonymizer(seed: str | None) -> Anonymizer:
    """dicognito's Anonymizer for ``seed`` (a fresh random one when None).

    dicognito shifts a date and its time by one offset in hours; when that
    offset is a whole number of days a time of day would come out unchanged, so
    a random seed is drawn again until the times move too.
    """
    while True:
        candidate = seed if seed is not None else secrets.token_hex(16)
        probe = Dataset()
        probe.file_meta = FileMetaDataset()
        probe.StudyDate, probe.StudyTime = "20000101", "000000"
        Anonymizer(seed=candidate).anonymize(probe)
        if seed is not None or probe.StudyTime != "000000":
            return Anonymizer(seed=candidate)


def _record_method(ds: Dataset, cleaning: Cleaning) -> None:
    """Patient Identity Removed, De-identification Method and its code sequence."""
    codes = [BASIC_PROFILE, MODIFIED_DATES]
    if cleaning.changed:
        codes.append(CLEAN_PIXEL_DATA)
    if "ContentSequence" in ds:
        codes.append(CLEAN_STRUCTURED_CONTENT)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = list(METHOD_TEXT) + (
        [f"CLEAN PIXEL DATA {cleaning.code}"] if cleaning.changed else [])
    ds.DeidentificationMethodCodeSequence = list(_code_items(codes))
    ds.LongitudinalTemporalInformationModified = "MODIFIED"


def _code_items(codes: list[tuple[str, str]]) -> Iterator[Dataset]:
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        yield item


def _new_file_meta(ds: Dataset) -> None:
    """A file meta header made here: no source application entity, no sender's implementation."""
    syntax = ds.file_meta.get("TransferSyntaxUID") or ExplicitVRLittleEndian
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "CLINIBOX"
    ds.file_meta = meta
    for tag in [e.tag for e in ds if e.tag.group == 0x0002]:  # stray meta in the body
        del ds[tag]
