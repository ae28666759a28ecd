"""v3: the clinic viewer: studies get a stable id and worklist columns; feedback per finding;
local accounts.

``studies`` is derived from the results, so it is made anew (an ``id`` the
viewer links to, ``received_at``, the patient and study strings) and rolled up
again after the ladder (``AFTER = "rebuild_studies"``). Feedback rows are
copied over as verdicts on the whole image (``finding`` -1, no account).
New: ``accounts``, ``web_sessions``, ``login_failures`` and the indexes on
arrival and result times.
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import columns, run_script, tables

AFTER = "rebuild_studies"

#: the studies table as v3 made it (empty: rolled up again after the ladder)
V3_STUDIES = """
CREATE TABLE studies (
    id                 INTEGER PRIMARY KEY,
    study_key          TEXT NOT NULL UNIQUE,
    modality           TEXT,
    instances          INTEGER NOT NULL,
    max_probability    REAL NOT NULL,
    findings           INTEGER NOT NULL,
    alert              INTEGER NOT NULL,
    top_instance_id    INTEGER REFERENCES instances(id),
    warnings           INTEGER NOT NULL,
    received_at        REAL NOT NULL,
    updated_at         REAL NOT NULL,
    patient_name       TEXT NOT NULL DEFAULT '',
    patient_id         TEXT NOT NULL DEFAULT '',
    study_date         TEXT NOT NULL DEFAULT '',
    study_description  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS studies_suspicion ON studies(alert DESC, max_probability DESC,
                                                       received_at DESC);
CREATE INDEX IF NOT EXISTS studies_received ON studies(received_at);
"""

#: feedback as v3 made it: one verdict per clinician and finding
V3_FEEDBACK = """
CREATE TABLE IF NOT EXISTS feedback (
    id          INTEGER PRIMARY KEY,
    instance_id INTEGER NOT NULL REFERENCES instances(id),
    finding     INTEGER NOT NULL DEFAULT -1,
    verdict     TEXT NOT NULL CHECK (verdict IN ('agree', 'disagree', 'unsure')),
    account_id  INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    at          REAL NOT NULL,
    UNIQUE (instance_id, finding, account_id)
);
CREATE INDEX IF NOT EXISTS feedback_at ON feedback(at);
"""

#: the rest of what v3 added
V3_NEW = """
CREATE INDEX IF NOT EXISTS instances_received ON instances(received_at);
CREATE INDEX IF NOT EXISTS results_created ON results(created_at);
CREATE TABLE IF NOT EXISTS accounts (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('clinician', 'technician')),
    password_hash TEXT NOT NULL,
    created_at    REAL NOT NULL,
    changed_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS web_sessions (
    token_hash  TEXT PRIMARY KEY,
    account_id  INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at  REAL NOT NULL,
    last_seen   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS login_failures (
    id       INTEGER PRIMARY KEY,
    at       REAL NOT NULL,
    name     TEXT NOT NULL,
    address  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_at ON login_failures(at);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 2 to 3."""
    if "id" not in columns(conn, "studies"):
        conn.execute("DROP TABLE IF EXISTS studies")
        run_script(conn, V3_STUDIES)
    run_script(conn, V3_NEW)
    if "feedback" in tables(conn) and "finding" not in columns(conn, "feedback"):
        conn.execute("ALTER TABLE feedback RENAME TO feedback_v2")
        run_script(conn, V3_FEEDBACK)
        conn.execute("INSERT INTO feedback(id, instance_id, finding, verdict, at)"
                     " SELECT id, instance_id, -1, verdict, at FROM feedback_v2")
        conn.execute("DROP TABLE feedback_v2")
    else:
        run_script(conn, V3_FEEDBACK)
