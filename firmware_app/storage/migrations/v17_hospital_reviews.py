"""v17: the hospital's verdicts on the box's alerts (``hospital_reviews``), received over the
downlink (``contracts/downlink.py``, ``telemetry/downlink.py``).

A new table, empty on every upgraded box: no row before it is touched. ``late`` (1) marks
a verdict that arrived after the downlink's freshness window (``MAX_AGE_DAYS``): kept,
counted in the watermark, shown as late.
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import run_script

V17_SCRIPT = """
CREATE TABLE IF NOT EXISTS hospital_reviews (
    seq               INTEGER PRIMARY KEY,
    study_key         TEXT,
    study_ref         TEXT NOT NULL,
    alert_seq         INTEGER NOT NULL,
    verdict           TEXT NOT NULL,
    follow_up_months  INTEGER,
    note              TEXT NOT NULL DEFAULT '',
    reviewed_at       REAL NOT NULL,
    received_at       REAL NOT NULL,
    late              INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS hospital_reviews_study ON hospital_reviews(study_key, seq);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 16 to 17."""
    run_script(conn, V17_SCRIPT)
