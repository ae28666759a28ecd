"""v18: the hospital's model rollouts on the box (``model_offers``) and the box's wait for a
model it may run (``model_waiting``).

Two new tables, empty on every upgraded box: no row before them is touched.
``model_offers`` keeps each rollout offer and rollback order the hospital's downlink brought
(``telemetry/downlink.py``), by the downlink's sequence number, with where the box stands
in it; ``model_waiting`` holds one row while the box runs no model (why, and since when).
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import run_script

V18_SCRIPT = """
CREATE TABLE IF NOT EXISTS model_offers (
    seq          INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    rollout      INTEGER NOT NULL,
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    payload      TEXT NOT NULL,
    step         TEXT NOT NULL,
    reason       TEXT NOT NULL DEFAULT '',
    received_at  REAL NOT NULL,
    updated_at   REAL NOT NULL,
    done         INTEGER NOT NULL DEFAULT 0,
    reported     INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS model_offers_open ON model_offers(done, seq);
CREATE TABLE IF NOT EXISTS model_waiting (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    reason  TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT '',
    since   REAL NOT NULL
);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 17 to 18."""
    run_script(conn, V18_SCRIPT)
