"""Build the four outbound messages from the box's database.

* alert — one per study and model (by name), once the study is complete and
  that model's results on it cross its alert threshold
  (``storage.study_alerts``); the study is named only by its keyed-hash
  reference.
* summary — counts and figures over one period, including drift figures
  without images: a histogram of model confidence and of input intensity.
* status — online / heartbeat / offline, with uptime and backlog (heartbeat and
  online: the head of the audit trail, for the hospital to witness).
* device event — a model installed, refused, rolled back, fallen back to another
  runtime or not available (``device_event``), with its reason from a closed list.

Every builder returns a payload that fits ``schema.SCHEMAS`` exactly; the
outbox checks it again before storing. Nothing here reads a DICOM string, a
UID or a date into a payload: the study's UID is only ever an HMAC input.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clinibox_common.contracts.drift import histogram
from clinibox_common.contracts.egress import (
    ASSESSMENTS,
    MAX_ALERT_LESIONS,
    MAX_GROWTH_PCT,
    MAX_LESION_MM,
    MODALITIES,
    RUNTIMES,
    SCHEMA_VERSION,
)
from clinibox_common.contracts.statuses import AssessmentKind
from firmware_app import __version__
from firmware_app.settings.box import Config
from firmware_app.storage import (
    audit_witness,
    clinic_thresholds,
    disk,
    growth,
    hospital_reviews,
    studies,
    study_alerts,
)
from firmware_app.storage import telemetry as telemetry_rows
from firmware_app.storage.db import record_event, transaction
from firmware_app.storage.outbox import Outbox
from firmware_app.telemetry.identity import DeviceIdentity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFacts:
    """What the messages say about the running model.

    ``labels`` are every finding label an alert may carry (the box's own
    model's first); ``others`` are the other running models (routing rules),
    each with its own labels and alert threshold.
    """

    model_id: str
    labels: tuple[str, ...]
    alert_threshold: float
    others: tuple[ModelFacts, ...] = ()
    #: the runtime the box's model runs on ("" while the box does not analyse)
    runtime: str = ""
    #: whether that runtime is a fallback (the first choice failed the golden cases)
    runtime_fallback: bool = False
    #: why the box runs no model (a reason code; "" while it analyses, ``model_id`` then "")
    waiting_for_model: str = ""
    #: the running model's manifest digest (``signing.manifest_digest``; "" unknown)
    manifest_digest: str = ""

    def for_model(self, model_id: str) -> ModelFacts:
        """The facts of the running model with ``model_id``'s name (any version): one of
        ``others``, else the box's own."""
        name = model_id.partition("@")[0]
        return next((m for m in self.others if m.model_id.partition("@")[0] == name), self)


def _modality(value: str | None) -> str:
    return value if value in MODALITIES else "unknown"


def _label(findings_json: str | None, labels: tuple[str, ...]) -> str:
    """The finding type: the key box's label when it is a model label, else the first label."""
    for box in json.loads(findings_json or "[]"):
        if isinstance(box, dict) and box.get("label") in labels:
            return str(box["label"])
    return labels[0]


def _number(value: Any) -> float | None:
    """A finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def alert_lesions(records: list[dict[str, Any]], labels: tuple[str, ...]) -> list[dict[str, Any]]:
    """An alert's lesions from stored lesion records (``inference/lesions.py``): class, score
    and longest diameter in mm (where the image is calibrated, as the study page shows it),
    highest score first, at most ``MAX_ALERT_LESIONS``; a record whose label is not one of
    the model's or whose probability is not 0 … 1 is left out."""
    kept = []
    for record in records:
        score = _number(record.get("probability"))
        if record.get("label") not in labels or score is None or not 0 <= score <= 1:
            continue
        lesion: dict[str, Any] = {"label": str(record["label"]), "score": round(score, 4)}
        size = _number(record.get("long_axis_mm")) if record.get("units") == "mm" else None
        if size is not None and 0 <= size <= MAX_LESION_MM:
            lesion["size_mm"] = round(size, 1)
        growth = _number(record.get("growth_pct"))
        if growth is not None and -100 <= growth <= MAX_GROWTH_PCT:
            lesion["growth_pct"] = round(growth, 1)
        kept.append(lesion)
    kept.sort(key=lambda lesion: -lesion["score"])
    return kept[:MAX_ALERT_LESIONS]


def with_growth(conn: sqlite3.Connection, study_key: str, records: list[dict[str, Any]]
                ) -> list[dict[str, Any]]:
    """The lesion records, each compared with its earlier self (``storage/growth.py``) given
    its growth in per cent (``growth_pct``)."""
    study_id = studies.study_id(conn, study_key)
    try:
        compared = None if study_id is None else growth.study_growth(conn, study_id)
    except Exception:  # a comparison never holds an alert back
        log.exception("study %s: its lesions not compared for the alert", study_id)
        compared = None
    if compared is None:
        return records
    percents = {_lesion_key(record): lesion.percent
                for record, lesion in zip(compared.records, compared.lesions, strict=True)
                if lesion.percent is not None}
    return [{**record, "growth_pct": percents[_lesion_key(record)]}
            if _lesion_key(record) in percents else record for record in records]


def _lesion_key(record: dict[str, Any]) -> str:
    return json.dumps([record.get("label"), record.get("box"), record.get("frame")])


def alert_payload(row: sqlite3.Row, study_ref: str, model: ModelFacts,
                  lesions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The alert of one study and model, from a ``study_alerts.alerts_due`` row: that model's
    id, top probability, finding, threshold, instances and top image's assessment, and the
    lesions of ``lesions`` (stored lesion records: :func:`alert_lesions`)."""
    facts = model.for_model(str(row["model_id"]))
    payload = {
        "schema": SCHEMA_VERSION,
        "created_at": int(time.time()),
        "study_ref": study_ref,
        "finding": _label(row["findings_json"], facts.labels),
        "score": round(float(row["max_probability"]), 4),
        "threshold": round(facts.alert_threshold, 4),
        "modality": _modality(row["modality"]),
        "model": row["model_id"],
        "instances": int(row["instances"]),
        "processing_ms": round(float(json.loads(row["timings_json"]).get("total", 0.0)), 1),
        "lesions": alert_lesions(lesions or [], facts.labels),
    }
    if row["assessment"] in ASSESSMENTS:
        payload["assessment"] = row["assessment"]
    return payload


def queue_alerts(conn: sqlite3.Connection, outbox: Outbox, identity: DeviceIdentity,
                 model: ModelFacts) -> int:
    """Enqueue the alerts complete studies owe, one per study and alerting model; return
    how many.

    A study's alerts, the notes that they were sent and the note that its
    completion was checked are one transaction, so a crash neither loses an
    alert nor sends one twice.
    """
    queued = 0
    for study in study_alerts.studies_to_check(conn):
        with transaction(conn):
            rows = study_alerts.alerts_due(conn, study)
            for row in rows:
                lesions = with_growth(conn, study.study_key, study_alerts.alert_lesions(
                    conn, study, str(row["model"]), AssessmentKind.FINDING.value))
                seq = outbox.add("alert", alert_payload(row, identity.study_ref(study.study_key),
                                                        model, lesions))
                study_alerts.mark_alerted(conn, study.study_key, str(row["model"]), seq,
                                          int(row["instance_id"]))
            study_alerts.mark_checked(conn, study)
        queued += len(rows)
    return queued


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max in milliseconds (zeros when there is nothing)."""
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    array = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(array, [50, 90, 99])
    return {"p50": round(float(p50), 2), "p90": round(float(p90), 2),
            "p99": round(float(p99), 2), "max": round(float(array.max()), 2)}


def build_summary(conn: sqlite3.Connection, outbox: Outbox, model: ModelFacts,
                  period: tuple[float, float], uptime_s: float, state_dir: Path) -> dict[str, Any]:
    """Counts and figures over ``period`` (start, end) in box-clock seconds."""
    start, end = period
    rows = telemetry_rows.period_rows(conn, start, end)
    counts = telemetry_rows.period_counts(conn, start, end)
    modalities: dict[str, int] = {}
    for row in rows:
        key = _modality(row[6])
        modalities[key] = modalities.get(key, 0) + 1
    means = [float(r[4]) for r in rows if r[4] is not None]
    stds = [float(r[5]) for r in rows if r[5] is not None]
    usage = disk.usage(state_dir)  # the one disk figure (storage/disk.py)
    dropped = outbox.counter("dropped_total")
    reported = outbox.counter("dropped_reported")
    telemetry_rows.set_state(conn, "dropped_reported", dropped)
    return {
        "schema": SCHEMA_VERSION,
        "created_at": int(time.time()),
        "period_start": int(start),
        "period_end": int(end),
        "uptime_s": int(uptime_s),
        # a box waiting for its first model has none to name
        **({"model": model.model_id} if model.model_id else {}),
        "studies": len({r[7] for r in rows}),
        "instances": len(rows),
        "findings": sum(int(r[1]) for r in rows),
        "alerts": counts["alerts"],
        "quality_warnings": sum(len(json.loads(r[2])) for r in rows),
        "assessments": {a: n for a in ASSESSMENTS if (n := sum(r[8] == a for r in rows))},
        "quarantined": counts["quarantined"],
        "not_analysed": counts["not_analysed"],
        "failed": counts["failed"],
        "modalities": modalities,
        "latency_ms": percentiles([float(json.loads(r[3]).get("total", 0.0)) for r in rows]),
        "queue_depth": telemetry_rows.queue_depth(conn),
        "disk_used_pct": disk.used_percent(usage),
        "disk_free_mb": int(usage.free // 2**20),
        "outbox_pending": outbox.pending_count(),
        "outbox_dropped": max(0, dropped - reported),
        "confidence_histogram": histogram([float(r[0]) for r in rows]),
        "intensity_histogram": histogram(means),
        "intensity": {"mean": round(float(np.mean(means)), 4) if means else 0.0,
                      "std": round(float(np.mean(stds)), 4) if stds else 0.0},
        "feedback": counts["feedback"],
    }


def build_status(conn: sqlite3.Connection, outbox: Outbox, model: ModelFacts, state: str,
                 uptime_s: float, downlink_key: str | None = None, *,
                 audit_keep_days: float | None = None) -> dict[str, Any]:
    """An online, heartbeat or offline status message; heartbeat and online ones carry the
    head of the audit trail for the hospital to witness (``storage.audit_witness``; with
    ``audit_keep_days``, where the trail starts and that period). With ``downlink_key``
    (the box takes the hospital's downlink) it carries that key, the downlink's watermark
    (``downlink_seq``) and ``takes_time`` (it takes the hospital's ``clock`` downlink)."""
    payload: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "created_at": int(time.time()),
        "state": state,
        "uptime_s": int(uptime_s),
        "software": __version__,
        "queue_depth": telemetry_rows.queue_depth(conn),
        "outbox_pending": outbox.pending_count(),
    }
    if model.model_id:
        payload["model"] = model.model_id
        if model.manifest_digest:
            payload["model_digest"] = model.manifest_digest
    if model.waiting_for_model:
        payload["waiting_for_model"] = model.waiting_for_model
    threshold = clinic_thresholds.latest(conn, model.model_id) if model.model_id else None
    if threshold is not None:
        payload["threshold"] = {"finding": round(threshold.finding, 6),
                                "package": round(threshold.package_finding, 6),
                                "state": threshold.state.value, "lesions": threshold.lesions,
                                "clear": threshold.clear}
    if model.runtime in RUNTIMES:
        payload["runtime"] = model.runtime
        payload["runtime_fallback"] = int(model.runtime_fallback)
    if state in audit_witness.WITNESSED_STATES:
        payload["audit"] = audit_witness.status_field(conn, audit_keep_days)
    if downlink_key is not None:
        payload["downlink_key"] = downlink_key
        payload["downlink_seq"] = hospital_reviews.watermark(conn)
        payload["takes_time"] = 1  # telemetry/hospital_time.py
    return payload


def status_downlink_key(config: Config, identity: DeviceIdentity) -> str | None:
    """The downlink key a status carries: the box's, when it takes the hospital's downlink
    (``[telemetry] hospital_signing_key`` set), else None."""
    return identity.downlink_key_text if config.telemetry.hospital_signing_key else None


def device_event(event: str, reason: str, model: str, subject_model: str = "",
                 unit: str = "clinibox", *, rollout: int = 0, step: str = "",
                 progress: tuple[int, int] | None = None) -> dict[str, Any]:
    """A device event (model installed, refused, kept or rolled back; a rollout's step; a
    service failed). ``model`` "" while the box runs none; ``rollout`` and ``step`` name a
    hospital rollout and the box's step in it; ``progress`` (bytes received, total) how far
    its download has come."""
    payload: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "created_at": int(time.time()),
        "event": event,
        "reason": reason,
        "unit": unit,
        "subject_model": subject_model or model,
    }
    if model:
        payload["model"] = model
    if rollout:
        payload["rollout"] = int(rollout)
    if step:
        payload["step"] = step
    if progress is not None:
        payload["received_bytes"], payload["total_bytes"] = (int(n) for n in progress)
    return payload


#: the event-log component of device events (``clinibox status`` shows them under it)
LIFECYCLE = "lifecycle"
#: device events that are good news: noted at INFO in the box's log, the rest at WARNING
QUIET_EVENTS = frozenset({"model_installed", "model_kept", "rollout"})


def queue_device_event(conn: sqlite3.Connection, max_messages: int, payload: dict[str, Any],
                       note: str) -> int:
    """Put a device event in the outbox and the box's own event log, in one transaction."""
    outbox = Outbox(conn, max_messages, frozenset())
    with transaction(conn):
        seq = outbox.add("event", payload)
        record_event(conn, "INFO" if payload["event"] in QUIET_EVENTS else "WARNING",
                     LIFECYCLE, note, lifecycle_code(payload))
    return seq


def lifecycle_code(payload: dict[str, Any]) -> str:
    """The code a device event is kept under in the box's event log, from which the viewer
    says it in words: ``event:reason``, and ``:step`` for a rollout's step
    (``model_unavailable:signature``, ``rollout:hospital:downloading``)."""
    parts = [payload["event"], payload["reason"]]
    if payload.get("step"):
        parts.append(payload["step"])
    return ":".join(parts)
