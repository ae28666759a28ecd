"""v11: studies are ordered clinically (``band``) and by the probability of the images the
model gave a result for (``suspicion``), never by one it refused to give.

Both columns are added with defaults (band 3, no suspicion) and filled in
after the ladder (``AFTER = "order_studies"``: ``study_rollup.order_studies``,
which leaves the studies' times alone, so nothing is completed or sent again).
The ``studies_suspicion`` index gives way to ``studies_clinical_order``.
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import columns

AFTER = "order_studies"


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 10 to 11."""
    present = columns(conn, "studies")
    if not present:
        return
    for name, kind in (("band", "INTEGER NOT NULL DEFAULT 3"), ("suspicion", "REAL")):
        if name not in present:
            conn.execute(f"ALTER TABLE studies ADD COLUMN {name} {kind}")
    conn.execute("DROP INDEX IF EXISTS studies_suspicion")
    conn.execute("CREATE INDEX IF NOT EXISTS studies_clinical_order ON studies(band,"
                 " suspicion DESC, received_at DESC)")
