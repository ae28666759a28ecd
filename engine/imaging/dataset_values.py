"""Values read off a DICOM data set that may hold anything: a first value of a multi-valued
attribute, a finite number, an integer, printable text of a bounded length; a value pydicom
cannot convert counts as absent. Never an exception (``imaging/decode.py``,
``imaging/geometry.py``).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from pydicom.dataset import Dataset


def first(found: Any) -> Any:
    """The first value of a multi-valued attribute (None when empty), else the value."""
    if isinstance(found, list | tuple) or type(found).__name__ == "MultiValue":
        return found[0] if len(found) else None
    return found


def number(found: Any) -> float | None:
    """The (first) value as a finite float, or None."""
    try:
        result = float(first(found))
    except (TypeError, ValueError, IndexError):
        return None
    return result if np.isfinite(result) else None


def integer(ds: Dataset, keyword: str) -> int | None:
    """``keyword``'s (first) value as an int, or None."""
    try:
        found = first(ds.get(keyword))
        return None if found in (None, "") else int(found)
    except (TypeError, ValueError, OverflowError):
        return None


def value(ds: Dataset, keyword: str) -> Any:
    """``ds.get`` that treats a value pydicom cannot convert as absent."""
    try:
        return ds.get(keyword)
    except Exception:
        return None


def text(ds: Dataset, keyword: str, limit: int = 128) -> str:
    """``keyword``'s value as printable text of at most ``limit`` characters ("" if none)."""
    found = value(ds, keyword)
    shown = str(first(found) if not isinstance(found, str) else found)
    shown = "".join(ch for ch in shown if ch.isprintable()).strip()
    return "" if shown == "None" else shown[:limit]


#: a UID (PS3.5 9.1): digits in dot-separated components, none empty, no leading zero in a
#: component of more than one digit; at most :data:`MAX_UID_LENGTH` characters
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
MAX_UID_LENGTH = 64


def valid_uid(found: Any) -> bool:
    """Whether ``found`` (a value read from a data set: a string, a pydicom UID, None …) is
    a valid DICOM UID: 1 to 64 characters of digits and dots, no empty component, no
    leading zero in a component longer than one digit. Never raises."""
    text = found if isinstance(found, str) else "" if found is None else str(found)
    return 0 < len(text) <= MAX_UID_LENGTH and _UID.fullmatch(text) is not None
