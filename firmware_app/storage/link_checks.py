"""The hospital's tests of the link (``link_check`` downlinks), kept once by sequence number.

A kept link check counts in the downlink watermark (``hospital_reviews.watermark``), which the
box's next status reports: that status is the box's answer to the test.
"""

from __future__ import annotations

import sqlite3
import time


def add(conn: sqlite3.Connection, *, seq: int, created_at: float,
        now: float | None = None) -> bool:
    """Keep one link check (in the caller's transaction); False when ``seq`` is kept already."""
    return conn.execute(
        "INSERT OR IGNORE INTO link_checks(seq, created_at, received_at) VALUES (?, ?, ?)",
        (int(seq), float(created_at), time.time() if now is None else now)).rowcount == 1


def last_received(conn: sqlite3.Connection) -> float | None:
    """When the last link check arrived (epoch seconds), or None."""
    row = conn.execute("SELECT MAX(received_at) FROM link_checks").fetchone()
    return None if row is None or row[0] is None else float(row[0])
