"""A study rolled up from its analysed instances (the ``studies`` table).

Used when a result is stored (``results.py``) and when a migration rebuilds
the table (``db.py``); it imports nothing else of storage, so neither import
goes in a circle.
"""

from __future__ import annotations

import sqlite3

#: Patient and study strings kept for the clinic viewer's worklist (never sent anywhere).
DISPLAY_FIELDS = ("patient_name", "patient_id", "study_date", "study_description")


def update_study(conn: sqlite3.Connection, study_key: str, modality: str | None,
                 display: dict[str, str], now: float) -> None:
    """Roll the study up from its instances: a study is as suspicious as its worst one.

    An upsert, so the study keeps its row id (the viewer's links); the display
    strings are the latest instance's, kept when it has none.
    """
    values = [display.get(name) or "" for name in DISPLAY_FIELDS]
    conn.execute(
        "INSERT INTO studies(study_key, modality, instances, max_probability, findings, alert,"
        " top_instance_id, warnings, received_at, updated_at, patient_name, patient_id,"
        " study_date, study_description, not_assessable, outside_range)"
        " SELECT ?, ?, COUNT(*), MAX(r.probability), SUM(r.finding), MAX(r.alert),"
        "  (SELECT r2.instance_id FROM results r2 JOIN instances i2 ON i2.id = r2.instance_id"
        "   WHERE i2.study_instance_uid = ? ORDER BY r2.probability DESC LIMIT 1),"
        "  SUM(json_array_length(r.warnings_json)), MIN(i.received_at), ?, ?, ?, ?, ?,"
        "  SUM(r.assessment = 'not_assessable'), SUM(r.assessment = 'outside_validated_range')"
        " FROM results r JOIN instances i ON i.id = r.instance_id"
        " WHERE i.study_instance_uid = ?"
        " ON CONFLICT(study_key) DO UPDATE SET modality=excluded.modality,"
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
        (study_key, modality, study_key, now, *values, study_key),
    )
