"""v22: the hospital's time (``hospital_clock``).

One new table, empty on every upgraded box: no row before it is touched. Each ``clock``
downlink (the hospital saw the box's clock behind its own and sent its time) is kept by its
sequence number, so it counts in the downlink watermark the box reports, with how far behind
the box's clock was when it arrived.
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import run_script

V22_SCRIPT = """
CREATE TABLE IF NOT EXISTS hospital_clock (
    seq          INTEGER PRIMARY KEY,
    created_at   REAL NOT NULL,
    received_at  REAL NOT NULL
);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 21 to 22."""
    run_script(conn, V22_SCRIPT)
