"""The Basic Application Level Confidentiality Profile, applied from PS3.15 Table E.1-1 as data.

dicognito (``deidentify.py``) runs first: it replaces every UID but class and
transfer syntax UIDs (the profile's U, consistent across one export), every
person name and the usual identifiers with consistent dummies (D), and shifts
every date, date-time and paired time by one offset (the Retain Longitudinal
Temporal Information with Modified Dates Option's C). Then every element, at
every level of the data set (every item of every sequence), gets the action
:func:`resolved_action` reads from :mod:`annex_e_table` (all 617 rows of Table
E.1-1, DICOM 2024b):

* X removed; Z kept with no value (a sequence with no items); K kept; C and U
  as dicognito made them (a time whose date is absent, so dicognito left it,
  is emptied); D a dummy, or dicognito's consistent dummy where it made one;
* the table's variants, which depend on the attribute's Type in the IOD, are
  resolved to the choice that conforms whatever the Type: X/Z → Z, Z/D, X/D and
  X/Z/D → D (for a sequence: Z where Z is among the choices, else X), X/Z/U*
  → U for a sequence (kept, its UIDs replaced: the report's references still
  resolve) and Z otherwise; a date, date-time or time with the Modified Dates
  Option's C is C whatever the Basic Profile says (dicognito shifted it); any
  other attribute that option cleans (Timezone Offset From UTC) takes the Basic
  Profile's action, as dicognito does not change it;
* Icon Image Sequence, Digital Signatures, Original Attributes, MAC,
  Acquisition Context (X/Z → Z), Request Attributes are table rows; MAC
  Parameters and Encrypted Attributes sequences, which the table does not
  list, are removed too (:data:`REMOVED_BEYOND_TABLE`), as are private
  attributes (the table's (gggg,eeee) odd group row), curves and overlays.

Attributes the table does not list keep Annex E's K, except what may still
carry free text about the patient (E.3.1's advice on unlisted attributes):
every LO, SH, ST, LT, UT, UC value not in :data:`KEEP_TEXT`, every AE, UR, AS
and UN value and every person name is removed.

Structured content: the Clean Structured Content Option (DCM 113104) applies
to the box's own objects (its SR, key objects, segmentations: the caller says
so with ``own=True``, as the export does for the documents it made; never read
from an attribute a sender could write), whose Text Values hold findings, never
words about the patient; in any other object a Text Value is replaced by a dummy.
A Code Meaning is kept
when its code (Coding Scheme Designator + Code Value) is in pydicom's code
dictionaries (with the dictionary's meaning when the source wrote another) or
the object is the box's own; otherwise it is checked against the source's
identifying values and replaced by the code itself when one occurs in it.

Where this differs from the others: dicognito alone keeps every unlisted text
(descriptions, comments) and every sequence; pydicom/deid's ``deid.dicom``
recipe blanks or removes a hand-picked list and keeps the rest; here the whole
table is applied and unlisted free text removed, so a description is never kept
because a list forgot it. Neither resolves X/Z/U* by sequence, nor checks Code
Meanings.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from pydicom import DataElement, Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.sequence import Sequence

from firmware_app.dicom_out.annex_e_table import GROUP_RANGES, TABLE

#: value representations of free text: removed (when not in the table) unless in KEEP_TEXT
TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
#: value representations removed wherever the table does not say otherwise
REMOVED_VRS = frozenset({"AE", "UR", "AS", "UN"})
#: text the table does not list that is kept: coded entries, labels the box writes, equipment
KEEP_TEXT = frozenset({
    # coded entries (anatomy, units, the report's concepts); Code Meaning is checked
    "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning",
    "LongCodeValue", "CodingSchemeName", "CodingSchemeResponsibleOrganization",
    # segmentation: what each segment is, and the algorithm that made it
    "SegmentLabel", "AlgorithmName", "AlgorithmVersion",
    # equipment make and software, not a person or a place
    "Manufacturer", "ManufacturerModelName", "SoftwareVersions",
    # how to display the pixels
    "WindowCenterWidthExplanation", "RescaleType", "LUTExplanation",
})
#: kept by design: the leak check does not search for their source values
SURVIVES = KEEP_TEXT
#: removed wherever they appear, though the table does not list them
REMOVED_BEYOND_TABLE = frozenset({
    tag_for_keyword("MACParametersSequence"), tag_for_keyword("EncryptedAttributesSequence"),
    tag_for_keyword("PatientTelecomInformation"), tag_for_keyword("InstanceCreatorUID"),
})
#: replaced by dicognito with consistent dummies: a D keeps them
DICOGNITO_DUMMIES = frozenset({
    "AccessionNumber", "OtherPatientIDs", "PatientID", "PerformedProcedureStepID",
    "RequestedProcedureID", "ScheduledProcedureStepID", "StationName", "StudyID",
    "FillerOrderNumberImagingServiceRequest", "PlacerOrderNumberImagingServiceRequest",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
})
#: the dummy a D writes, by keyword (first) or value representation
DUMMY_BY_KEYWORD = {"DeviceSerialNumber": "0"}
DUMMY_BY_VR: dict[str, object] = {
    **dict.fromkeys(("LO", "SH", "ST", "LT", "UT", "UC", "CS", "AE"), "DEIDENTIFIED"),
    **dict.fromkeys(("DS", "IS"), "0"), **dict.fromkeys(("US", "SS", "UL", "SL", "FL", "FD"), 0),
    **dict.fromkeys(("OB", "OW", "UN"), b"\x00\x00"), "AS": "000D", "UR": "",
}
#: the value representations dicognito shifts (the Modified Dates Option's C)
DATE_VRS = frozenset({"DA", "DT", "TM"})
#: the actions, as Table E.1-1 writes them (after resolution)
ACTIONS = frozenset({"X", "Z", "D", "K", "C", "U"})
TEXT_VALUE = tag_for_keyword("TextValue")
CODE_MEANING = tag_for_keyword("CodeMeaning")


def apply_basic_profile(ds: Dataset, suspicious: Callable[[str], bool] = lambda _t: False,
                        *, own: bool = False) -> None:
    """Apply the profile to ``ds`` in place (after dicognito); see the module docstring.

    ``suspicious(text)`` says whether a text holds one of the source's identifying values
    (an unknown code's meaning is then replaced); ``own``: the box made ``ds`` (Clean
    Structured Content keeps its text).
    """
    ds.remove_private_tags()
    _clean(ds, own=own, suspicious=suspicious)


def resolved_action(tag: int, vr: str) -> str | None:
    """The Basic Profile's action (one of :data:`ACTIONS`) for ``tag``, variants resolved for
    this box (see the module docstring); None for an attribute the table does not list."""
    row = _row(tag)
    if row is None:
        return None
    _name, basic, modified_dates, _structured = row
    if modified_dates == "C" and vr in DATE_VRS:
        return "C"  # dicognito shifted it; anything else the option cleans (a time zone
        # offset) is not shifted by dicognito, so the Basic Profile's action applies
    if basic == "X/Z/U*":
        return "U" if vr == "SQ" else "Z"
    if "/" not in basic:
        return basic
    choices = basic.split("/")
    if vr == "SQ":
        return "Z" if "Z" in choices else "X"
    return "D" if "D" in choices else "Z"


def _row(tag: int) -> tuple[str, str, str, str] | None:
    row = TABLE.get(tag)
    if row is not None:
        return row
    group, element = tag >> 16, tag & 0xFFFF
    for masked, wanted, ranged in GROUP_RANGES:
        if group & 0xFF00 == masked and not group & 1 and wanted in (None, element):
            return ranged
    return None


def _clean(ds: Dataset, *, own: bool, suspicious: Callable[[str], bool]) -> None:
    """One level of the data set, then every item of the sequences it keeps."""
    for tag in list(ds.keys()):
        element = ds[tag]
        action = _action(ds, element, own)
        if action == "X":
            del ds[tag]
        elif action == "Z":
            element.value = Sequence() if element.VR == "SQ" else None
        elif action == "dummy":
            element.value = _dummy(element)
        elif element.VR == "SQ" and isinstance(element.value, Sequence):
            for item in element.value:
                _clean(item, own=own, suspicious=suspicious)
    if CODE_MEANING in ds and not own:
        _check_code_meaning(ds, suspicious)


def _action(ds: Dataset, element: DataElement, own: bool) -> str:
    """What happens to one element: "X", "Z", "dummy" or "keep"."""
    tag, keyword = int(element.tag), element.keyword
    if element.tag.is_private or tag in REMOVED_BEYOND_TABLE or (tag >> 16) & 0xFF00 in (
            0x5000, 0x6000):  # private attributes, curves and every overlay element
        return "X"
    action = resolved_action(tag, element.VR)
    if action is None:
        return _unlisted_action(ds, element, own)
    if action == "D":
        if element.VR in ("PN", "UI", "SQ", "DA", "DT", "TM") or keyword in DICOGNITO_DUMMIES:
            return "keep"  # dicognito's dummies; a sequence is cleaned item by item
        return "dummy"
    if action == "C" and element.VR == "TM" and element.value and not _has_date(ds, keyword):
        return "Z"
    return action if action in ("X", "Z") else "keep"


def _unlisted_action(ds: Dataset, element: DataElement, own: bool) -> str:
    """An attribute Table E.1-1 does not list: kept unless it may carry free text."""
    if int(element.tag) == TEXT_VALUE:
        return "keep" if own else "dummy"
    if element.VR in REMOVED_VRS:
        return "X"
    if element.VR in TEXT_VRS and element.keyword not in KEEP_TEXT:
        return "X"
    if element.VR == "PN" and not own:
        return "X"
    if element.VR == "TM" and element.value and not _has_date(ds, element.keyword):
        return "Z"
    return "keep"


def _dummy(element: DataElement) -> object:
    if element.keyword in DUMMY_BY_KEYWORD:
        return DUMMY_BY_KEYWORD[element.keyword]
    return DUMMY_BY_VR.get(element.VR)


def _check_code_meaning(item: Dataset, suspicious: Callable[[str], bool]) -> None:
    """A code's meaning: the dictionary's for a known code; an unknown code's meaning is
    replaced by the code itself when it holds a source's identifying value."""
    scheme = str(item.get("CodingSchemeDesignator", "")).strip()
    value = str(item.get("CodeValue") or item.get("LongCodeValue") or "").strip()
    meaning = str(item.CodeMeaning or "")
    known = known_codes().get((scheme, value))
    if known is not None:
        if known.casefold() != meaning.strip().casefold():
            item.CodeMeaning = known[:64]
    elif suspicious(meaning):
        item.CodeMeaning = f"({value}, {scheme})"[:64]


@cache
def known_codes() -> dict[tuple[str, str], str]:
    """(Coding Scheme Designator, Code Value) → meaning of every code in pydicom's
    dictionaries (DCM, SCT, LN, UCUM …)."""
    from pydicom.sr._concepts_dict import concepts  # big: loaded on first use

    found: dict[tuple[str, str], str] = {}
    for scheme, by_keyword in concepts.items():
        for codes in by_keyword.values():
            for value, (meaning, _cids) in codes.items():
                found.setdefault((scheme, value), meaning)
    return found


def _has_date(ds: Dataset, time_keyword: str) -> bool:
    """Whether the time's own date has a value (dicognito then shifted the time with it)."""
    if not time_keyword or "Time" not in time_keyword:
        return False
    return bool(ds.get(time_keyword.replace("Time", "Date")))

