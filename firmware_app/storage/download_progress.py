"""How far the download of a hospital rollout's package has come (the updater writes it, the
device page, ``clinibox status`` and ``clinibox model status`` read it).

The updater (``models/updates.py``) fetches one download at a time; every few seconds (not at
every chunk) it writes here the order's sequence number, the bytes received and the total,
the rate over the last half minute and when it measured them. Numbers only, kept in the
box's key/value table (``telemetry_state``, names ``download.*``), so a restart shows where
the download stood until the next chunk comes. Cleared when the archive is whole or dropped.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from firmware_app.storage.telemetry import set_state

_PREFIX = "download."
_FIELDS = ("seq", "received_bytes", "total_bytes", "rate_bps", "at")


def record(conn: sqlite3.Connection, seq: int, received: int, total: int, rate_bps: float,
           at: float) -> None:
    """Note the download of order ``seq`` (in the caller's transaction)."""
    for name, value in zip(_FIELDS, (seq, received, total, rate_bps, at), strict=True):
        set_state(conn, _PREFIX + name, float(value))


def clear(conn: sqlite3.Connection) -> None:
    """No download in progress (in the caller's transaction)."""
    conn.execute("DELETE FROM telemetry_state WHERE name LIKE ?", (_PREFIX + "%",))


def current(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """The download in progress: order ``seq``, ``received_bytes``, ``total_bytes``,
    ``percent`` (0-100), ``rate_bps`` (bytes a second), ``seconds_left`` (None while the rate
    is unknown) and ``at`` (when measured); None when there is none."""
    rows = dict(conn.execute("SELECT name, value FROM telemetry_state WHERE name LIKE ?",
                             (_PREFIX + "%",)).fetchall())
    values = {name: rows.get(_PREFIX + name) for name in _FIELDS}
    if any(value is None for value in values.values()):
        return None
    received, total = int(values["received_bytes"]), int(values["total_bytes"])
    rate = float(values["rate_bps"])
    return {"seq": int(values["seq"]), "received_bytes": received, "total_bytes": total,
            "percent": round(100.0 * received / total, 1) if total else 0.0,
            "rate_bps": round(rate, 1),
            "seconds_left": round((total - received) / rate) if rate > 0 else None,
            "at": float(values["at"])}
