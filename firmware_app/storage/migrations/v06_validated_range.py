"""v6: studies count their instances outside the model's validated range (0 before: no
package declared a range)."""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import columns


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 5 to 6."""
    present = columns(conn, "studies")
    if present and "outside_range" not in present:
        conn.execute("ALTER TABLE studies ADD COLUMN outside_range INTEGER NOT NULL DEFAULT 0")
