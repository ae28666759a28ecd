"""v13: a DICOM outbox row the destination kept refusing is ``held``; rows count the refusals
and keep the last C-STORE status.

SQLite cannot widen a CHECK, so the table is made anew (as v13 made it) and
its rows copied over (0 refusals, no status).
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import columns

#: dicom_outbox as v13 made it (under a temporary name)
V13_DICOM_OUTBOX = """
CREATE TABLE dicom_outbox_v13 (
    id               INTEGER PRIMARY KEY,
    destination      TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('sr', 'seg', 'key_image')),
    study_key        TEXT NOT NULL,
    sop_class_uid    TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    path             TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'superseded', 'held')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    last_error       TEXT,
    created_at       REAL NOT NULL,
    sent_at          REAL,
    refusals         INTEGER NOT NULL DEFAULT 0,
    last_status      INTEGER,
    UNIQUE (destination, sop_instance_uid)
)"""

#: the columns up to v12, in order (copied over)
V12_COLUMNS = ("id, destination, kind, study_key, sop_class_uid, sop_instance_uid, path, state,"
               " attempts, next_attempt_at, last_error, created_at, sent_at")


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 12 to 13."""
    present = columns(conn, "dicom_outbox")
    if not present or "refusals" in present:
        return
    conn.execute("DROP TABLE IF EXISTS dicom_outbox_v13")
    conn.execute(V13_DICOM_OUTBOX)
    conn.execute(f"INSERT INTO dicom_outbox_v13({V12_COLUMNS}) SELECT {V12_COLUMNS}"
                 " FROM dicom_outbox")
    conn.execute("DROP TABLE dicom_outbox")
    conn.execute("ALTER TABLE dicom_outbox_v13 RENAME TO dicom_outbox")
    conn.execute("CREATE INDEX IF NOT EXISTS dicom_outbox_pending"
                 " ON dicom_outbox(state, next_attempt_at, id)")
