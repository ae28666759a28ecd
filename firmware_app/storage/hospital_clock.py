"""The hospital's times (``clock`` downlinks), kept once by sequence number.

A kept time counts in the downlink watermark (``hospital_reviews.watermark``), so the hospital
stops sending it; the clock's helper (``ops/hospital_clock.py``) moves the clock.
"""

from __future__ import annotations

import sqlite3
import time


def add(conn: sqlite3.Connection, *, seq: int, created_at: float,
        now: float | None = None) -> bool:
    """Keep one time (in the caller's transaction); False when ``seq`` is kept already."""
    return conn.execute(
        "INSERT OR IGNORE INTO hospital_clock(seq, created_at, received_at) VALUES (?, ?, ?)",
        (int(seq), float(created_at), time.time() if now is None else now)).rowcount == 1
