"""v20: the hospital's tests of the link (``link_checks``).

One new table, empty on every upgraded box: no row before it is touched. Each ``link_check``
downlink (``clinibox central check-box``, the console's "test the link") is kept by its
sequence number, so it counts in the downlink watermark the box reports, which is how the
hospital sees that the test arrived.
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import run_script

V20_SCRIPT = """
CREATE TABLE IF NOT EXISTS link_checks (
    seq          INTEGER PRIMARY KEY,
    created_at   REAL NOT NULL,
    received_at  REAL NOT NULL
);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 19 to 20."""
    run_script(conn, V20_SCRIPT)
