"""v4: instances record when retention deleted their image, and its size in pixels.

Only columns are added (NULL: every image present, as before), so the upgrade
is instant and keeps every row. New: the partial indexes of present and
deleted images, and the ``retention_passes`` table.
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import columns, run_script

#: what v4 added besides the columns, as v4 made it
V4_NEW = """
CREATE INDEX IF NOT EXISTS instances_image_present ON instances(received_at)
    WHERE image_deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS instances_image_deleted ON instances(image_deleted_at)
    WHERE image_deleted_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS retention_passes (
    id          INTEGER PRIMARY KEY,
    started_at  REAL NOT NULL,
    finished_at REAL,
    images      INTEGER NOT NULL DEFAULT 0,
    bytes       INTEGER NOT NULL DEFAULT 0
);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 3 to 4."""
    present = columns(conn, "instances")
    if not present:
        return
    for name, kind in (("image_deleted_at", "REAL"), ("image_rows", "INTEGER"),
                       ("image_columns", "INTEGER")):
        if name not in present:
            conn.execute(f"ALTER TABLE instances ADD COLUMN {name} {kind}")
    run_script(conn, V4_NEW)
