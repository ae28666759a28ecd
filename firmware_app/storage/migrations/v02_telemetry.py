"""v2: results keep the input's intensity figures; telemetry and clinicians' feedback.

``results`` gains ``input_mean`` and ``input_std`` (NULL for results stored
before). New tables: the telemetry ``outbox`` (with its pending index),
``alerted_studies`` (one alert per study), ``telemetry_state`` and ``feedback``
(one verdict per image).
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import columns, run_script

#: the tables v2 added, as v2 made them
V2_TABLES = """
CREATE TABLE IF NOT EXISTS feedback (
    id          INTEGER PRIMARY KEY,
    instance_id INTEGER NOT NULL REFERENCES instances(id),
    verdict     TEXT NOT NULL CHECK (verdict IN ('agree', 'disagree')),
    at          REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    payload     TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'dropped', 'superseded', 'will')),
    envelope    BLOB,
    created_at  REAL NOT NULL,
    sent_at     REAL,
    attempts    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(state, priority, seq);
CREATE TABLE IF NOT EXISTS alerted_studies (
    study_key  TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    at         REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS telemetry_state (
    name   TEXT PRIMARY KEY,
    value  REAL NOT NULL
);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 1 to 2."""
    present = columns(conn, "results")
    if present:
        for name in ("input_mean", "input_std"):
            if name not in present:
                conn.execute(f"ALTER TABLE results ADD COLUMN {name} REAL")
    run_script(conn, V2_TABLES)
