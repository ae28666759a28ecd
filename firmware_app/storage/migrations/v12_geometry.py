"""v12: instances keep their geometry in the patient (``geometry_json``; NULL for those
analysed before: their series are read per slice, ``inference/volume.py``)."""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import columns


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 11 to 12."""
    present = columns(conn, "instances")
    if present and "geometry_json" not in present:
        conn.execute("ALTER TABLE instances ADD COLUMN geometry_json TEXT")
