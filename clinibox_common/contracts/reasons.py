"""Why the box did what it did, as codes with parameters: never as sentences.

A reason is a :class:`ReasonCode` and a few named values (``Reason``): a quality
warning (``too_small`` with the image's ``columns`` and ``rows``), why an image
is not assessable or outside the validated range, why it is not analysed
(routing), why an object is held back (quarantine). The worker stores a list of
them in one JSON encoding (:func:`encode`) in ``results.assessment_reason``,
``results.warnings_json`` and ``instances.reason``; readers :func:`decode` it and
render each code's template in the reader's language (``firmware_app/words/reasons.py``; the
English here, for logs and the SR). Like Home Assistant's translation keys: the
template is the catalog's message id, the parameters fill it in, and no English
is ever parsed back.

The decoder's (or an exception's) own words are the parameter ``detail`` of
``decode_failed`` and ``processing_error``, shown as they are. :func:`decode` is
strict and bounded: anything it does not recognise (text recorded before codes,
an unknown code, a malformed value) becomes one ``unknown`` reason holding the
text, shown as recorded, never an error on a page.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clinibox_common.contracts.words import Word
from clinibox_common.i18n import N_

#: a parameter's value: a name, a count or a measure (never a structure)
ParamValue = str | int | float


class ReasonCode(Word):
    """Every reason the box records; the value is what is stored."""

    # quality warnings (imaging/quality.py); blank, too_dark, saturated, too_small block
    BLANK = "blank"
    TOO_DARK = "too_dark"
    SATURATED = "saturated"
    LOW_CONTRAST = "low_contrast"
    TOO_SMALL = "too_small"
    # the heatmap's hot spot on burned-in annotation (inference/hotspot.py)
    HEATMAP_ON_ANNOTATION = "heatmap_on_annotation"
    # the image is unlike the validation data (inference/validated_range.py)
    OUTSIDE_VALIDATED_RANGE = "outside_validated_range"
    # not analysed (models/routing.py)
    MODALITY_NOT_ACCEPTED = "modality_not_accepted"
    NO_ROUTING_RULE = "no_routing_rule"
    MODEL_NOT_INSTALLED = "model_not_installed"
    # quarantined or failed (the decoder, the worker, the queue, the USB import)
    DECODE_FAILED = "decode_failed"
    MISSING_FROM_SPOOL = "missing_from_spool"
    INTERRUPTED = "interrupted"
    PROCESSING_ERROR = "processing_error"
    INVALID_UID = "invalid_uid"
    PICTURE_UNREADABLE = "picture_unreadable"
    EMPTY_FILE = "empty_file"
    NOT_AN_IMAGE_FILE = "not_an_image_file"
    EXCERPT_KEPT = "excerpt_kept"
    FILE_TOO_LARGE = "file_too_large"
    SPARSE_FILE = "sparse_file"
    # a second object with an instance's SOP Instance UID and other content (ingest/landing.py)
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    # recorded text this box does not know as a code (shown as recorded)
    UNKNOWN = "unknown"


#: Each code's English template, its parameters named (``%(name)s``); marked for the
#: catalog, which carries it per language. ``decode_failed`` and ``unknown`` are words the
#: box did not write (:data:`VERBATIM`): shown as they are, not translated.
TEMPLATES: dict[ReasonCode, str] = {
    ReasonCode.BLANK: N_("image is blank, rescan suggested"),
    ReasonCode.TOO_DARK: N_("image too dark, rescan suggested"),
    ReasonCode.SATURATED: N_("image saturated, check exposure"),
    ReasonCode.LOW_CONTRAST: N_("low contrast, check window/exposure"),
    ReasonCode.TOO_SMALL: N_(
        "image too small for reliable reading (%(columns)s x %(rows)s pixels)"),
    ReasonCode.HEATMAP_ON_ANNOTATION: N_(
        "the heatmap's hot spot lies on burned-in text or a ruler, not on tissue: "
        "look at the marked area yourself"),
    ReasonCode.OUTSIDE_VALIDATED_RANGE: N_(
        "The image is unlike the images this model was validated on (its features lie "
        "%(ratio)s× beyond the validated limit); the model's answer cannot be trusted for it"),
    ReasonCode.MODALITY_NOT_ACCEPTED: N_(
        "modality %(modality)s is not one the model %(model)s accepts (%(accepted)s)"),
    ReasonCode.NO_ROUTING_RULE: N_("no routing rule matches this series (%(series)s)"),
    ReasonCode.MODEL_NOT_INSTALLED: N_(
        "routing rule %(rule)s chooses the model %(model)s, which is not installed on this "
        "box (it runs %(running)s)"),
    ReasonCode.DECODE_FAILED: "%(detail)s",
    ReasonCode.MISSING_FROM_SPOOL: N_("received object is missing from the spool (disk fault?)"),
    ReasonCode.INTERRUPTED: N_(
        "processing was interrupted %(attempts)s times (crash or power cut); object kept for "
        "a technician"),
    ReasonCode.PROCESSING_ERROR: N_("processing error: %(detail)s"),
    ReasonCode.INVALID_UID: N_("the SOP Instance UID is not a valid DICOM UID"),
    ReasonCode.PICTURE_UNREADABLE: N_("picture cannot be read: %(detail)s"),
    ReasonCode.EMPTY_FILE: N_("empty file"),
    ReasonCode.NOT_AN_IMAGE_FILE: N_(
        "not a DICOM file or a PNG/JPEG picture (content does not match its name)"),
    ReasonCode.EXCERPT_KEPT: N_("only its first %(kept_mb)s MB of %(size_mb)s MB kept"),
    ReasonCode.FILE_TOO_LARGE: N_(
        "file is %(size_mb)s MB, over the %(limit_mb)s MB object limit; not copied"),
    ReasonCode.SPARSE_FILE: N_(
        "sparse file (%(size_mb)s MB long, %(stored_mb)s MB stored on the medium): not an "
        "image a modality writes; not copied"),
    ReasonCode.CONFLICTING_DUPLICATE: N_(
        "same SOP Instance UID as instance %(instance)s, different content (from %(origin)s); "
        "kept aside, not analysed"),
    ReasonCode.UNKNOWN: "%(text)s",
}

#: codes whose text is someone else's words (a decoder's, or recorded before codes)
VERBATIM = frozenset({ReasonCode.DECODE_FAILED, ReasonCode.UNKNOWN})
#: quality codes whose own text already says "rescan suggested"
SAYS_RESCAN = frozenset({ReasonCode.BLANK, ReasonCode.TOO_DARK})

_FIELD = re.compile(r"%\((\w+)\)s")
#: each code's parameter names, read from its template
PARAMETERS: dict[ReasonCode, frozenset[str]] = {
    code: frozenset(_FIELD.findall(template)) for code, template in TEMPLATES.items()}

#: bounds on what :func:`decode` reads (a page must never choke on a stored value)
MAX_ENCODED = 64 * 1024
MAX_REASONS = 32
MAX_TEXT = 2000


def _valid_value(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return len(value) <= MAX_TEXT
    if isinstance(value, int):
        return abs(value) < 2**53
    return isinstance(value, float) and math.isfinite(value)


@dataclass(frozen=True)
class Reason:
    """One recorded reason: its code and the values its template names."""

    code: ReasonCode
    params: Mapping[str, ParamValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check the code and that the parameters are exactly the template's."""
        code = ReasonCode(self.code)
        object.__setattr__(self, "code", code)
        params = dict(self.params)
        if set(params) != PARAMETERS[code]:
            raise ValueError(f"reason {code.value} takes {sorted(PARAMETERS[code])}, "
                             f"got {sorted(params)}")
        if not all(_valid_value(v) for v in params.values()):
            raise ValueError(f"reason {code.value}: a parameter is not a short str, int or "
                             f"finite float: {params!r}")
        object.__setattr__(self, "params", params)

    def __hash__(self) -> int:
        """Hashable like its record (the parameters are a dict)."""
        return hash((self.code, tuple(sorted(self.params.items()))))

    def record(self) -> dict[str, Any]:
        """The reason as plain JSON values: ``{"code": …, "params": {…}}``."""
        return {"code": self.code.value, "params": dict(self.params)}

    def english(self) -> str:
        """The reason in English (logs, events, the SR)."""
        return TEMPLATES[self.code] % self.params


def unknown(text: str) -> Reason:
    """Text recorded without a code, kept to be shown as recorded."""
    return Reason(ReasonCode.UNKNOWN, {"text": str(text)[:MAX_TEXT]})


def records(reasons: Iterable[Reason]) -> list[dict[str, Any]]:
    """Reasons as plain JSON values (what ``--json`` outputs carry)."""
    return [reason.record() for reason in reasons]


def encode(reasons: Iterable[Reason]) -> str:
    """The stored form of a list of reasons: compact JSON, keys sorted; "" for none."""
    listed = records(reasons)
    if not listed:
        return ""
    return json.dumps(listed, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a value a reason holds")


def from_record(item: object) -> Reason:
    """One record back as a Reason; anything malformed is an ``unknown`` holding its text."""
    if isinstance(item, Mapping) and set(item) <= {"code", "params"} \
            and isinstance(item.get("code"), str) and isinstance(item.get("params", {}), Mapping):
        try:
            return Reason(ReasonCode(item["code"]), dict(item.get("params", {})))
        except ValueError:
            pass
    try:
        text = json.dumps(item, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(item)
    return unknown(text)


def from_records(items: object) -> list[Reason]:
    """A list of records (``records()``'s form) back as Reasons, leniently bounded."""
    if isinstance(items, (str, bytes)):
        return decode(items)
    if not isinstance(items, Sequence):
        return [] if items is None else [from_record(items)]
    return [from_record(item) for item in items[:MAX_REASONS]]


def decode(stored: str | bytes | None) -> list[Reason]:
    """The reasons of a stored value (:func:`encode`'s form); "" or None: none.

    Never raises: text that is not the encoding (recorded before codes, or damaged) is one
    ``unknown`` reason holding it; an unknown code or a malformed record is an ``unknown``
    holding that record's text; at most :data:`MAX_REASONS` are read.
    """
    if stored is None:
        return []
    if isinstance(stored, bytes):
        stored = stored.decode("utf-8", errors="replace")
    text = stored.strip()
    if not text:
        return []
    if len(text) > MAX_ENCODED or not text.startswith("["):
        return [unknown(text)]
    try:
        items = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return [unknown(text)]
    if not isinstance(items, list):
        return [unknown(text)]
    return [from_record(item) for item in items[:MAX_REASONS]]


def english(reasons: Iterable[Reason]) -> str:
    """Reasons in English, joined by "; " (logs, events, the SR)."""
    return "; ".join(reason.english() for reason in reasons)


def reason_table() -> list[tuple[str, str]]:
    """(code, English template) for every code, in the enum's order (the reference docs)."""
    return [(code.value, TEMPLATES[code]) for code in ReasonCode]
