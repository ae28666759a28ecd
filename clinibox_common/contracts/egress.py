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

from clinibox_common.contracts.backends import BACKENDS
from clinibox_common.contracts.clinic_threshold import THRESHOLD_STATES
from clinibox_common.contracts.drift import HISTOGRAM_BINS
from clinibox_common.contracts.statuses import AssessmentKind, Verdict
from clinibox_common.errors import CliniboxError
from clinibox_common.i18n import N_, gettext

SCHEMA_VERSION = 1
#: the runtimes a status may name (``contracts/backends.py``)
RUNTIMES = tuple(BACKENDS)
KINDS = ("alert", "summary", "status", "event")
#: Outbox priority per kind: lower drains first (alerts and device events before everything).
PRIORITY = {"alert": 0, "event": 0, "summary": 1, "status": 2}

#: what the box may say about an image (engine/inference/assessment.py)
ASSESSMENTS = tuple(kind.value for kind in AssessmentKind)
MODALITIES = (
    "CR", "CT", "DX", "ES", "IO", "MG", "MR", "NM", "OT", "PT", "PX", "RF", "SC", "US",
    "XA", "unknown",
)
STATES = ("online", "offline", "heartbeat")
#: What happened to the box (device events: model lifecycle and service failures;
#: ``model_unavailable``: a model the routing rules name is not running).
EVENTS = ("model_installed", "model_refused", "model_rolled_back", "runtime_fallback",
          "service_failed", "model_unavailable", "model_kept", "rollout", "model_drift")
#: Why, as a fixed word: never free text.
EVENT_REASONS = (
    "technician", "signature", "tampered", "invalid", "older_version", "golden_cases_failed",
    "load_failed", "worker_crashed", "worker_errors", "unit_failed", "not_installed",
    "hospital", "trial_passed", "no_space", "transfer", "replaced", "stale",
    # a software release refused or taken back (``software_release.EVENT_REASONS``)
    "needs_bundle", "database_change", "config_refused", "build_failed", "service_failed",
    "selftest_failed", "boot_interrupted",
    # a package the box installed crossed a drift bound (``firmware_app/models/drift_watch.py``)
    "disagreement", "score_drift",
)
#: Where a box stands in a hospital rollout (``rollout`` events, in this order when all
#: goes well; ``refused`` and ``rolled_back`` end it on that box, with the reason).
ROLLOUT_STEPS = ("offered", "downloading", "downloaded", "verified", "golden_passed",
                 "golden_failed", "on_trial", "kept", "rolled_back", "refused")
#: The systemd units whose failure a box reports (``OnFailure=`` hook).
UNITS = ("clinibox", "clinibox-web", "clinibox-retention", "clinibox-usb-import", "other")
#: A device or clinic id: lower-case letters, digits and dashes (it is a topic level).
IDENTITY = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}@[0-9][0-9A-Za-z.+-]{0,31}$")
#: A model id, or only a package name where no version of it is on the box.
MODEL_REF = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}(?:@[0-9][0-9A-Za-z.+-]{0,31})?$")
STUDY_REF = re.compile(r"^[0-9a-f]{32}$")
SOFTWARE_VERSION = re.compile(r"^[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}$")
LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
#: A raw 32-byte key in standard base64 (``contracts.downlink.key_text``): 44 characters.
KEY_TEXT = re.compile(r"^[A-Za-z0-9+/]{43}=$")
MAX_SECONDS = 2**40
#: The most lesions an alert carries (its model's highest scores first).
MAX_ALERT_LESIONS = 16
#: The largest lesion diameter an alert may carry (mm).
MAX_LESION_MM = 2000
#: the largest growth of a lesion's diameter an alert may carry (per cent of the earlier one)
MAX_GROWTH_PCT = 1000


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
class ListOf:
    """A list of at most ``max_items`` items, each checked by ``spec``."""

    spec: Any
    max_items: int

    def check(self, value: Any, where: str, labels: frozenset[str] | None) -> None:
        """Refuse anything but a list of at most ``max_items`` items that ``spec`` accepts."""
        if not isinstance(value, list):
            raise EgressRefused(f"{where}: must be a list")
        if len(value) > self.max_items:
            raise EgressRefused(f"{where}: more than {self.max_items} items")
        for i, item in enumerate(value):
            self.spec.check(item, f"{where}[{i}]", labels)


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

#: The complete allow-list, one closed object per message kind. Each field's ``#:`` comment
#: says what it is (the reference's meaning column: docs/reference/egress.md).
SCHEMAS: dict[str, Obj] = {
    "alert": Obj({
        #: the schema version (:data:`SCHEMA_VERSION`); the hospital refuses any other
        "schema": Int(SCHEMA_VERSION, SCHEMA_VERSION),
        #: when the box built the message (epoch seconds, the box's clock)
        "created_at": _SECONDS,
        #: the study, as a keyed hash of its Study Instance UID (the box's own secret): the
        #: same study gives the same reference, and no one else can compute it
        "study_ref": Pattern(STUDY_REF, "study reference (keyed hash)"),
        #: the finding's label: the key lesion box's, else the model's first label
        "finding": Label(),
        #: the highest finding probability of the model's images of the study (0 … 1)
        "score": Num(0, 1),
        #: the model's alert threshold the score crossed (probability 0 … 1)
        "threshold": Num(0, 1),
        #: the DICOM modality of the top image (``unknown`` for any other)
        "modality": OneOf(MODALITIES),
        #: the alerting model's id (``name@version``)
        "model": _MODEL,
        #: how many images of the study that model analysed
        "instances": _COUNT,
        #: the top image's processing time, decoding to result (milliseconds)
        "processing_ms": _MS,
        #: the model's assessment of the top image (``inference/assessment.py``; absent from
        #: boxes older than the console)
        "assessment": Optional(OneOf(ASSESSMENTS)),
        #: the lesions of the model's images of the study assessed ``finding``, highest score
        #: first, at most :data:`MAX_ALERT_LESIONS` (absent from boxes older than the console)
        "lesions": Optional(ListOf(Obj({
            #: the lesion's class: one of the model's labels
            "label": Label(),
            #: the lesion's probability (0 … 1)
            "score": Num(0, 1),
            #: the lesion's longest diameter (mm, the size the study page shows); absent
            #: where the image has no calibration
            "size_mm": Optional(Num(0, MAX_LESION_MM)),
            #: how much its diameter grew since the patient's earlier study (per cent of
            #: the earlier diameter, negative when it shrank; ``storage/growth.py``): a
            #: number only, never the earlier study's date or identifiers; absent where
            #: no earlier study was compared or it was not measured then
            "growth_pct": Optional(Num(-100, MAX_GROWTH_PCT)),
        }), MAX_ALERT_LESIONS)),
    }),
    "summary": Obj({
        #: the schema version (:data:`SCHEMA_VERSION`); the hospital refuses any other
        "schema": Int(SCHEMA_VERSION, SCHEMA_VERSION),
        #: when the box built the message (epoch seconds, the box's clock)
        "created_at": _SECONDS,
        #: the start of the period counted (epoch seconds; periods follow each other
        #: without gaps, across restarts)
        "period_start": _SECONDS,
        #: the end of the period counted (epoch seconds, not included)
        "period_end": _SECONDS,
        #: seconds since the box's telemetry service started
        "uptime_s": _SECONDS,
        #: the id of the model the box runs (``name@version``); absent while the box waits
        #: for its first model (it counts what it received all the same)
        "model": Optional(_MODEL),
        #: studies with an image analysed in the period
        "studies": _COUNT,
        #: images analysed in the period (results made)
        "instances": _COUNT,
        #: of those images, the ones with a finding
        "findings": _COUNT,
        #: alerts queued in the period (one per study and model)
        "alerts": _COUNT,
        #: quality warnings on the images analysed in the period (an image may have several)
        "quality_warnings": _COUNT,
        #: the images analysed in the period by assessment (an assessment no image had is
        #: left out)
        "assessments": CountsBy(ASSESSMENTS),
        #: objects quarantined in the period (kept aside for a technician)
        "quarantined": _COUNT,
        #: objects in the period that no model on the box is meant for
        "not_analysed": _COUNT,
        #: objects whose analysis failed in the period (errors or crashes, too often)
        "failed": _COUNT,
        #: the images analysed in the period by DICOM modality (``unknown`` for any other)
        "modalities": CountsBy(MODALITIES),
        #: processing time per image analysed in the period, decoding to result
        #: (milliseconds; all 0 when none was)
        "latency_ms": Obj({
            #: the median
            "p50": _MS,
            #: the 90th percentile
            "p90": _MS,
            #: the 99th percentile
            "p99": _MS,
            #: the longest
            "max": _MS,
        }),
        #: objects received and not yet analysed (queued or processing) when the message
        #: was built
        "queue_depth": _COUNT,
        #: how full the file system of the box's state folder is (percent)
        "disk_used_pct": Num(0, 100),
        #: free space on that file system (MiB)
        "disk_free_mb": Int(0, 2**40),
        #: messages waiting in the outbox when the message was built
        "outbox_pending": _COUNT,
        #: messages the outbox dropped (over its limit) since the last summary
        "outbox_dropped": _COUNT,
        #: the finding probabilities of the images analysed in the period, counted in
        #: :data:`HISTOGRAM_BINS` equal bins over 0 … 1 (drift, without images)
        "confidence_histogram": Counts(HISTOGRAM_BINS),
        #: the mean grey values (0 … 1) of the images analysed in the period, counted in
        #: :data:`HISTOGRAM_BINS` equal bins over 0 … 1 (drift, without images)
        "intensity_histogram": Counts(HISTOGRAM_BINS),
        #: the grey values of the images analysed in the period (0 … 1; 0 when none was)
        "intensity": Obj({
            #: the mean of the images' mean grey values
            "mean": Num(0, 1),
            #: the mean of the images' standard deviations of grey values
            "std": Num(0, 1),
        }),
        #: the clinicians' verdicts on findings given in the period, by verdict
        "feedback": Obj(dict.fromkeys((verdict.value for verdict in Verdict), _COUNT)),
    }),
    "status": Obj({
        #: the schema version (:data:`SCHEMA_VERSION`); the hospital refuses any other
        "schema": Int(SCHEMA_VERSION, SCHEMA_VERSION),
        #: when the box built the message (epoch seconds, the box's clock)
        "created_at": _SECONDS,
        #: ``online`` (the box connected to the broker), ``heartbeat`` (every
        #: ``[telemetry] heartbeat_seconds``) or ``offline`` (shutting down; also the last
        #: will the broker sends when the link drops)
        "state": OneOf(STATES),
        #: seconds since the box's telemetry service started
        "uptime_s": _SECONDS,
        #: the id of the model the box runs (``name@version``); left out while it runs none
        "model": Optional(_MODEL),
        #: the digest of that model's manifest (``signing.manifest_digest``: SHA-256 of its
        #: canonical form); the hospital's rollout counts a box only when name, version and
        #: digest are the package's. Left out while it runs none (and by older boxes)
        "model_digest": Optional(_SHA256),
        #: why the box runs no model and holds what it receives (``not_installed``,
        #: ``signature`` …); left out while it analyses
        "waiting_for_model": Optional(OneOf(EVENT_REASONS)),
        #: the box's software version (``firmware_app.__version__``: the installed distribution's)
        "software": Pattern(SOFTWARE_VERSION, "software version"),
        #: objects received and not yet analysed (queued or processing)
        "queue_depth": _COUNT,
        #: messages waiting in the outbox
        "outbox_pending": _COUNT,
        #: the runtime the box's model runs on (``onnxruntime``, ``openvino``, ``tflite``);
        #: left out while the box does not analyse
        "runtime": Optional(OneOf(RUNTIMES)),
        #: 1 when that runtime is a fallback: the one the box chose first failed the model's
        #: golden cases (a ``runtime_fallback`` event said which), 0 otherwise
        "runtime_fallback": Optional(Int(0, 1)),
        #: the head of the box's audit trail, witnessed off the box (heartbeat and online;
        #: ``storage.audit_witness``): its last row and hash, and the hash the chain has now
        #: at the row the previous acknowledged status reported
        "audit": Optional(Obj({
            #: the id of the trail's last row (the anchor's while the trail has none)
            "row": _AUDIT_ROW,
            #: that row's hash (SHA-256, hex)
            "hash": _SHA256,
            #: the row the last status acknowledged by the broker reported (``row`` on the
            #: box's first report, and when that row is gone)
            "since_row": _AUDIT_ROW,
            #: the hash the chain has at ``since_row`` now, made again from the database: a
            #: trail rewritten since gives another one
            "since_hash": _SHA256,
            #: when the head row was written (epoch seconds; 0 for an empty trail): a row
            #: the hospital saw written less than keep_days ago cannot have been pruned
            "at": Optional(_SECONDS),
            #: the id of the last row pruned (the anchor's, ``storage.audit_schema``): the
            #: trail starts after it. A witnessed row at or before it written less than
            #: ``keep_days`` ago was deleted, not pruned: the hospital raises ``pruned_early``
            "anchor_row": Optional(_AUDIT_ROW),
            #: the box's ``[audit] keep_days`` (0: nothing is pruned)
            "keep_days": Optional(Num(0, 36500)),
        })),
        #: the box's X25519 public key for the hospital's downlink (``contracts.downlink``:
        #: base64 of the raw 32 bytes); the hospital encrypts its verdicts to it (absent from
        #: boxes older than the downlink)
        "downlink_key": Optional(Pattern(KEY_TEXT, "downlink key (base64)")),
        #: the highest n such that every downlink 1 … n has been received and kept (0: none
        #: yet); the hospital sends again whatever came after it
        "downlink_seq": Optional(_AUDIT_ROW),
        #: 1 when the box takes the hospital's time (a ``clock`` downlink: decision 0048);
        #: absent from older boxes, which the hospital then sends none (they would refuse it,
        #: and its sequence number would hold up every downlink after it)
        "takes_time": Optional(Int(1, 1)),
        #: the running model's finding threshold on this box (``models/calibration.py``):
        #: the clinic's own or the package's; left out while it runs none (and by older boxes)
        "threshold": Optional(Obj({
            #: the finding threshold the box uses (a probability)
            "finding": Num(0, 1),
            #: the package's finding threshold for the artifact it runs
            "package": Num(0, 1),
            #: where it comes from (``contracts/clinic_threshold.ThresholdState``)
            "state": OneOf(THRESHOLD_STATES),
            #: the confirmed lesions and clear images it was set from
            "lesions": _COUNT,
            "clear": _COUNT,
        })),
    }),
    "event": Obj({
        #: the schema version (:data:`SCHEMA_VERSION`); the hospital refuses any other
        "schema": Int(SCHEMA_VERSION, SCHEMA_VERSION),
        #: when the box built the message (epoch seconds, the box's clock)
        "created_at": _SECONDS,
        #: what happened: a model installed, refused, rolled back, fallen back to another
        #: runtime or unavailable, or a service failed
        "event": OneOf(EVENTS),
        #: why, as a fixed word (who or which check: ``technician``, ``signature``,
        #: ``golden_cases_failed`` …)
        "reason": OneOf(EVENT_REASONS),
        #: the systemd unit that failed (``service_failed``); ``clinibox`` for the others
        "unit": OneOf(UNITS),
        #: the model the box runs after the event; left out while it runs none
        "model": Optional(_MODEL),
        #: the model the event is about (installed, refused, rolled back or unavailable; else
        #: the running one); only its package name when no version of it is on the box
        "subject_model": Pattern(MODEL_REF, "model id or name"),
        #: the hospital's rollout the event belongs to (``rollout`` events, and the install,
        #: trial and rollback of a package a rollout brought)
        "rollout": Optional(Int(1, 2**63 - 1)),
        #: the box's step in that rollout (``rollout`` events)
        "step": Optional(OneOf(ROLLOUT_STEPS)),
        #: how far the package's download has come: the bytes of the archive received so
        #: far (``downloading`` steps, sent at each tenth of the archive)
        "received_bytes": Optional(Int(0, 2**40)),
        #: the archive's size in bytes, beside ``received_bytes``
        "total_bytes": Optional(Int(0, 2**40)),
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
        raise ValueError(gettext(
            "%(what)s must be 1-32 lower-case letters, digits or dashes (not starting or "
            "ending with a dash), got %(value)s",
            what=gettext(_IDENTITY_WORDS[what]) if what in _IDENTITY_WORDS else what,
            value=repr(value)))
    return value


#: the ids :func:`check_identity` names, in words
_IDENTITY_WORDS = {"clinic": N_("clinic"), "device": N_("device")}
