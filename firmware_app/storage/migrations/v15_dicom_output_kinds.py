"""v15: ``dicom_outbox.kind`` follows the table of DICOM outputs: its CHECK becomes triggers
that look the kind up in ``dicom_output_kinds``.

SQLite cannot widen a CHECK without making the table anew, and the outputs
(``contracts/dicom_outputs.py``) grow by a row each. So ``dicom_outbox`` is
made anew without the CHECK on ``kind`` and every row is copied over as it
was; ``dicom_output_kinds`` holds the kinds a row may have and two triggers
refuse any other (insert, or update of the kind). ``db.initialise`` writes
the table's keys into ``dicom_output_kinds`` whenever the database opens
(``storage/dicom_outbox.kind_rule``), so a new output needs no migration.
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import columns, run_script

#: dicom_outbox as v15 makes it (under a temporary name)
V15_DICOM_OUTBOX = """
CREATE TABLE dicom_outbox_v15 (
    id               INTEGER PRIMARY KEY,
    destination      TEXT NOT NULL,
    kind             TEXT NOT NULL,
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

#: the kinds table and its triggers as v15 makes them
V15_KIND_RULE = """
CREATE TABLE IF NOT EXISTS dicom_output_kinds (
    kind TEXT PRIMARY KEY
);
CREATE TRIGGER IF NOT EXISTS dicom_outbox_kind_insert BEFORE INSERT ON dicom_outbox
WHEN NEW.kind NOT IN (SELECT kind FROM dicom_output_kinds)
BEGIN
    SELECT RAISE(ABORT, 'dicom_outbox.kind is not a DICOM output of this software');
END;
CREATE TRIGGER IF NOT EXISTS dicom_outbox_kind_update BEFORE UPDATE OF kind ON dicom_outbox
WHEN NEW.kind NOT IN (SELECT kind FROM dicom_output_kinds)
BEGIN
    SELECT RAISE(ABORT, 'dicom_outbox.kind is not a DICOM output of this software');
END;
"""

#: the kinds up to v14 (the CHECK's), the rows of a new ``dicom_output_kinds``
V14_KINDS = ("sr", "seg", "key_image")

#: the columns of v13 and v14, in order (every one copied over)
V14_COLUMNS = ("id, destination, kind, study_key, sop_class_uid, sop_instance_uid, path, state,"
               " attempts, next_attempt_at, last_error, created_at, sent_at, refusals,"
               " last_status")


def _has_kind_check(conn: sqlite3.Connection) -> bool:
    row = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'dicom_outbox'").fetchone()
    return row is not None and "CHECK (kind IN" in " ".join(str(row[0]).split())


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 14 to 15."""
    if not columns(conn, "dicom_outbox"):
        return  # the schema script makes it, with the kind rule
    if _has_kind_check(conn):
        conn.execute("DROP TABLE IF EXISTS dicom_outbox_v15")
        conn.execute(V15_DICOM_OUTBOX)
        conn.execute(f"INSERT INTO dicom_outbox_v15({V14_COLUMNS}) SELECT {V14_COLUMNS}"
                     " FROM dicom_outbox")
        conn.execute("DROP TABLE dicom_outbox")
        conn.execute("ALTER TABLE dicom_outbox_v15 RENAME TO dicom_outbox")
        conn.execute("CREATE INDEX IF NOT EXISTS dicom_outbox_pending"
                     " ON dicom_outbox(state, next_attempt_at, id)")
    run_script(conn, V15_KIND_RULE)
    conn.executemany("INSERT OR IGNORE INTO dicom_output_kinds(kind) VALUES (?)",
                     [(kind,) for kind in V14_KINDS])
