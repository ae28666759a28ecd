"""Studies as the viewer reads them: worklist, one study, feedback (the box database).

Every query here is bounded (a page of the worklist, one study, grouped
counts) and served by an index, so pages stay fast with years of studies in
the store (``bench/viewer.py`` measures them with 10,000).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from clinibox_common.contracts.reasons import decode, records
from clinibox_common.contracts.statuses import (
    HELD_STATUSES,
    WAITING_STATUSES,
    AssessmentKind,
    InstanceStatus,
)
from engine.inference.assessment import (
    BAND_ALERT,
    BAND_FINDING,
    BAND_NO_FINDING,
    is_judged,
    shown_probability,
)
from engine.inference.tracking import study_summary
from firmware_app.storage.priors import EARLIER_STUDY_SQL
from firmware_app.storage.results import decode_heatmap
from firmware_app.storage.status import day_bounds
from firmware_app.storage.study_rollup import (
    RESULTS_IN_CLINICAL_ORDER,
    SHOWN_PROBABILITY,
    STUDIES_IN_CLINICAL_ORDER,
)
from firmware_app.storage.volumes import study_volumes

#: Worklist filters: every study, alerts only, studies done, objects waiting, objects held back,
#: images no model here is meant for.
WORKLIST_FILTERS = ("all", "alert", "done", "waiting", "quarantined", "not_analysed")
#: the instance statuses each object filter lists
OBJECT_FILTERS = {"waiting": WAITING_STATUSES, "quarantined": HELD_STATUSES,
                  "not_analysed": (InstanceStatus.NOT_ANALYSED,)}


#: The distinct quality warnings of a study's instances, as one stored list of reasons
#: (``contracts/reasons.py``).
_WARNING_TEXT = (
    "SELECT json_group_array(json(warning)) FROM (SELECT DISTINCT w.value AS warning"
    " FROM instances i JOIN results r ON r.instance_id = i.id, json_each(r.warnings_json) w"
    " WHERE i.study_instance_uid = s.study_key)")


def _marks(values: tuple[str, ...] | list[str]) -> str:
    """One SQL parameter mark per value: ``?, ?, ?``."""
    return ", ".join("?" * len(values))


@dataclass
class WorklistPage:
    """One page of the worklist with the counts shown above it."""

    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    waiting: int
    quarantined: int
    alerts: int
    not_analysed: int = 0


def worklist(conn: sqlite3.Connection, *, status: str = "all", day: dt.date | None = None,
             page: int = 1, page_size: int = 50) -> WorklistPage:
    """Studies sorted by suspicion (alerts first), or the objects waiting or held back."""
    if status not in WORKLIST_FILTERS:
        raise ValueError(f"unknown worklist filter {status!r}")
    # The day condition only when a day is chosen: without it SQLite takes the page from the
    # studies_clinical_order index's bands, sorting only by the percent shown and arrival
    # (STUDIES_IN_CLINICAL_ORDER; 2 ms for 50 000 studies on the bench machine).
    span, span_args = "", ()
    if day:
        span, span_args = " AND received_at >= ? AND received_at < ?", day_bounds(day)
    groups = (WAITING_STATUSES, HELD_STATUSES, (InstanceStatus.NOT_ANALYSED,))
    shown = [status for group in groups for status in group]
    counts = conn.execute(
        "SELECT " + ", ".join(f"SUM(status IN ({_marks(group)}))" for group in groups)
        + f" FROM instances WHERE status IN ({_marks(shown)})" + span,
        (*shown, *shown, *span_args)).fetchone()
    alerts = conn.execute(  # an earlier study fetched to compare is no alert of today's
        f"SELECT COUNT(*) FROM studies s WHERE alert = 1 AND NOT {EARLIER_STUDY_SQL}" + span,
        span_args).fetchone()[0]
    page = max(1, page)
    offset = (page - 1) * page_size
    if status in OBJECT_FILTERS:
        states = OBJECT_FILTERS[status]
        marks = ", ".join("?" * len(states))
        total = conn.execute(f"SELECT COUNT(*) FROM instances WHERE status IN ({marks})" + span,
                             (*states, *span_args)).fetchone()[0]
        rows = [_object_row(row) for row in conn.execute(
            "SELECT id, modality, received_at, status, reason, source FROM instances"
            f" WHERE status IN ({marks})" + span +
            " ORDER BY received_at DESC, id DESC LIMIT ? OFFSET ?",
            (*states, *span_args, page_size, offset))]
    else:
        where = "1" + span + (" AND alert = 1" if status == "alert" else "")
        total = conn.execute(f"SELECT COUNT(*) FROM studies WHERE {where}",
                             span_args).fetchone()[0]
        rows = [_study_row(row) for row in conn.execute(
            "SELECT id, modality, received_at, alert, band, suspicion, findings, warnings,"
            " not_assessable, outside_range, instances, patient_name, patient_id, study_date,"
            f" study_description, {EARLIER_STUDY_SQL} AS earlier,"
            f" CASE WHEN warnings > 0 THEN ({_WARNING_TEXT}) END AS warning_text"
            f" FROM studies s WHERE {where}"
            f" ORDER BY {STUDIES_IN_CLINICAL_ORDER} LIMIT ? OFFSET ?",
            (*span_args, page_size, offset))]
    return WorklistPage(rows=rows, total=int(total), page=page,
                        pages=max(1, -(-int(total) // page_size)), waiting=int(counts[0] or 0),
                        quarantined=int(counts[1] or 0), alerts=int(alerts),
                        not_analysed=int(counts[2] or 0))


#: a study's level (the badge and the page's colour) by its clinical band
_LEVELS = {BAND_ALERT: "alert", BAND_FINDING: "finding", BAND_NO_FINDING: "clear"}


def study_level(row: sqlite3.Row | dict[str, Any]) -> str:
    """The level of a studies row: alert, finding, unassessable, outside or clear."""
    if row["band"] in _LEVELS:
        return _LEVELS[row["band"]]
    return "unassessable" if row["not_assessable"] else "outside"


def _study_row(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "kind": "study", "id": row["id"], "modality": row["modality"] or "",
        "received_at": row["received_at"], "status": "done", "alert": bool(row["alert"]),
        "band": row["band"], "level": study_level(row),
        # the highest probability of the images the model gave a result for (None: none)
        "probability": row["suspicion"], "findings": row["findings"],
        "not_assessable": row["not_assessable"], "outside_range": row["outside_range"],
        "warnings": row["warnings"], "instances": row["instances"],
        # the study's distinct quality warnings: reason records (``contracts/reasons.py``)
        "warning_text": records(decode(row["warning_text"])) if row["warnings"] else [],
        "patient_name": row["patient_name"], "patient_id": row["patient_id"],
        "study_date": row["study_date"], "study_description": row["study_description"],
        # an earlier study fetched from the PACS to compare with (``storage/priors.py``)
        "earlier": bool(row["earlier"]),
    }


def _object_row(row: sqlite3.Row) -> dict[str, Any]:
    shown = next(name for name, states in OBJECT_FILTERS.items() if row["status"] in states)
    return {
        "kind": "object", "id": row["id"], "modality": row["modality"] or "",
        "received_at": row["received_at"], "status": shown,
        "reason": row["reason"] or "", "source": row["source"],
    }


@dataclass
class InstanceView:
    """One processed instance of a study with its result and feedback."""

    id: int
    spool_path: str
    modality: str
    probability: float
    finding: bool
    alert: bool
    boxes: list[dict[str, Any]]
    warnings: list[dict[str, Any]]  # reason records (``contracts/reasons.py``)
    key_frame: int
    frames_inferred: int
    model_id: str
    backend: str
    has_heatmap: bool
    created_at: float
    received_at: float = 0.0
    #: when retention deleted the image (None: the file is on the box), and its size then
    image_deleted_at: float | None = None
    image_rows: int | None = None
    image_columns: int | None = None
    #: inference/assessment.py: finding, no_finding, not_assessable, outside_validated_range
    assessment: str = AssessmentKind.NO_FINDING
    #: why the model gives no result: the stored reasons (``contracts.reasons.decode``)
    assessment_reason: str = ""
    #: lesion records (inference/lesions.py): first those drawn on the key frame, in the
    #: order of ``boxes``, then those tracked on other frames
    lesions: list[dict[str, Any]] = field(default_factory=list)
    #: finding index (-1: the image as a whole) → this clinician's verdict
    my_verdicts: dict[int, str] = field(default_factory=dict)
    #: finding index → {verdict: count} over every clinician
    tallies: dict[int, dict[str, int]] = field(default_factory=dict)

    @property
    def shown_probability(self) -> float | None:
        """The probability a person may read; None where the model gives no result
        (``probability`` keeps its answer for the record)."""
        return shown_probability(self.assessment, self.probability)

    @property
    def judged(self) -> bool:
        """True when the model gave a result for this image."""
        return is_judged(self.assessment)


def study_id(conn: sqlite3.Connection, study_key: str) -> int | None:
    """The id of the study with ``study_key`` (None: the box has no such study)."""
    row = conn.execute("SELECT id FROM studies WHERE study_key = ?", (study_key,)).fetchone()
    return None if row is None else int(row[0])


def study(conn: sqlite3.Connection, study_id: int) -> dict[str, Any] | None:
    """The studies row (as a dict) with ``instances``: list[InstanceView], worst first,
    ``volumes``: its series read as volumes or per slice (``storage/volumes.py``), and
    ``summary``: the study's lesions counted (a 3-D lesion once) and measured
    (``inference/tracking.py``)."""
    row = conn.execute("SELECT * FROM studies WHERE id = ?", (study_id,)).fetchone()
    if row is None:
        return None
    out = dict(row)
    out["alert"] = bool(out["alert"])
    out["instances"] = [
        InstanceView(
            id=r["id"], spool_path=r["spool_path"], modality=r["modality"] or "",
            probability=r["probability"], finding=bool(r["finding"]), alert=bool(r["alert"]),
            boxes=json.loads(r["findings_json"]), warnings=records(decode(r["warnings_json"])),
            key_frame=r["key_frame"], frames_inferred=r["frames_inferred"],
            model_id=r["model_id"], backend=r["backend"], has_heatmap=r["has_heatmap"] == 1,
            created_at=r["created_at"], received_at=r["received_at"],
            image_deleted_at=r["image_deleted_at"], image_rows=r["image_rows"],
            image_columns=r["image_columns"], assessment=r["assessment"],
            assessment_reason=r["assessment_reason"], lesions=json.loads(r["lesions_json"]))
        for r in conn.execute(
            "SELECT i.id, i.spool_path, i.modality, r.probability, r.finding, r.alert,"
            " r.findings_json, r.warnings_json, r.key_frame, r.frames_inferred, r.model_id,"
            f" r.backend, r.heatmap IS NOT NULL AND ({SHOWN_PROBABILITY}) IS NOT NULL"
            " AS has_heatmap, r.created_at, i.received_at,"
            " i.image_deleted_at, i.image_rows, i.image_columns, r.assessment,"
            " r.assessment_reason, r.lesions_json"
            " FROM instances i JOIN results r ON r.instance_id = i.id"
            f" WHERE i.study_instance_uid = ? ORDER BY {RESULTS_IN_CLINICAL_ORDER}, i.id",
            (row["study_key"],))
    ]
    out["volumes"] = study_volumes(conn, row["study_key"])
    out["summary"] = study_summary([lesion for i in out["instances"] for lesion in i.lesions])
    out["summary"]["lesions"] = out["volumes"].lesion_count  # a 3-D lesion counts once
    return out


def study_results(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every study in clinical order with its level, the probability shown (None where the
    model gave no result on any image; its answer as ``probability_not_shown``) and its
    series read as volumes or per slice, lesions counted once in 3-D
    (``clinibox results --studies``)."""
    out = []
    for row in conn.execute(
            "SELECT id, study_key, modality, instances, band, suspicion, max_probability,"
            " alert, findings, not_assessable, outside_range FROM studies"
            f" ORDER BY {STUDIES_IN_CLINICAL_ORDER}"):
        volumes = study_volumes(conn, row["study_key"])
        out.append({
            "id": row["id"], "study_key": row["study_key"], "modality": row["modality"],
            "instances": row["instances"], "level": study_level(row),
            "probability": row["suspicion"],
            "probability_not_shown": None if row["suspicion"] is not None
            else row["max_probability"],
            "alert": bool(row["alert"]), "lesion_count": volumes.lesion_count,
            "series": [series.to_dict() for series in volumes.series]})
    return out


def attach_feedback(conn: sqlite3.Connection, instances: list[InstanceView],
                    account_id: int) -> None:
    """Fill each instance's verdict tallies and this clinician's own verdicts."""
    by_id = {inst.id: inst for inst in instances}
    if not by_id:
        return
    marks = ",".join("?" * len(by_id))
    for r in conn.execute(
            "SELECT instance_id, finding, verdict, COUNT(*) AS n,"
            " SUM(account_id = ?) AS mine FROM feedback"
            f" WHERE instance_id IN ({marks}) GROUP BY instance_id, finding, verdict",
            (account_id, *by_id)):
        inst = by_id[r["instance_id"]]
        inst.tallies.setdefault(r["finding"], {})[r["verdict"]] = r["n"]
        if r["mine"]:
            inst.my_verdicts[r["finding"]] = r["verdict"]


def instance_result(conn: sqlite3.Connection, instance_id: int) -> dict[str, Any] | None:
    """What the image routes need: the file, key frame, boxes and heatmap of one instance.

    ``image_deleted_at`` is set when retention has deleted the file (the result stays).
    """
    row = conn.execute(
        "SELECT i.id, i.spool_path, i.status, r.key_frame, r.findings_json,"
        f" CASE WHEN ({SHOWN_PROBABILITY}) IS NOT NULL THEN r.heatmap END AS heatmap,"
        " r.probability, r.assessment, i.received_at, i.image_deleted_at"
        " FROM instances i LEFT JOIN results r ON r.instance_id = i.id"
        " WHERE i.id = ? AND i.status = ?", (instance_id, InstanceStatus.PROCESSED)).fetchone()
    if row is None or row["key_frame"] is None:
        return None
    return {"id": row["id"], "spool_path": row["spool_path"], "key_frame": row["key_frame"],
            "boxes": json.loads(row["findings_json"]), "heatmap": decode_heatmap(row["heatmap"]),
            "probability": row["probability"], "assessment": row["assessment"],
            "received_at": row["received_at"],
            "image_deleted_at": row["image_deleted_at"]}


def record_feedback(conn: sqlite3.Connection, instance_id: int, finding: int, verdict: str,
                    account_id: int) -> None:
    """Store (or change) one clinician's verdict on one finding."""
    conn.execute(
        "INSERT INTO feedback(instance_id, finding, verdict, account_id, at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT(instance_id, finding, account_id)"
        " DO UPDATE SET verdict = excluded.verdict, at = excluded.at",
        (instance_id, finding, verdict, account_id, time.time()))


def study_of_instance(conn: sqlite3.Connection, instance_id: int) -> int | None:
    """The id of the study the instance belongs to, or None (not analysed yet, or unknown)."""
    row = conn.execute(
        "SELECT s.id FROM studies s JOIN instances i ON i.study_instance_uid = s.study_key"
        " WHERE i.id = ?", (instance_id,)).fetchone()
    return None if row is None else int(row[0])


def previous_study(conn: sqlite3.Connection, study_id: int, modality: str | None = None
                   ) -> dict[str, Any] | None:
    """The latest earlier study of the same patient on this box (of ``modality``, when
    given), or None.

    Same patient means the same non-empty Patient ID and, where both studies name the
    patient, the same name (a default or reused ID, as phantoms and some modalities carry,
    must not join two people), compared here on the box only. Earlier means an earlier
    study date when both studies have one, else received earlier. Returns its id, study
    date, received time, modality, description, most suspicious instance and whether that
    image is still here.
    """
    current = conn.execute("SELECT patient_id, patient_name, study_date, received_at"
                           " FROM studies WHERE id = ?", (study_id,)).fetchone()
    if current is None or not current["patient_id"].strip():
        return None
    row = conn.execute(
        "SELECT s.id, s.study_date, s.received_at, s.modality, s.study_description,"
        " s.top_instance_id, i.image_deleted_at FROM studies s"
        " LEFT JOIN instances i ON i.id = s.top_instance_id"
        " WHERE s.patient_id = ? AND s.id != ? AND (? IS NULL OR coalesce(s.modality, '') = ?)"
        " AND (rtrim(s.patient_name, '^ ') = rtrim(?, '^ ') OR s.patient_name = '' OR ? = '')"
        " AND CASE WHEN ? != '' AND s.study_date != ''"
        " THEN s.study_date < ? OR (s.study_date = ? AND s.received_at < ?)"
        " ELSE s.received_at < ? END"
        " ORDER BY s.study_date DESC, s.received_at DESC LIMIT 1",
        (current["patient_id"], study_id, modality, modality, current["patient_name"],
         current["patient_name"],
         current["study_date"], current["study_date"],
         current["study_date"], current["received_at"], current["received_at"])).fetchone()
    if row is None:
        return None
    return {"id": row["id"], "study_date": row["study_date"], "received_at": row["received_at"],
            "modality": row["modality"] or "", "study_description": row["study_description"],
            "top_instance_id": row["top_instance_id"],
            "image_here": row["top_instance_id"] is not None and row["image_deleted_at"] is None}
