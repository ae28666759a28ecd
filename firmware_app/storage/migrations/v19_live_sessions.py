"""v19: bedside live sessions (``live_sessions``), what a sonographer asked of one
(``live_requests``) and what each kept (``live_kept``).

Three new tables, empty on every upgraded box: no row before them is touched. A session
belongs to one live source; at most one is open per source (``ended_at`` NULL). Its key
frames and clips land in the spool like any pushed object and are named in ``live_kept``
by their row in ``instances``.
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import run_script

V19_SCRIPT = """
CREATE TABLE IF NOT EXISTS live_sessions (
    id            INTEGER PRIMARY KEY,
    source        TEXT NOT NULL,
    study_uid     TEXT NOT NULL,
    series_uid    TEXT NOT NULL,
    patient_name  TEXT NOT NULL DEFAULT '',
    patient_id    TEXT NOT NULL DEFAULT '',
    birth_date    TEXT NOT NULL DEFAULT '',
    sex           TEXT NOT NULL DEFAULT '',
    from_study    TEXT NOT NULL DEFAULT '',
    started_by    TEXT NOT NULL,
    started_at    REAL NOT NULL,
    ended_at      REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS live_sessions_open ON live_sessions(source)
    WHERE ended_at IS NULL;
CREATE TABLE IF NOT EXISTS live_requests (
    id            INTEGER PRIMARY KEY,
    session       INTEGER NOT NULL REFERENCES live_sessions(id),
    kind          TEXT NOT NULL,
    seq           INTEGER,
    requested_by  TEXT NOT NULL,
    requested_at  REAL NOT NULL,
    done_at       REAL,
    outcome       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS live_requests_open ON live_requests(session, done_at);
CREATE TABLE IF NOT EXISTS live_kept (
    id            INTEGER PRIMARY KEY,
    session       INTEGER NOT NULL REFERENCES live_sessions(id),
    kind          TEXT NOT NULL,
    instance_id   INTEGER NOT NULL,
    sop_uid       TEXT NOT NULL,
    frames        INTEGER NOT NULL,
    score         REAL,
    kept_at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS live_kept_session ON live_kept(session);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 18 to 19."""
    run_script(conn, V19_SCRIPT)
