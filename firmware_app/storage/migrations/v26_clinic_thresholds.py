"""v26: the clinic's own finding threshold for each model and runtime it runs
(``clinic_thresholds``, ``storage/clinic_thresholds.py``).

One new table, empty on every upgraded box: the package's thresholds stand until the box
first sets its own (``[models] calibration``).
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import run_script

V26_SCRIPT = """
CREATE TABLE IF NOT EXISTS clinic_thresholds (
    model_id           TEXT NOT NULL,
    backend            TEXT NOT NULL,
    finding            REAL NOT NULL,
    package_finding    REAL NOT NULL,
    state              TEXT NOT NULL,
    target_sensitivity REAL NOT NULL,
    lesions            INTEGER NOT NULL,
    clear              INTEGER NOT NULL,
    sensitivity        REAL,
    specificity        REAL,
    computed_at        REAL NOT NULL,
    PRIMARY KEY (model_id, backend)
);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 25 to 26."""
    run_script(conn, V26_SCRIPT)
