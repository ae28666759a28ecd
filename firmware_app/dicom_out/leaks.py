"""The last check before a de-identified file leaves: does any source identifier remain?

Before an object is de-identified, :func:`identifying_values` collects the
encoded bytes (UTF-8 and the source's own character set) of every value the
profile replaces or removes (names and each of their components, ids, free
text, dates, times, UIDs, addresses …), at every level of the data set. After,
:func:`leaked` looks for them in the file about to be written, case-insensitive
(a name in upper or lower case), in two ways:

* a long value (at least :data:`MIN_BYTES` bytes, :data:`MIN_DISTINCT`
  different ones) is searched in every byte of the file: header, sequences and
  pixel data alike; a short numeric value of that kind (a date, a time) counts
  only where a value starts, not inside a run of digits such as a new UID;
* a short identifier (a person name's component, a patient id or another id
  or number of 2 to 5 characters, say "LI" or "12345") would occur by chance in
  pixel data and inside new UIDs, so it is searched as a whole value or a run
  of whole tokens (letters and digits, split at anything else) in the decoded
  text values of the de-identified header, every element at every level, UIDs
  excepted; in data that is no DICOM file but UTF-8 text (a JSON record) in
  the whole text; not in other bytes (a later chunk of a file read in chunks by
  ``file_leaks.py``: pixel data), where a short token occurs by chance.
  Short free text ("CT" as a description) and short dates or times are not
  searched: they identify nobody and occur in any header.

A file in which one survives is left out of the export: a rule missed today
costs a file, never a patient's name. What the profile keeps by design
(coded entries, equipment names, the box's own report text) is not collected,
nor is a value that also occurs inside a kept equipment value (an institution
called "TOSHIBA" where the Manufacturer is "TOSHIBA_MEC"): it would be found
there, by design, in every file. A person's name or an id is searched even
then: a sender that writes the patient id into the model name loses the file.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator

import pydicom
from pydicom import Dataset
from pydicom.charset import convert_encodings, encode_string
from pydicom.errors import InvalidDicomError
from pydicom.valuerep import PersonName

from firmware_app.dicom_out.confidentiality import SURVIVES

#: value representations whose source values must not survive
IDENTIFYING_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "DA", "DT", "TM", "UI",
                             "AE", "UR", "AS"})
#: shortest value searched for in every byte
MIN_BYTES = 6
#: fewest distinct bytes in a value searched for in every byte ("000000" is a run of grey)
MIN_DISTINCT = 3
#: shortest identifier searched for as a token (a middle initial identifies nobody)
MIN_TOKEN_CHARS = 2
#: header value representations whose decoded text is tokenised (UIDs and binary left out)
HEADER_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH",
                             "ST", "TM", "UC", "UR", "UT"})
_TOKEN = re.compile(r"[^\W_]+")


def identifying_values(ds: Dataset, *, own: bool = False) -> dict[bytes, str]:
    """Every identifying value of ``ds`` as bytes (UTF-8 and the data set's own character
    set), mapped to the keyword it came from; short ones only where they identify.

    ``own``: the box made ``ds``; its report text (kept by the profile) is not collected,
    and a name is searched whole, not by its components: the box's own words ("a doctor",
    "an image", the demo model's "phantoms") would meet a patient called An or Phantom in
    every report, while a report that named the patient would name them whole."""
    encodings = convert_encodings(ds.get("SpecificCharacterSet", "ISO_IR 6"))
    kept = _kept_texts(ds)
    found: dict[bytes, str] = {}
    for element in ds.iterall():
        keyword = element.keyword or str(element.tag)
        if element.VR not in IDENTIFYING_VRS or keyword in SURVIVES or (
                own and keyword == "TextValue"):
            continue
        if element.VR == "UI" and keyword.endswith(("ClassUID", "TransferSyntaxUID")):
            continue
        values = element.value if element.VM > 1 else [element.value]
        for value in values:
            for text in _texts(value, components=not own):
                if not _is_identifier(element.VR, keyword) and any(
                        text.casefold() in k for k in kept):
                    continue  # also in what the profile keeps ("TOSHIBA" in "TOSHIBA_MEC")
                for encoded in _encoded(text, encodings):
                    if _long(encoded) or (_is_identifier(element.VR, keyword)
                                          and len(text) >= MIN_TOKEN_CHARS):
                        found.setdefault(encoded, keyword)
    return found


#: what the profile keeps of the equipment, unchecked (a Code Meaning is checked, so a name
#: in one is no reason to stop searching for that name)
EQUIPMENT = frozenset({"Manufacturer", "ManufacturerModelName", "SoftwareVersions"})


def _kept_texts(ds: Dataset) -> list[str]:
    """The source's equipment values the profile keeps by design, folded: a value found
    inside one of them survives by the standard's design, not by a missed rule, and is not
    searched for."""
    kept = []
    for element in ds.iterall():
        if element.keyword in EQUIPMENT and element.value not in (None, "", b""):
            values = element.value if element.VM > 1 else [element.value]
            kept += [str(v).casefold() for v in values if not isinstance(v, bytes)]
    return kept


def leaked(data: bytes, values: dict[bytes, str]) -> list[str]:
    """The keywords of the source values found in ``data`` (empty: nothing survived); see
    the module docstring for where each value is looked for."""
    lowered = data.lower()
    header: list[list[str]] | None = None
    hits = set()
    for value, keyword in values.items():
        if _long(value):
            if _found(lowered, value.lower()):
                hits.add(keyword)
            continue
        if header is None:
            header = _header_tokens(data)
        if _in_tokens(value, header):
            hits.add(keyword)
    return sorted(hits)


def contains_identifier(text: str, values: dict[bytes, str]) -> bool:
    """Whether ``text`` holds one of ``values`` (long ones anywhere, short ones as tokens)."""
    lowered = text.encode("utf-8", errors="ignore").lower()
    tokens = [_tokens(text)]
    return any(_found(lowered, value.lower()) if _long(value) else _in_tokens(value, tokens)
               for value in values)


def _long(value: bytes) -> bool:
    return len(value) >= MIN_BYTES and len(set(value)) >= MIN_DISTINCT


def _is_identifier(vr: str, keyword: str) -> bool:
    """A person's name or an id or number: identifies even when short."""
    return vr == "PN" or (vr in ("LO", "SH") and keyword.endswith(("ID", "IDs", "Number",
                                                                     "Numbers")))


def _tokens(text: str) -> list[str]:
    return [t.casefold() for t in _TOKEN.findall(text)]


def _in_tokens(value: bytes, header: list[list[str]]) -> bool:
    """Whether ``value`` (decoded) is a whole value or a run of whole tokens of one of the
    header's values."""
    try:
        wanted = _tokens(value.decode("utf-8"))
    except UnicodeDecodeError:
        return False  # the source character set's form; its UTF-8 form is searched too
    if not wanted:
        return False
    size = len(wanted)
    return any(tokens[i:i + size] == wanted
               for tokens in header if wanted[0] in tokens
               for i in range(len(tokens) - size + 1))


def _header_tokens(data: bytes) -> list[list[str]]:
    """The tokens of each decoded text value of the DICOM file ``data`` (every level, pixel
    data and UIDs left out), or of the whole text when ``data`` is no DICOM file."""
    if data[128:132] != b"DICM":
        try:
            return [_tokens(data.decode("utf-8"))]
        except UnicodeDecodeError:
            return []  # binary: a later chunk of a file (file_leaks.py), pixel data
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        return [_tokens(text) for text in _header_texts(ds)]
    except (InvalidDicomError, OSError, ValueError, KeyError, TypeError, AttributeError,
            LookupError):
        return []


def _header_texts(ds: Dataset) -> Iterator[str]:
    for element in ds.iterall():
        if element.VR not in HEADER_TEXT_VRS or element.value in (None, "", b""):
            continue
        values = element.value if element.VM > 1 else [element.value]
        for value in values:
            yield value.decode("utf-8", errors="replace") if isinstance(value, bytes) else (
                str(value))


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


def _texts(value: object, components: bool = True) -> list[str]:
    """A value and, for a person name (with ``components``), each of its components."""
    if value is None or value == "" or isinstance(value, bytes):
        return []
    if isinstance(value, PersonName):
        parts = [str(value)]
        for group in (value.alphabetic, value.ideographic, value.phonetic):
            parts += [group] if group else []
            if group and components:
                parts += [p.strip() for p in re.split(r"[\^=]", group) if p.strip()]
        return parts
    text = str(value).strip()
    if not components:
        return [text] if text else []
    return [text, *(text.split("^") if "^" in text else [])] if text else []


def _encoded(text: str, encodings: list[str]) -> set[bytes]:
    """``text`` in UTF-8 and in the source's own character set (when it can be encoded)."""
    out = {text.encode("utf-8", errors="ignore")}
    with contextlib.suppress(UnicodeError, LookupError, ValueError):
        out.add(encode_string(text, encodings))
    return out
