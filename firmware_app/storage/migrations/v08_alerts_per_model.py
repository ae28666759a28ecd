"""v8: ``alerted_studies`` is keyed by study and model name; studies record whose
completion's alerts are queued (``alerts_done_at``).

An alert of the earlier software named the model of the study's top instance,
so each row gets that model's name (the top result's, worked out from the
results when the study row is missing; '' when the study has none). A study
already alerted counts as checked at its completion: upgrading sends no late
alert for a second model of an old study (a later instance of the study,
completed again, may).
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import columns, tables
from firmware_app.storage.study_alerts import model_name_sql

#: alerted_studies as v8 made it
V8_ALERTED_STUDIES = """
CREATE TABLE alerted_studies (
    study_key  TEXT NOT NULL,
    model      TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    at         REAL NOT NULL,
    PRIMARY KEY (study_key, model)
)"""


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 7 to 8."""
    study_columns = columns(conn, "studies")
    if study_columns and "alerts_done_at" not in study_columns:
        conn.execute("ALTER TABLE studies ADD COLUMN alerts_done_at REAL")
    if "alerted_studies" not in tables(conn):
        conn.execute(V8_ALERTED_STUDIES.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
        return
    if "model" in columns(conn, "alerted_studies"):
        return
    top_name = model_name_sql("r.model_id")
    conn.execute("ALTER TABLE alerted_studies RENAME TO alerted_studies_v7")
    conn.execute(V8_ALERTED_STUDIES)
    conn.execute(
        "INSERT INTO alerted_studies(study_key, model, seq, at)"
        " SELECT a.study_key, COALESCE("
        f"  (SELECT {top_name} FROM studies s JOIN results r"
        "    ON r.instance_id = s.top_instance_id WHERE s.study_key = a.study_key),"
        f"  (SELECT {top_name} FROM results r JOIN instances i ON i.id = r.instance_id"
        "    WHERE i.study_instance_uid = a.study_key ORDER BY r.probability DESC LIMIT 1),"
        "  ''), a.seq, a.at FROM alerted_studies_v7 a")
    if study_columns:
        conn.execute("UPDATE studies SET alerts_done_at = completed_at"
                     " WHERE study_key IN (SELECT study_key FROM alerted_studies)")
    conn.execute("DROP TABLE alerted_studies_v7")
