"""v25: the patient's earlier studies asked of the PACS (``prior_lookups``, one row per study
with a finding) and the studies fetched for them (``prior_studies``), ``storage/priors.py``.

Two new tables, empty on every upgraded box: earlier studies are asked for from the first
study with a finding completed after the upgrade (when ``[priors]`` is enabled).
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import run_script

V25_SCRIPT = """
CREATE TABLE IF NOT EXISTS prior_lookups (
    study_key   TEXT PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('asking', 'fetched', 'none', 'failed')),
    reason      TEXT NOT NULL DEFAULT '',
    asked_at    REAL NOT NULL,
    ended_at    REAL,
    studies     INTEGER NOT NULL DEFAULT 0,
    images      INTEGER NOT NULL DEFAULT 0,
    instance_ids TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS prior_studies (
    study_key      TEXT PRIMARY KEY,
    for_study_key  TEXT NOT NULL,
    study_date     TEXT NOT NULL DEFAULT '',
    fetched_at     REAL NOT NULL
);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 24 to 25."""
    run_script(conn, V25_SCRIPT)
