"""A study rolled up from its analysed instances (the ``studies`` table).

Used when a result is stored (``results.py``) and when a migration rebuilds
the table (``db.py``); it imports nothing else of storage, so neither import
goes in a circle.
"""

from __future__ import annotations

import sqlite3

from engine.inference.assessment import (
    BAND_ALERT,
    BAND_DOCTOR_MUST_READ,
    BAND_FINDING,
    BAND_NO_FINDING,
    JUDGED,
    UNJUDGED,
    AssessmentKind,
)

#: Patient and study strings kept for the clinic viewer's worklist (never sent anywhere).
DISPLAY_FIELDS = ("patient_name", "patient_id", "study_date", "study_description")


def _quoted(values: tuple[AssessmentKind, ...]) -> str:
    """SQL literals of the enumeration's words (fragments shared by many statements)."""
    return ", ".join(f"'{value.value}'" for value in values)


#: SQL over a ``results r`` row: the probability a person may read (NULL where the model
#: gives no result) and the image's clinical band (``inference/assessment.BAND_*``)
SHOWN_PROBABILITY = f"CASE WHEN r.assessment IN ({_quoted(JUDGED)}) THEN r.probability END"
RESULT_BAND = (f"CASE WHEN r.alert THEN {BAND_ALERT} WHEN r.finding THEN {BAND_FINDING}"
               f" WHEN r.assessment IN ({_quoted(UNJUDGED)}) THEN {BAND_DOCTOR_MUST_READ}"
               f" ELSE {BAND_NO_FINDING} END")
#: a study's images in clinical order: its band, then the probability shown, then arrival
RESULTS_IN_CLINICAL_ORDER = f"{RESULT_BAND}, {SHOWN_PROBABILITY} DESC"
#: the studies in clinical order: their band, then the probability as people read it (a whole
#: percent, ``formats.percent``: 0.9951 and 0.9987 are both "> 99 %"), then the newest first,
#: so that of studies shown as equally suspicious the one just made (a live session's, a scan
#: just received) is on top, never below six the page shows the same. A sort of the studies
#: table (not a walk of ``studies_clinical_order``): a box's few thousand rows, milliseconds.
STUDIES_IN_CLINICAL_ORDER = "band, ROUND(suspicion * 100) DESC, received_at DESC"
#: a study's band and suspicion from its results (aggregates over ``results r``)
_STUDY_BAND, _STUDY_SUSPICION = f"MIN({RESULT_BAND})", f"MAX({SHOWN_PROBABILITY})"
_OF_STUDY = "FROM results r JOIN instances i ON i.id = r.instance_id WHERE i.study_instance_uid"


def update_study(conn: sqlite3.Connection, study_key: str, modality: str | None,
                 display: dict[str, str], now: float) -> None:
    """Roll the study up from its instances: a study is in the clinical band of its most
    urgent image (``inference/assessment.BAND_*``) and as suspicious as the worst image the
    model gave a result for.

    An upsert, so the study keeps its row id (the viewer's links); the display
    strings are the latest instance's, kept when it has none.
    """
    values = [display.get(name) or "" for name in DISPLAY_FIELDS]
    conn.execute(
        "INSERT INTO studies(study_key, modality, instances, max_probability, findings, alert,"
        " top_instance_id, warnings, received_at, updated_at, patient_name, patient_id,"
        " study_date, study_description, not_assessable, outside_range, band, suspicion)"
        " SELECT ?, ?, COUNT(*), MAX(r.probability), SUM(r.finding), MAX(r.alert),"
        f"  (SELECT r.instance_id {_OF_STUDY} = ?"
        f"   ORDER BY {RESULTS_IN_CLINICAL_ORDER}, r.instance_id LIMIT 1),"
        "  SUM(json_array_length(r.warnings_json)), MIN(i.received_at), ?, ?, ?, ?, ?,"
        "  SUM(r.assessment = ?), SUM(r.assessment = ?),"
        f"  {_STUDY_BAND}, {_STUDY_SUSPICION}"
        f" {_OF_STUDY} = ?"
        " ON CONFLICT(study_key) DO UPDATE SET modality=excluded.modality,"
        "  band=excluded.band, suspicion=excluded.suspicion,"
        "  instances=excluded.instances, max_probability=excluded.max_probability,"
        "  findings=excluded.findings, alert=excluded.alert,"
        "  top_instance_id=excluded.top_instance_id, warnings=excluded.warnings,"
        "  received_at=excluded.received_at, updated_at=excluded.updated_at,"
        "  not_assessable=excluded.not_assessable, outside_range=excluded.outside_range,"
        "  patient_name=COALESCE(NULLIF(excluded.patient_name, ''), patient_name),"
        "  patient_id=COALESCE(NULLIF(excluded.patient_id, ''), patient_id),"
        "  study_date=COALESCE(NULLIF(excluded.study_date, ''), study_date),"
        "  study_description=COALESCE(NULLIF(excluded.study_description, ''),"
        "   study_description)",
        (study_key, modality, study_key, now, *values, AssessmentKind.NOT_ASSESSABLE,
         AssessmentKind.OUTSIDE_VALIDATED_RANGE, study_key),
    )


def order_studies(conn: sqlite3.Connection) -> None:
    """Fill every study's clinical band, suspicion and top image from its results (the v11
    migration), leaving its times alone: nothing is completed or sent again."""
    conn.execute(
        f"UPDATE studies SET band = COALESCE((SELECT {_STUDY_BAND} {_OF_STUDY} ="
        f" studies.study_key), {BAND_NO_FINDING}),"
        f" suspicion = (SELECT {_STUDY_SUSPICION} {_OF_STUDY} = studies.study_key),"
        f" top_instance_id = (SELECT r.instance_id {_OF_STUDY} = studies.study_key"
        f"  ORDER BY {RESULTS_IN_CLINICAL_ORDER}, r.instance_id LIMIT 1)")
