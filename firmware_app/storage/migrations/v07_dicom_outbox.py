"""v7: studies record when they were last completed (stable) and how many times; the DICOM
outbox and the export record are new.

Studies of the earlier software were alerted as they came: they count as
complete (``completed_at`` = ``updated_at``; ``completions`` stays 0), so no
DICOM results are made for them unless a later instance updates them. New tables: ``dicom_outbox``
(its states ``pending``, ``sent``, ``superseded``) with its pending index, and
``exports``.
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import columns, run_script

#: the tables v7 added, as v7 made them
V7_TABLES = """
CREATE TABLE IF NOT EXISTS dicom_outbox (
    id               INTEGER PRIMARY KEY,
    destination      TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('sr', 'seg', 'key_image')),
    study_key        TEXT NOT NULL,
    sop_class_uid    TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    path             TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'superseded')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    last_error       TEXT,
    created_at       REAL NOT NULL,
    sent_at          REAL,
    UNIQUE (destination, sop_instance_uid)
);
CREATE INDEX IF NOT EXISTS dicom_outbox_pending ON dicom_outbox(state, next_attempt_at, id);
CREATE TABLE IF NOT EXISTS exports (
    id         INTEGER PRIMARY KEY,
    at         REAL NOT NULL,
    account    TEXT NOT NULL,
    address    TEXT NOT NULL DEFAULT '',
    study_key  TEXT NOT NULL,
    files      INTEGER NOT NULL,
    target     TEXT NOT NULL
);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 6 to 7."""
    present = columns(conn, "studies")
    if present:
        for name, kind in (("completed_at", "REAL"),
                           ("completions", "INTEGER NOT NULL DEFAULT 0")):
            if name not in present:
                conn.execute(f"ALTER TABLE studies ADD COLUMN {name} {kind}")
        conn.execute("UPDATE studies SET completed_at = updated_at WHERE completed_at IS NULL")
    run_script(conn, V7_TABLES)
