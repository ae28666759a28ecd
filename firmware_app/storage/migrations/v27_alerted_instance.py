"""v27: each alert sent records the image it was about (``alerted_studies.instance_id``: the
top image of the alerting model's results on the study), so that the hospital's verdict on
that alert labels that very image (``storage/case_labels.py``).

The alerts sent before keep no image (NULL): a verdict on one of them labels, as before, the
study's most suspicious image if it was received before the verdict.
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import columns, tables


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 26 to 27 (a database without the table gets it whole from the schema script)."""
    if "alerted_studies" in tables(conn) and \
            "instance_id" not in columns(conn, "alerted_studies"):
        conn.execute("ALTER TABLE alerted_studies ADD COLUMN instance_id INTEGER")
