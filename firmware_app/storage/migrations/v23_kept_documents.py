"""v23: the box's own copy of each study's result documents (``kept_documents``).

One new table, empty on every upgraded box: with ``[dicomweb]`` on, each study completion
from then on keeps its documents (SR, SEG, key image) for the box's DICOMweb service; the
studies completed before have none until their next completion.
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import run_script

V23_SCRIPT = """
CREATE TABLE IF NOT EXISTS kept_documents (
    sop_instance_uid    TEXT PRIMARY KEY,
    study_key           TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    kind                TEXT NOT NULL,
    modality            TEXT NOT NULL,
    path                TEXT NOT NULL,
    created_at          REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS kept_documents_study ON kept_documents(study_key);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 22 to 23."""
    run_script(conn, V23_SCRIPT)
