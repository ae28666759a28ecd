"""v21: the clinic's Modality Worklist (``worklist_items``, ``worklist_state``) and the
scheduled procedure a live session was started from (``live_sessions.accession_number``,
``live_sessions.sps_id``).

Two new tables, empty on every upgraded box (the worklist poller fills them at its first
answer), and two columns at the end of ``live_sessions``: '' for the sessions started before,
whose patient was typed.
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import columns, run_script

V21_SCRIPT = """
CREATE TABLE IF NOT EXISTS worklist_items (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_name      TEXT NOT NULL DEFAULT '',
    patient_id        TEXT NOT NULL DEFAULT '',
    birth_date        TEXT NOT NULL DEFAULT '',
    sex               TEXT NOT NULL DEFAULT '',
    accession_number  TEXT NOT NULL DEFAULT '',
    sps_id            TEXT NOT NULL DEFAULT '',
    modality          TEXT NOT NULL DEFAULT '',
    station_ae        TEXT NOT NULL DEFAULT '',
    scheduled_date    TEXT NOT NULL DEFAULT '',
    scheduled_time    TEXT NOT NULL DEFAULT '',
    description       TEXT NOT NULL DEFAULT '',
    fetched_at        REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS worklist_state (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    state             TEXT NOT NULL,
    reason            TEXT NOT NULL DEFAULT '',
    items             INTEGER NOT NULL DEFAULT 0,
    checked_at        REAL NOT NULL,
    answered_at       REAL
);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 20 to 21."""
    run_script(conn, V21_SCRIPT)
    have = columns(conn, "live_sessions")
    for name in ("accession_number", "sps_id"):
        if name not in have:
            conn.execute(f"ALTER TABLE live_sessions ADD COLUMN {name} TEXT NOT NULL "
                         "DEFAULT ''")
