"""v10: each viewer account keeps the language its user chose ('' until one is chosen); the
index that finds a patient's previous study (``studies_patient``)."""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import columns


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 9 to 10."""
    present = columns(conn, "accounts")
    if present and "language" not in present:
        conn.execute("ALTER TABLE accounts ADD COLUMN language TEXT NOT NULL DEFAULT ''")
    if columns(conn, "studies"):
        conn.execute("CREATE INDEX IF NOT EXISTS studies_patient"
                     " ON studies(patient_id, study_date, received_at)")
