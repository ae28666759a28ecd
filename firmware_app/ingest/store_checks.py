"""What a received data set must be before the box stores it: one check for both DICOM fronts.

A C-STORE is refused, with the status Orthanc 1.10 answers for the same object, when (in
this order) the data set has no SOP Instance UID or SOP Class UID (0xC000, cannot
understand), names another SOP Instance UID or SOP Class UID than the command's Affected
ones (0xA900, data set does not match SOP class), or carries a SOP Instance, SOP Class,
Study Instance or Series Instance UID that is not a valid UID (0xC000; Orthanc stores
those, the box does not: a UID names files and rows downstream). A data set whose
header cannot be read, or that holds an element twice (a second SOP Instance UID that
dcmtk, the PACS, would ignore and pydicom, the box, would keep), is refused as 0xC000
too. A data set without Study or Series Instance UID is refused as 0xA700, as Orthanc
refuses it (it cannot file it; the box would have no study to put its results in). A data
set that ends inside one of its elements (a Pixel Data announced longer than the bytes
sent: ``data_set_extent``) is refused as 0xC000, and the association goes on; Orthanc
ends the association without an answer. ``tests/integration/test_ingest_refusals.py``
sends each case to the box and to a real Orthanc.

Only the header is read (pydicom, element headers up to the pixel data, only the four
UIDs' values, large values deferred; a deflated data set is inflated to at most
``HEADER_BYTES``), so the check costs the same for a 4 KB and a 1 GB object. The USB
importer checks the file meta's SOP Instance UID with ``valid_uid`` (there is no
command to compare with).
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

from clinibox_common.errors import CliniboxError
from clinibox_common.i18n import N_
from engine.imaging.dataset_values import MAX_UID_LENGTH, valid_uid
from firmware_app.ingest.data_set_extent import cut_short_from

#: most bytes a deflated data set is inflated to for its header
HEADER_BYTES = 4 * 2**20
#: a UID value longer than this is not read (it is invalid whatever it says; a command's
#: UID is at most 64 characters, so it differs from the command's too)
DEFER_BYTES = 64 * 1024
#: what a UID too long to read is recorded as (it fails ``valid_uid``)
TOO_LONG = "?" * (MAX_UID_LENGTH + 1)

SOP_CLASS, SOP_INSTANCE = Tag(0x0008, 0x0016), Tag(0x0008, 0x0018)
STUDY_INSTANCE, SERIES_INSTANCE = Tag(0x0020, 0x000D), Tag(0x0020, 0x000E)
_TAGS = (SOP_CLASS, SOP_INSTANCE, STUDY_INSTANCE, SERIES_INSTANCE)

# DICOM status codes (PS3.4 Annex B)
DATA_SET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700


class Refusal(enum.Enum):
    """Why a received data set is not stored (the value is the code logged)."""

    UNREADABLE = "unreadable_header"
    """The data set's header cannot be read."""
    REPEATED_ELEMENT = "repeated_element"
    """The header holds an element twice (a second SOP Instance UID: the PACS and the box
    would name the object differently)."""
    NO_SOP_INSTANCE_UID = "no_sop_instance_uid"
    """The data set has no SOP Instance UID."""
    NO_SOP_CLASS_UID = "no_sop_class_uid"
    """The data set has no SOP Class UID."""
    INVALID_UID = "invalid_uid"
    """Its SOP Instance, SOP Class, Study or Series Instance UID is not a valid UID (a UID
    names files and rows downstream); for the USB importer, the file meta's SOP Instance
    UID."""
    UID_MISMATCH = "uid_mismatch"
    """Its SOP Instance UID is not the C-STORE command's Affected SOP Instance UID."""
    CLASS_MISMATCH = "class_mismatch"
    """Its SOP Class UID is not the C-STORE command's Affected SOP Class UID."""
    NO_STUDY_INSTANCE_UID = "no_study_instance_uid"
    """The data set has no Study Instance UID."""
    NO_SERIES_INSTANCE_UID = "no_series_instance_uid"
    """The data set has no Series Instance UID."""
    CUT_SHORT = "cut_short"
    """The data set ends inside one of its elements (its Pixel Data announced longer than
    the bytes sent, say): what arrived is not the object."""

    @property
    def status(self) -> int:
        """The C-STORE status this refusal answers (what Orthanc answers; where Orthanc
        ends the association, cannot understand)."""
        if self in (Refusal.UID_MISMATCH, Refusal.CLASS_MISMATCH):
            return DATA_SET_DOES_NOT_MATCH
        if self in (Refusal.NO_STUDY_INSTANCE_UID, Refusal.NO_SERIES_INSTANCE_UID):
            return OUT_OF_RESOURCES
        return CANNOT_UNDERSTAND


@dataclass(frozen=True)
class Verdict:
    """The check's answer: a refusal, or the data set's own SOP Instance UID."""

    refusal: Refusal | None
    sop_instance_uid: str | None = None


class RepeatedElement(CliniboxError, ValueError):
    """A received header that holds one element twice."""

    kind = N_("refused")


#: where the header ends: the pixel data (its value is never read)
PIXEL_DATA = Tag(0x7FE0, 0x0010)


class _Once:
    """``read_dataset``'s ``stop_when``: stops at the pixel data, and at an element the
    header holds twice (a second SOP Instance UID: dcmtk keeps the first, pydicom the
    last, so the PACS and the box would name the object differently); ``repeated`` then
    says so. Elements merely out of tag order are read as they are (every reader agrees
    on them)."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.repeated = False

    def __call__(self, tag: BaseTag, vr: str | None, length: int) -> bool:
        if int(tag) in self.seen:
            self.repeated = True
            return True
        self.seen.add(int(tag))
        return tag >= PIXEL_DATA


def read_header_uids(path: Path) -> dict[BaseTag, str]:
    """The SOP Class, SOP Instance, Study and Series Instance UIDs present in the received
    file (a Part-10 file, or a bare data set); ValueError where it cannot be read, OSError
    where the file cannot."""
    return _read(path, walk=False)[1]


def _read(path: Path, *, walk: bool) -> tuple[bool, dict[BaseTag, str]]:
    """(whether the data set ends inside one of its elements, when ``walk``: then no UID
    is read; the UIDs ``read_header_uids`` returns), the file meta read once."""
    try:
        with open(path, "rb") as handle:
            read_preamble(handle, force=True)  # none: a bare data set, read from its start
            syntax = _read_file_meta_info(handle).get("TransferSyntaxUID")
            start = handle.tell()
            if walk and cut_short_from(handle, start, syntax):
                return True, {}
            handle.seek(start)
            data_set = _read_header(handle, syntax)
        found = {}
        for tag in _TAGS:
            if tag not in data_set:
                continue
            raw = data_set.get_item(tag, keep_deferred=True)  # as read: no conversion
            value = raw.value
            if value is None and raw.length:  # deferred: longer than any UID
                found[tag] = TOO_LONG
            elif isinstance(value, bytes):
                found[tag] = value.decode("latin-1").strip("\x00 ")
            elif value is not None:
                found[tag] = str(value).strip("\x00 ")
        return False, {tag: uid for tag, uid in found.items() if uid}
    except OSError as exc:
        if exc.errno is not None:  # the disk failed (not the sender's fault)
            raise
        raise ValueError(f"header cannot be read: {exc}") from exc  # pydicom's, as OSError
    except RepeatedElement:  # said
        raise
    except Exception as exc:  # a sender's bytes: anything pydicom raises means unreadable
        raise ValueError(f"header cannot be read: {type(exc).__name__}") from exc


def _read_header(handle: BinaryIO, syntax: str | None) -> Dataset:
    """The header's elements up to the pixel data (only ``_TAGS`` kept; the others are
    skipped, not read; none may appear twice), read from the handle's position (after the
    file meta) in ``syntax``, the transfer syntax the file meta names (none: implicit VR
    little endian, DICOM's default); a deflated data set is inflated to at most
    ``HEADER_BYTES`` (a deflate bomb must not fill the memory)."""
    implicit = syntax in (None, ImplicitVRLittleEndian)
    little_endian = syntax != ExplicitVRBigEndian
    source: BinaryIO = handle
    if syntax == DeflatedExplicitVRLittleEndian:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        data = b""
        while len(data) < HEADER_BYTES and (chunk := handle.read(65536)):
            data += inflater.decompress(chunk, HEADER_BYTES - len(data))
        source = DicomBytesIO(data)
    once = _Once()
    data_set = read_dataset(source, implicit, little_endian, stop_when=once,
                            defer_size=DEFER_BYTES, specific_tags=list(_TAGS))
    if once.repeated:
        raise RepeatedElement("an element appears twice in the header")
    return data_set


def check_received(path: Path, *, command_instance_uid: str | None,
                   command_class_uid: str | None) -> Verdict:
    """Check a received data set against its C-STORE-RQ's Affected SOP Instance and
    Class UIDs, and that it is whole and names its study and series; a ``Verdict`` with
    the refusal, or with the data set's SOP Instance UID.
    Raises OSError where the file cannot be read."""
    try:
        cut, uids = _read(path, walk=True)
    except RepeatedElement:
        return Verdict(Refusal.REPEATED_ELEMENT)
    except ValueError:
        return Verdict(Refusal.UNREADABLE)
    if cut:
        return Verdict(Refusal.CUT_SHORT)
    instance, sop_class = uids.get(SOP_INSTANCE), uids.get(SOP_CLASS)
    if not instance:
        return Verdict(Refusal.NO_SOP_INSTANCE_UID)
    if not sop_class:
        return Verdict(Refusal.NO_SOP_CLASS_UID)
    if instance != (command_instance_uid or "").strip("\x00 "):
        return Verdict(Refusal.UID_MISMATCH)
    if sop_class != (command_class_uid or "").strip("\x00 "):
        return Verdict(Refusal.CLASS_MISMATCH)
    if STUDY_INSTANCE not in uids:
        return Verdict(Refusal.NO_STUDY_INSTANCE_UID)
    if SERIES_INSTANCE not in uids:
        return Verdict(Refusal.NO_SERIES_INSTANCE_UID)
    if not all(valid_uid(uid) for uid in uids.values()):
        return Verdict(Refusal.INVALID_UID)
    return Verdict(None, instance)
