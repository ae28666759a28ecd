"""Which alerts a complete study owes the hospital: one per study and model.

A study's images may be analysed by several models (routing rules: CT by one
model, ultrasound by another). Each model whose results on the study include
an alerting instance (the rule of ``studies.alert``, applied to that model's
results alone) gets one alert for the study, the first time the study is
complete (``storage.study_completion``). Models are told apart by *name* (the
part of ``name@version`` before ``@``): a new version of the same model does
not alert the study again, and an instance arriving after the completion
(its new SR version) never alerts a model that has alerted already.

``alerted_studies`` holds one row per alert sent (study, model name, the outbox message's
sequence number, and since v27 the image the alert was about: the model's top instance, which
the hospital's verdict on the alert labels); ``studies.alerts_done_at`` holds the
``completed_at`` of the completion whose alerts are all queued, so the producer looks again
only at studies completed since (and retention knows their alerts are out). Both are written
in the alert's own transaction.

It imports nothing else of storage (``schema.py`` takes the table from here,
the v8 migration the model-name SQL), so no import goes in a circle.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

#: the alerts sent, one per study and model name (v8; before, one per study)
ALERTED_STUDIES_TABLE = """
CREATE TABLE IF NOT EXISTS alerted_studies (
    study_key  TEXT NOT NULL,
    model      TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    at         REAL NOT NULL,
    instance_id INTEGER,
    PRIMARY KEY (study_key, model)
)"""


def model_name_sql(column: str) -> str:
    """SQL for the model name in a ``name@version`` column (the whole value without ``@``)."""
    return (f"CASE WHEN instr({column}, '@') > 0"
            f" THEN substr({column}, 1, instr({column}, '@') - 1) ELSE {column} END")


@dataclass(frozen=True)
class StudyToCheck:
    """A complete alerting study whose latest completion's alerts are not all queued."""

    study_key: str
    completed_at: float


def studies_to_check(conn: sqlite3.Connection) -> list[StudyToCheck]:
    """Complete studies with an alerting instance not yet checked since their latest
    completion, oldest update first."""
    return [StudyToCheck(str(r[0]), float(r[1])) for r in conn.execute(
        "SELECT study_key, completed_at FROM studies"
        " WHERE alert = 1 AND completed_at IS NOT NULL"
        " AND (alerts_done_at IS NULL OR alerts_done_at < completed_at)"
        " ORDER BY updated_at")]


def alerts_due(conn: sqlite3.Connection, study: StudyToCheck) -> list[sqlite3.Row]:
    """One row per model (by name) whose results on the study, up to its completion, alert
    and which has not alerted the study yet; by model name.

    Columns (of that model's top instance, its highest probability): model (the name),
    model_id, max_probability, instances (the model's analysed instances of the study),
    modality, findings_json, timings_json, assessment, instance_id (the top instance).
    """
    name = model_name_sql("r.model_id")
    return conn.execute(
        "WITH analysed AS (SELECT r.instance_id, r.model_id, r.probability, r.findings_json,"
        "  r.timings_json,"
        f"  r.assessment, i.modality, {name} AS model,"
        f"  ROW_NUMBER() OVER (PARTITION BY {name}"
        "   ORDER BY r.probability DESC, r.instance_id) AS rank,"
        f"  COUNT(*) OVER (PARTITION BY {name}) AS instances,"
        f"  MAX(r.alert) OVER (PARTITION BY {name}) AS alerting"
        "  FROM results r JOIN instances i ON i.id = r.instance_id"
        "  WHERE i.study_instance_uid = ? AND r.created_at <= ?)"
        " SELECT model, model_id, probability AS max_probability, instances, modality,"
        "  findings_json, timings_json, assessment, instance_id FROM analysed"
        " WHERE rank = 1 AND alerting = 1 AND NOT EXISTS (SELECT 1 FROM alerted_studies a"
        "  WHERE a.study_key = ? AND a.model = analysed.model)"
        " ORDER BY model",
        (study.study_key, study.completed_at, study.study_key)).fetchall()


def alert_lesions(conn: sqlite3.Connection, study: StudyToCheck, model: str,
                  assessment: str) -> list[dict[str, Any]]:
    """The lesion records (``inference/lesions.py``, as stored) of the results of ``model``
    (a name) on the study up to its completion whose image was assessed ``assessment``
    (the same results ``alerts_due`` reads), in the order the results were made."""
    rows = conn.execute(
        "SELECT r.lesions_json FROM results r JOIN instances i ON i.id = r.instance_id"
        f" WHERE i.study_instance_uid = ? AND r.created_at <= ? AND {model_name_sql('r.model_id')}"
        " = ? AND r.assessment = ? ORDER BY r.created_at, r.instance_id",
        (study.study_key, study.completed_at, model, assessment)).fetchall()
    lesions: list[dict[str, Any]] = []
    for row in rows:
        records = json.loads(row[0] or "[]")
        lesions += [record for record in records if isinstance(record, dict)]
    return lesions


def mark_alerted(conn: sqlite3.Connection, study_key: str, model: str, seq: int,
                 instance_id: int | None = None) -> None:
    """Note that the study's alert for ``model`` (a name) is outbox message ``seq``, about the
    image ``instance_id`` (in the alert's transaction)."""
    conn.execute("INSERT INTO alerted_studies(study_key, model, seq, at, instance_id)"
                 " VALUES (?, ?, ?, ?, ?)", (study_key, model, seq, time.time(), instance_id))


def mark_checked(conn: sqlite3.Connection, study: StudyToCheck) -> None:
    """Note that every alert of the study's completion at ``study.completed_at`` is queued
    (in the same transaction as those alerts)."""
    conn.execute("UPDATE studies SET alerts_done_at = ? WHERE study_key = ?",
                 (study.completed_at, study.study_key))
