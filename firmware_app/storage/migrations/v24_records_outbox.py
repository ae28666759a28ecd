"""v24: the records outbox (``records_outbox``): each study's report for the clinic's
information systems (``[[records.receivers]]``, HL7 v2 or FHIR).

One new table, empty on every upgraded box: reports are queued from the first study
completion (and hospital verdict) after the upgrade; nothing is sent for the studies
completed before.
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import run_script

V24_SCRIPT = """
CREATE TABLE IF NOT EXISTS records_outbox (
    id               INTEGER PRIMARY KEY,
    receiver         TEXT NOT NULL,
    study_key        TEXT NOT NULL,
    report_kind      TEXT NOT NULL CHECK (report_kind IN ('result', 'verdict')),
    version          INTEGER NOT NULL,
    content          TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'superseded', 'held')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    refusals         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    last_error       TEXT,
    last_status      TEXT,
    created_at       REAL NOT NULL,
    sent_at          REAL,
    UNIQUE (receiver, study_key, report_kind, version)
);
CREATE INDEX IF NOT EXISTS records_outbox_pending ON records_outbox(receiver, state,
                                                                    next_attempt_at);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 23 to 24."""
    run_script(conn, V24_SCRIPT)
