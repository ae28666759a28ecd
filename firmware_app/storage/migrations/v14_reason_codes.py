"""v14: reasons are stored as codes with parameters, no longer as English sentences.

``instances.reason``, ``results.assessment_reason`` and ``results.warnings_json``
keep their columns; their values become the one JSON encoding of a list of
reasons (``contracts/reasons.py``: ``[{"code": …, "params": {…}}]``, compact,
keys sorted; "" for none in the two reason columns, ``[]`` in
``warnings_json``). This is the ONE place old English is recognised: below is a
frozen copy of the sentences and patterns the box wrote up to v13, each turned
into its code once. Text it does not recognise (a decoder's own words, a
sentence changed by hand) becomes an ``unknown`` reason holding the text, shown
as recorded. A value already in the new form is left as it is, so the step
may run twice.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from typing import Any

from firmware_app.storage.migrations._sql import columns

Record = dict[str, Any]

#: the fixed sentences up to v13, by the code they become
FIXED = {
    "image is blank, rescan suggested": "blank",
    "image too dark, rescan suggested": "too_dark",
    "image saturated, check exposure": "saturated",
    "low contrast, check window/exposure": "low_contrast",
    "the heatmap's hot spot lies on burned-in text or a ruler, not on tissue: "
    "look at the marked area yourself": "heatmap_on_annotation",
    "received object is missing from the spool (disk fault?)": "missing_from_spool",
    "invalid_uid": "invalid_uid",
    "empty file": "empty_file",
    "not a DICOM file or a PNG/JPEG picture (content does not match its name)":
        "not_an_image_file",
}


def _number(text: str) -> int | float:
    """A number as the old sentences wrote it (``1,024``, ``3.2``)."""
    plain = text.replace(",", "")
    return float(plain) if "." in plain else int(plain)


def _text(value: str) -> str:
    return value


#: the sentences with values in them up to v13: pattern, code, (name, converter) per group
PATTERNS: tuple[tuple[re.Pattern[str], str, tuple[tuple[str, Callable[[str], Any]], ...]],
                ...] = (
    (re.compile(r"image too small for reliable reading \((\d+) x (\d+) pixels\)"),
     "too_small", (("columns", _number), ("rows", _number))),
    (re.compile(r"The image is unlike the images this model was validated on \(its features "
                r"lie ([0-9.]+|inf|nan)× beyond the validated limit\); the model's answer "
                r"cannot be trusted for it"),
     "outside_validated_range", (("ratio", lambda v: _number(v) if v[0].isdigit() else v),)),
    (re.compile(r"modality (\S+) is not one the model (\S+) accepts \((.*)\)"),
     "modality_not_accepted", (("modality", _text), ("model", _text), ("accepted", _text))),
    (re.compile(r"no routing rule matches this series \((.*)\)"),
     "no_routing_rule", (("series", _text),)),
    (re.compile(r"routing rule (.+) chooses the model (\S+), which is not installed on this "
                r"box \(it runs (.*)\)"),
     "model_not_installed", (("rule", _text), ("model", _text), ("running", _text))),
    (re.compile(r"processing was interrupted (\d+) times \(crash or power cut\); object kept "
                r"for a technician"),
     "interrupted", (("attempts", _number),)),
    (re.compile(r"processing error: (.*)", re.DOTALL), "processing_error", (("detail", _text),)),
    (re.compile(r"picture cannot be read: (.*)", re.DOTALL),
     "picture_unreadable", (("detail", _text),)),
    (re.compile(r"only its first (\d+) MB of ([0-9,]+) MB kept"),
     "excerpt_kept", (("kept_mb", _number), ("size_mb", _number))),
    (re.compile(r"file is ([0-9,]+) MB, over the ([0-9,]+) MB object limit; not copied"),
     "file_too_large", (("size_mb", _number), ("limit_mb", _number))),
    (re.compile(r"sparse file \(([0-9,]+) MB long, ([0-9,.]+) MB stored on the medium\): not "
                r"an image a modality writes; not copied"),
     "sparse_file", (("size_mb", _number), ("stored_mb", _number))),
)

#: a longest text kept in an ``unknown`` reason (as ``contracts/reasons.MAX_TEXT``)
MAX_TEXT = 2000


def _record(code: str, **params: Any) -> Record:
    return {"code": code, "params": params}


def _unknown(text: str) -> Record:
    return _record("unknown", text=text[:MAX_TEXT])


def _one(sentence: str) -> Record | None:
    """The record of one old sentence, or None when it is not one the box wrote."""
    if sentence in FIXED:
        return _record(FIXED[sentence])
    for pattern, code, names in PATTERNS:
        match = pattern.fullmatch(sentence)
        if match:
            return _record(code, **{name: convert(value) for (name, convert), value
                                    in zip(names, match.groups(), strict=True)})
    return None


def sentences_to_records(text: str) -> list[Record]:
    """Old reason text (sentences joined by "; ") as records; unrecognised: one unknown."""
    text = text.strip()
    if not text:
        return []
    whole = _one(text)  # a sentence may hold "; " itself
    if whole is not None:
        return [whole]
    parts = [_one(part) for part in text.split("; ")]
    if all(part is not None for part in parts):
        return [part for part in parts if part is not None]
    return [_unknown(text)]


def _encode(listed: list[Record]) -> str:
    """The stored form (as ``contracts.reasons.encode``)."""
    return json.dumps(listed, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _is_new(value: str) -> bool:
    """Whether a stored value is already a list of code records."""
    if not value.startswith("["):
        return False
    try:
        listed = json.loads(value)
    except ValueError:
        return False
    return isinstance(listed, list) and all(
        isinstance(item, dict) and set(item) == {"code", "params"} for item in listed)


def reason_value(value: str | None) -> str | None:
    """A stored reason column's new value (None stays None)."""
    if value is None or not value.strip() or _is_new(value):
        return value
    return _encode(sentences_to_records(value))


def warnings_value(value: str) -> str:
    """A ``warnings_json`` value's new form: each {code, message} as its record."""
    if _is_new(value):
        return value
    try:
        old = json.loads(value)
    except ValueError:
        return _encode([_unknown(value)])
    if not isinstance(old, list):
        return _encode([_unknown(value)])
    out = []
    for item in old:
        message = str(item.get("message", "")) if isinstance(item, dict) else str(item)
        record = _one(message.strip())
        if record is None or (isinstance(item, dict) and record["code"] != item.get("code")):
            record = _unknown(message or json.dumps(item))
        out.append(record)
    return _encode(out)


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 13 to 14: the rows' reasons as codes (no column changes)."""
    if "reason" in columns(conn, "instances"):
        rows = conn.execute("SELECT id, reason FROM instances WHERE reason IS NOT NULL"
                            " AND reason != ''").fetchall()
        for row_id, value in rows:
            new = reason_value(value)
            if new != value:
                conn.execute("UPDATE instances SET reason=? WHERE id=?", (new, row_id))
    present = columns(conn, "results")
    if "assessment_reason" in present:
        rows = conn.execute("SELECT instance_id, assessment_reason FROM results"
                            " WHERE assessment_reason IS NOT NULL AND assessment_reason != ''"
                            ).fetchall()
        for row_id, value in rows:
            new = reason_value(value)
            if new != value:
                conn.execute("UPDATE results SET assessment_reason=? WHERE instance_id=?",
                             (new, row_id))
    if "warnings_json" in present:
        rows = conn.execute("SELECT instance_id, warnings_json FROM results"
                            " WHERE warnings_json IS NOT NULL AND warnings_json != '[]'"
                            ).fetchall()
        for row_id, value in rows:
            new = warnings_value(value)
            if new != value:
                conn.execute("UPDATE results SET warnings_json=? WHERE instance_id=?",
                             (new, row_id))
