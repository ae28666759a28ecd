"""The egress gate: the closed schema of everything that may leave the box.

Every outbound message is checked here before it is stored in the outbox and
again before it is encrypted. Only the fields written below exist; each is a
number in a range, a member of a fixed enumeration, the model id, the device
identity, a keyed-hash study reference or the SHA-256 head of the box's audit
trail (status messages: ``storage.audit_witness``). There is no free-text field, so no
DICOM string value, UID, patient date or pixel can be carried, whatever a
caller puts in. The hospital's receiver checks the same schema after
decryption.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from firmware_app.contracts.statuses import AssessmentKind, Verdict
from firmware_app.errors import CliniboxError

SCHEMA_VERSION = 1
KINDS = ("alert", "summary", "status", "event")
#: Outbox priority per kind: lower drains first (alerts and device events before everything).
PRIORITY = {"alert": 0, "event": 0, "summary": 1, "status": 2}

#: what the box may say about an image (firmware_app/inference/assessment.py)
ASSESSMENTS = tuple(kind.value for kind in AssessmentKind)
MODALITIES = (
    "CR", "CT", "DX", "ES", "IO", "MG", "MR", "NM", "OT", "PT", "PX", "RF", "SC", "US",
    "XA", "unknown",
)
STATES = ("online", "offline", "heartbeat")
#: What happened to the box (device events: model lifecycle and service failures;
#: ``model_unavailable``: a model the routing rules name is not running).
EVENTS = ("model_installed", "model_refused", "model_rolled_back", "runtime_fallback",
          "service_failed", "model_unavailable")
#: Why, as a fixed word: never free text.
EVENT_REASONS = (
    "technician", "signature", "tampered", "invalid", "older_version", "golden_cases_failed",
    "load_failed", "worker_crashed", "worker_errors", "unit_failed", "not_installed",
)
#: The systemd units whose failure a box reports (``OnFailure=`` hook).
UNITS = ("clinibox", "clinibox-web", "clinibox-retention", "clinibox-usb-import", "other")
HISTOGRAM_BINS = 10
#: A device or clinic id: lower-case letters, digits and dashes (it is a topic level).
IDENTITY = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}@[0-9][0-9A-Za-z.+-]{0,31}$")
#: A model id, or only a package name where no version of it is on the box.
MODEL_REF = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}(?:@[0-9][0-9A-Za-z.+-]{0,31})?$")
STUDY_REF = re.compile(r"^[0-9a-f]{32}$")
SOFTWARE_VERSION = re.compile(r"^[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}$")
LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MAX_SECONDS = 2**40


class EgressRefused(CliniboxError, ValueError):
    """A message that does not fit the closed schema; it never leaves the box."""

    kind = "telemetry refused"


@dataclass(frozen=True)
class Int:
    """An integer in [lo, hi] (booleans refused)."""

    lo: int
    hi: int

    def check(self, value: Any, where: str, labels: frozenset[str] | None) -> None:
        """Refuse anything that is not an int within range."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise EgressRefused(f"{where}: must be an integer, got {type(value).__name__}")
        if not self.lo <= value <= self.hi:
            raise EgressRefused(f"{where}: {value} is outside [{self.lo}, {self.hi}]")


@dataclass(frozen=True)
class Num:
    """A finite number in [lo, hi]."""

    lo: float
    hi: float

    def check(self, value: Any, where: str, labels: frozenset[str] | None) -> None:
        """Refuse anything that is not a finite number within range."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EgressRefused(f"{where}: must be a number, got {type(value).__name__}")
        if not math.isfinite(value) or not self.lo <= value <= self.hi:
            raise EgressRefused(f"{where}: {value} is outside [{self.lo}, {self.hi}]")


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of strings."""

    values: tuple[str, ...]

    def check(self, value: Any, where: str, labels: frozenset[str] | None) -> None:
        """Refuse any string not in the set."""
        if not isinstance(value, str) or value not in self.values:
            raise EgressRefused(f"{where}: not one of the allowed values")


@dataclass(frozen=True)
class Label:
    """A finding label of the running model (its manifest's ``labels``)."""

    def check(self, value: Any, where: str, labels: frozenset[str] | None) -> None:
        """Refuse anything that is not one of the model's labels."""
        if not isinstance(value, str) or not LABEL.fullmatch(value):
            raise EgressRefused(f"{where}: not a valid label")
        if labels is not None and value not in labels:
            raise EgressRefused(f"{where}: not one of the model's labels")


@dataclass(frozen=True)
class Pattern:
    """A short machine string: model id, study reference, software version."""

    regex: re.Pattern[str]
    what: str

    def check(self, value: Any, where: str, labels: frozenset[str] | None) -> None:
        """Refuse anything that does not match the pattern in full."""
        if not isinstance(value, str) or not self.regex.fullmatch(value):
            raise EgressRefused(f"{where}: not a valid {self.what}")


@dataclass(frozen=True)
class Counts:
    """A list of exactly ``length`` non-negative counts (a histogram)."""

    length: int

    def check(self, value: Any, where: str, labels: frozenset[str] | None) -> None:
        """Refuse anything but a list of ``length`` counts."""
        if not isinstance(value, list) or len(value) != self.length:
            raise EgressRefused(f"{where}: must be a list of {self.length} counts")
        for i, item in enumerate(value):
            Int(0, 2**31).check(item, f"{where}[{i}]", labels)


@dataclass(frozen=True)
class Optional:
    """A field that may be left out of its object; when present, ``spec`` checks it."""

    spec: Any

    def check(self, value: Any, where: str, labels: frozenset[str] | None) -> None:
        """Check a present value with ``spec``."""
        self.spec.check(value, where, labels)


@dataclass(frozen=True)
class Obj:
    """A closed object: exactly these fields (all required but :class:`Optional` ones),
    nothing else."""

    fields: dict[str, Any]

    def check(self, value: Any, where: str, labels: frozenset[str] | None) -> None:
        """Refuse unknown or missing fields, then check each one."""
        if not isinstance(value, dict):
            raise EgressRefused(f"{where}: must be an object")
        extra = sorted(set(value) - set(self.fields), key=str)
        if extra:
            raise EgressRefused(f"{where}: field(s) not on the allow-list: {len(extra)}")
        missing = sorted(name for name, spec in self.fields.items()
                         if name not in value and not isinstance(spec, Optional))
        if missing:
            raise EgressRefused(f"{where}: missing field(s) {', '.join(missing)}")
        for name, spec in self.fields.items():
            if name in value:
                spec.check(value[name], f"{where}.{name}", labels)


@dataclass(frozen=True)
class CountsBy:
    """An object whose keys come from a fixed set and whose values are counts."""

    keys: tuple[str, ...]

    def check(self, value: Any, where: str, labels: frozenset[str] | None) -> None:
        """Refuse keys outside the set and values that are not counts."""
        if not isinstance(value, dict):
            raise EgressRefused(f"{where}: must be an object")
        for key, count in value.items():
            if key not in self.keys:
                raise EgressRefused(f"{where}: key not on the allow-list")
            Int(0, 2**31).check(count, f"{where}.{key}", labels)


_SECONDS = Int(0, MAX_SECONDS)
_COUNT = Int(0, 2**31)
_MS = Num(0, 86_400_000)
_MODEL = Pattern(MODEL_ID, "model id")
_AUDIT_ROW = Int(0, 2**63 - 1)
_SHA256 = Pattern(SHA256_HEX, "SHA-256 (64 lower-case hex digits)")

#: The complete allow-list, one closed object per message kind.
SCHEMAS: dict[str, Obj] = {
    "alert": Obj({
        "schema": Int(SCHEMA_VERSION, SCHEMA_VERSION),
        "created_at": _SECONDS,
        "study_ref": Pattern(STUDY_REF, "study reference (keyed hash)"),
        "finding": Label(),
        "score": Num(0, 1),
        "threshold": Num(0, 1),
        "modality": OneOf(MODALITIES),
        "model": _MODEL,
        "instances": _COUNT,
        "processing_ms": _MS,
    }),
    "summary": Obj({
        "schema": Int(SCHEMA_VERSION, SCHEMA_VERSION),
        "created_at": _SECONDS,
        "period_start": _SECONDS,
        "period_end": _SECONDS,
        "uptime_s": _SECONDS,
        "model": _MODEL,
        "studies": _COUNT,
        "instances": _COUNT,
        "findings": _COUNT,
        "alerts": _COUNT,
        "quality_warnings": _COUNT,
        "assessments": CountsBy(ASSESSMENTS),
        "quarantined": _COUNT,
        "not_analysed": _COUNT,
        "failed": _COUNT,
        "modalities": CountsBy(MODALITIES),
        "latency_ms": Obj({"p50": _MS, "p90": _MS, "p99": _MS, "max": _MS}),
        "queue_depth": _COUNT,
        "disk_used_pct": Num(0, 100),
        "disk_free_mb": Int(0, 2**40),
        "outbox_pending": _COUNT,
        "outbox_dropped": _COUNT,
        "confidence_histogram": Counts(HISTOGRAM_BINS),
        "intensity_histogram": Counts(HISTOGRAM_BINS),
        "intensity": Obj({"mean": Num(0, 1), "std": Num(0, 1)}),
        "feedback": Obj(dict.fromkeys((verdict.value for verdict in Verdict), _COUNT)),
    }),
    "status": Obj({
        "schema": Int(SCHEMA_VERSION, SCHEMA_VERSION),
        "created_at": _SECONDS,
        "state": OneOf(STATES),
        "uptime_s": _SECONDS,
        "model": _MODEL,
        "software": Pattern(SOFTWARE_VERSION, "software version"),
        "queue_depth": _COUNT,
        "outbox_pending": _COUNT,
        #: the head of the box's audit trail, witnessed off the box (heartbeat and online;
        #: ``storage.audit_witness``): its last row and hash, and the hash the chain has now
        #: at the row the previous acknowledged status reported
        "audit": Optional(Obj({
            "row": _AUDIT_ROW,
            "hash": _SHA256,
            "since_row": _AUDIT_ROW,
            "since_hash": _SHA256,
            #: when the head row was written (epoch seconds; 0 for an empty trail): a row
            #: the hospital saw written less than keep_days ago cannot have been pruned
            "at": Optional(_SECONDS),
        })),
    }),
    "event": Obj({
        "schema": Int(SCHEMA_VERSION, SCHEMA_VERSION),
        "created_at": _SECONDS,
        "event": OneOf(EVENTS),
        "reason": OneOf(EVENT_REASONS),
        "unit": OneOf(UNITS),
        #: the model the box runs after the event
        "model": _MODEL,
        #: the model the event is about (installed, refused, rolled back or unavailable; else
        #: the running one); only its package name when no version of it is on the box
        "subject_model": Pattern(MODEL_REF, "model id or name"),
    }),
}


def check_message(kind: str, payload: Any, labels: frozenset[str] | set[str] | None) -> None:
    """Raise EgressRefused unless ``payload`` is exactly a ``kind`` message of the schema.

    ``labels`` are the running model's finding labels (the only label values
    an alert may carry); the hospital, which does not load models, passes
    None and only the label's shape is checked. Refusal messages name the
    field, never its value.
    """
    if kind not in SCHEMAS:
        raise EgressRefused(f"unknown message kind {kind!r}")
    SCHEMAS[kind].check(payload, kind, None if labels is None else frozenset(labels))


def check_identity(value: str, what: str) -> str:
    """Return a clinic or device id if it is a safe topic level, else raise ValueError."""
    if not isinstance(value, str) or not IDENTITY.fullmatch(value):
        raise ValueError(
            f"{what} must be 1-32 lower-case letters, digits or dashes "
            f"(not starting or ending with a dash), got {value!r}"
        )
    return value
