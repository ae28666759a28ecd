"""A received image's header made fit to be described in a result document.

The headers come from whoever is on the clinic's LAN; highdicom copies the
patient and study attributes of the source into every SR, SEG and key image
and refers to the source by its UIDs. ``normalise`` prepares a header (read
without pixels, or the key image's source) in one place, before any document
is made of it:

* the Type 2 patient and study attributes the documents copy (``TYPE2``) are
  present, empty when the source lacks them; Patient Sex is one of its
  enumerated values (``f`` → F, ``MALE`` → M, ``U`` emptied);
* a geometry attribute with the wrong number of values (5 image orientation
  cosines, 2 slice thicknesses: ``MULTIPLICITY``) is removed;
* a date, time or number that cannot be read (``19700000``, ``1970``,
  ``nan``) is emptied (a Type 2 one) or removed; a Pixel Spacing that is not
  two finite positive numbers is removed, so nothing is measured in mm on it;
* every string is cut to its VR's maximum length (PS3.5 Table 6.2-1; a person
  name per component group) and loses its control characters (text VRs keep
  TAB, LF, FF and CR);
* a UID that is not valid (PS3.5 9.1) is removed, except those a document
  refers to the image by (``REFERENCE_UIDS``): an image whose reference UID is
  missing or invalid cannot be described and ``Unreferenceable`` says why.

Every change is returned as a ``Fix`` (attribute keyword and reason code) for
the study's event log; nothing here writes English for a program to read.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import MAX_VALUE_LEN

from clinibox_common.errors import CliniboxError
from clinibox_common.i18n import N_
from engine.imaging.dataset_values import valid_uid

#: the attributes a document refers to an image by: without them it cannot be described
REFERENCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
#: Type 2 patient and general study attributes every document copies from its source
TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
         "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")
#: the most characters a value of each VR may hold (PS3.5 Table 6.2-1; PN: per group):
#: pydicom's table, and the fixed or per-group lengths it does not list
MAX_LENGTH = {**MAX_VALUE_LEN, "AS": 4, "DA": 8, "DT": 26, "PN": 64, "TM": 16}
#: VRs whose values are free text: they may hold these control characters
TEXT_VRS = frozenset({"LT", "ST", "UT"})
STRING_VRS = frozenset(MAX_LENGTH) | {"UC", "UT", "UR"}
_TEXT_CONTROLS = frozenset("\t\n\f\r")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TIME = re.compile(r"^([01]\d|2[0-3])([0-5]\d([0-5]\d|60)?)?(\.\d{1,6})?$")
_DATETIME = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?"
                       r"([+-]\d{4})?$")

# reason codes
MISSING = "missing"
INVALID_UID = "invalid-uid"
BAD_DATE = "unparseable-date"
BAD_TIME = "unparseable-time"
BAD_NUMBER = "unparseable-number"
BAD_PIXEL_SPACING = "invalid-pixel-spacing"
TOO_LONG = "cut-to-vr-length"
CONTROL_CHARACTERS = "control-characters-removed"
ABSENT_TYPE2 = "type2-added-empty"
WRONG_MULTIPLICITY = "wrong-multiplicity"
ENUMERATED_VALUE = "enumerated-value-normalised"
NOT_ENUMERATED = "not-an-enumerated-value"
#: Patient Sex's enumerated values (PS3.3 C.7.1.1), and the words some modalities write
SEXES = ("M", "F", "O")
SEX_WORDS = {"MALE": "M", "FEMALE": "F", "OTHER": "O"}
#: how many values an attribute the documents compute with must have (else it is removed)
MULTIPLICITY = {"ImageOrientationPatient": 6, "ImagePositionPatient": 3,
                "SliceThickness": 1, "SpacingBetweenSlices": 1, "SliceLocation": 1}


@dataclass(frozen=True)
class Fix:
    """One change made to a header: the attribute and the reason code."""

    keyword: str
    code: str

    def __str__(self) -> str:
        return f"{self.keyword}:{self.code}"


@dataclass
class HeaderReport:
    """What the headers of one study's images needed: by instance (its id in the box, else
    its file name), the reason code it was left out for, and the changes made to the others
    (``keyword:code``); and the images left out of the SEG alone, with their reason codes
    (``seg.py``: they are in the SR and the key image)."""

    left_out: dict[str, str] = field(default_factory=dict)
    fixes: dict[str, list[str]] = field(default_factory=dict)
    seg_left_out: dict[str, str] = field(default_factory=dict)


class Unreferenceable(CliniboxError, ValueError):
    """An image the documents cannot refer to: a reference UID missing or invalid."""

    kind = N_("not described")

    def __init__(self, keyword: str, code: str) -> None:
        super().__init__(f"{keyword}:{code}")
        self.keyword = keyword
        self.code = code


def normalise(ds: Dataset) -> list[Fix]:
    """Make ``ds`` fit to be copied into a result document (in place); what was changed.

    Raises ``Unreferenceable`` when a reference UID is missing or invalid.
    """
    for keyword in REFERENCE_UIDS:
        value = ds.get(keyword)
        if value is None or str(value) == "":
            raise Unreferenceable(keyword, MISSING)
        if not valid_uid(value):
            raise Unreferenceable(keyword, INVALID_UID)
    fixes = _pixel_spacing(ds)
    fixes += _patient_sex(ds)
    _walk(ds, fixes)
    for keyword in TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")
            fixes.append(Fix(keyword, ABSENT_TYPE2))
    return fixes


def _walk(ds: Dataset, fixes: list[Fix]) -> None:
    """Fix every string element of ``ds`` and of its sequences' items."""
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]
        except Exception:  # a value pydicom cannot even read: nothing to copy
            del ds[tag]
            fixes.append(Fix(f"({tag.group:04X},{tag.element:04X})", BAD_NUMBER))
            continue
        if elem.VR == "SQ":
            for item in elem.value or []:
                _walk(item, fixes)
            continue
        expected = MULTIPLICITY.get(elem.keyword)
        if expected is not None and elem.value not in (None, "") and expected != elem.VM:
            del ds[tag]  # a geometry the documents would index into: 5 of 6 cosines
            fixes.append(Fix(elem.keyword, WRONG_MULTIPLICITY))
            continue
        if elem.VR not in STRING_VRS or elem.value is None:
            continue
        fixes += [Fix(elem.keyword or str(elem.tag), code) for code in _fix_element(ds, elem)]


def _patient_sex(ds: Dataset) -> list[Fix]:
    """Patient Sex as PS3.3 enumerates it (M, F, O; highdicom refuses anything else):
    upper-cased, MALE and FEMALE written M and F, any other value emptied."""
    if "PatientSex" not in ds or not ds.PatientSex:
        return []
    text = str(ds.PatientSex).strip().upper()
    value = SEX_WORDS.get(text, text)
    if value == str(ds.PatientSex) and value in SEXES:
        return []
    ds.PatientSex = value if value in SEXES else ""
    return [Fix("PatientSex", ENUMERATED_VALUE if value in SEXES else NOT_ENUMERATED)]


def _fix_element(ds: Dataset, elem: DataElement) -> list[str]:
    """Fix one string element in place; its reason codes (none when it was fine)."""
    vr = elem.VR
    values = list(elem.value) if isinstance(elem.value, MultiValue) else [elem.value]
    texts = [str(v) if v is not None else "" for v in values]
    if vr in ("DA", "TM", "DT", "DS", "IS"):
        if all(_readable(vr, t.strip()) for t in texts):
            return []
        return [_drop(ds, elem, {"DA": BAD_DATE, "TM": BAD_TIME, "DT": BAD_DATE}.get(
            vr, BAD_NUMBER))]
    if vr == "UI":
        if all(valid_uid(t) for t in texts if t):
            return []
        return [_drop(ds, elem, INVALID_UID)]
    codes: list[str] = []
    cleaned = []
    for text in texts:
        kept = _strip_controls(text, vr in TEXT_VRS)
        if kept != text and CONTROL_CHARACTERS not in codes:
            codes.append(CONTROL_CHARACTERS)
        cut = _cut(kept, vr)
        if cut != kept and TOO_LONG not in codes:
            codes.append(TOO_LONG)
        cleaned.append(cut)
    if codes:
        elem.value = cleaned if len(cleaned) > 1 else cleaned[0]
    return codes


def _drop(ds: Dataset, elem: DataElement, code: str) -> str:
    """Empty a Type 2 attribute, remove any other; ``code``."""
    if elem.keyword in TYPE2:
        elem.value = ""
    else:
        del ds[elem.tag]
    return code


def _strip_controls(text: str, text_vr: bool) -> str:
    if not _CONTROLS.search(text):
        return text
    allowed = _TEXT_CONTROLS if text_vr else frozenset()
    return "".join(c for c in text if c in allowed or not _CONTROLS.match(c))


def _cut(text: str, vr: str) -> str:
    """``text`` cut to ``vr``'s maximum length (a person name: each component group)."""
    longest = MAX_LENGTH.get(vr)
    if longest is None:
        return text
    if vr == "PN":
        return "=".join(group[:longest] for group in text.split("=")[:3])
    return text[:longest]


def _readable(vr: str, text: str) -> bool:
    """Whether a date, time or number's value means something (empty: it says nothing)."""
    if not text:
        return True
    if vr == "DA":
        if len(text) != 8 or not text.isdigit():
            return False
        try:
            datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
        except ValueError:
            return False
        return True
    if vr == "TM":
        return bool(_TIME.match(text.replace(":", "")))
    if vr == "DT":
        match = _DATETIME.match(text)
        if not match or (match.group(2) and not 1 <= int(match.group(2)) <= 12):
            return False
        return not match.group(3) or 1 <= int(match.group(3)) <= 31
    try:
        number = float(text) if vr == "DS" else int(text)
    except ValueError:
        return False
    return math.isfinite(number) and len(text) <= MAX_LENGTH[vr]


def _pixel_spacing(ds: Dataset) -> list[Fix]:
    """Remove a Pixel Spacing (and the imager's) that is not two finite positive numbers."""
    fixes = []
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if keyword in ds and not _spacing(ds[keyword].value):
            del ds[keyword]
            fixes.append(Fix(keyword, BAD_PIXEL_SPACING))
    return fixes


def _spacing(value: object) -> bool:
    values: Iterable = value if isinstance(value, (list, tuple, MultiValue)) else [value]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        return False
    return len(numbers) == 2 and all(math.isfinite(n) and n > 0 for n in numbers)
