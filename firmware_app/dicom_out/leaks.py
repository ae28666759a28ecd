"""The last check before a de-identified file leaves: does any source identifier remain?

Before an object is de-identified, :func:`identifying_values` collects the
encoded bytes of every value the profile replaces or removes (names, ids,
free text, dates, times, UIDs, addresses …), at every level of the data set.
After, :func:`leaked` searches the bytes of the file about to be written, all
of them (header, sequences and pixel data alike), for any of those values. A
file in which one survives is left out of the export: a rule missed today
costs a file, never a patient's name.

Values shorter than :data:`MIN_BYTES`, or with fewer than :data:`MIN_DISTINCT`
different bytes, are not searched (a sex of "F", an id of "12", a time of
"000000" occur by chance in any file); a numeric value counts only where it
stands alone, not inside a longer run of digits such as a new UID.
"""

from __future__ import annotations

import contextlib

from pydicom import Dataset
from pydicom.charset import convert_encodings, encode_string
from pydicom.valuerep import PersonName

from firmware_app.dicom_out.confidentiality import KEEP_TEXT

#: value representations whose source values must not survive
IDENTIFYING_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "DA", "DT", "TM", "UI",
                             "AE", "UR", "AS"})
#: shortest value searched for, in bytes
MIN_BYTES = 6
#: fewest distinct bytes in a value searched for ("000000" is a run of grey in any image)
MIN_DISTINCT = 3


def identifying_values(ds: Dataset) -> dict[bytes, str]:
    """Every identifying value of ``ds`` as bytes (UTF-8 and the data set's own character
    set), mapped to the keyword it came from."""
    encodings = convert_encodings(ds.get("SpecificCharacterSet", "ISO_IR 6"))
    found: dict[bytes, str] = {}
    for element in ds.iterall():
        if element.VR not in IDENTIFYING_VRS or element.keyword in KEEP_TEXT - {
                "PatientID", "AccessionNumber", "StudyID"}:
            continue
        if element.VR == "UI" and (element.keyword.endswith("ClassUID")
                                   or element.keyword == "TransferSyntaxUID"):
            continue
        values = element.value if element.VM > 1 else [element.value]
        for value in values:
            for text in _texts(value):
                for encoded in _encoded(text, encodings):
                    if len(encoded) >= MIN_BYTES and len(set(encoded)) >= MIN_DISTINCT:
                        found.setdefault(encoded, element.keyword or str(element.tag))
    return found


def leaked(data: bytes, values: dict[bytes, str]) -> list[str]:
    """The keywords of the source values found in ``data`` (empty: nothing survived).

    A short numeric value (a date, a time: digits and dots, at most 26 bytes)
    counts only where a value starts, not inside a run of digits: the new UIDs of a
    de-identified file are long random digit strings, in which a six-digit
    time of the source occurs by chance about once in a thousand files.
    """
    return sorted({keyword for value, keyword in values.items() if _found(data, value)})


#: the bytes of a numeric value (dates, times, date-times, UIDs, decimal strings)
_NUMERIC = frozenset(b"0123456789.+-")
_DIGITS = frozenset(b"0123456789.")


#: numeric values up to this long (a DT's 26 bytes) are searched standing alone; an element's
#: length field before them is then below 0x30 ("0"), so it never hides a real survivor
_STANDALONE_MAX = 26


def _found(data: bytes, value: bytes) -> bool:
    if len(value) > _STANDALONE_MAX or not set(value) <= _NUMERIC:
        return value in data
    start = data.find(value)
    while start >= 0:
        before = data[start - 1] if start > 0 else None
        if before not in _DIGITS:  # a value's start (a date may begin a date-time)
            return True
        start = data.find(value, start + 1)
    return False


def _texts(value: object) -> list[str]:
    """A value and, for a person name, each of its components."""
    if value is None or value == "":
        return []
    if isinstance(value, PersonName):
        parts = [str(value)]
        for group in (value.alphabetic, value.ideographic, value.phonetic):
            parts += [group] if group else []
            parts += [p for p in group.split("^") if p] if group else []
        return parts
    text = str(value).strip()
    if isinstance(value, bytes):
        return []
    return [text, *(text.split("^") if "^" in text else [])]


def _encoded(text: str, encodings: list[str]) -> set[bytes]:
    """``text`` in UTF-8 and in the source's own character set (when it can be encoded)."""
    out = {text.encode("utf-8", errors="ignore")}
    with contextlib.suppress(UnicodeError, LookupError, ValueError):
        out.add(encode_string(text, encodings))
    return out
