"""v5: results carry their assessment, lesion records and class probabilities.

Columns are added with defaults; a result stored before says ``finding`` or
``no_finding`` as its flags did, and keeps no lesion records (its boxes stay in
``findings_json``). Studies count their not-assessable images (0 before).
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import columns


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 4 to 5."""
    present = columns(conn, "results")
    if present:
        for name, kind in (("assessment", "TEXT NOT NULL DEFAULT 'no_finding'"),
                           ("assessment_reason", "TEXT NOT NULL DEFAULT ''"),
                           ("lesions_json", "TEXT NOT NULL DEFAULT '[]'"),
                           ("classes_json", "TEXT NOT NULL DEFAULT '{}'")):
            if name not in present:
                conn.execute(f"ALTER TABLE results ADD COLUMN {name} {kind}")
        if "assessment" not in present:
            conn.execute("UPDATE results SET assessment = 'finding' WHERE finding = 1")
    study_columns = columns(conn, "studies")
    if study_columns and "not_assessable" not in study_columns:
        conn.execute("ALTER TABLE studies ADD COLUMN not_assessable INTEGER NOT NULL DEFAULT 0")
