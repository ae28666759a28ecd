"""How much room the audit trail takes, and the alarm past ``[audit] max_mb``.

Rows are never dropped to make room (the trail is evidence): past the limit the
box says so, on the device page and in ``clinibox status``, and says what to do
(export the trail, then prune it with a shorter ``[audit] keep_days``).

The size is an estimate that costs the same at any size: the number of rows in
the chain (the ids after the anchor follow each other) times the mean stored
size of the newest :data:`SAMPLE` rows, plus SQLite's per-row overhead (the
row's cell and its entry in the ``at`` index). Reading every page of a
table of hundreds of MB on each page load would cost more than the alarm is worth.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from clinibox_common.i18n import N_, gettext
from firmware_app.storage.audit_chain import anchor

#: how many of the newest rows give the mean row size
SAMPLE = 256
#: SQLite's bytes per row beyond the values: the cell header and the ``at`` index entry
ROW_OVERHEAD = 40
MB = 2**20


def rows_in_chain(conn: sqlite3.Connection) -> int:
    """How many rows the trail holds after its anchor (from the ids, without a count)."""
    anchor_id, _hash = anchor(conn)
    last = conn.execute("SELECT MAX(id) FROM audit").fetchone()[0]
    return max(0, int(last or 0) - anchor_id)


def estimated_bytes(conn: sqlite3.Connection, rows: int | None = None) -> int:
    """About how many bytes the trail's ``rows`` (default: counted here) take in the
    database."""
    rows = rows_in_chain(conn) if rows is None else rows
    if not rows:
        return 0
    mean = conn.execute(
        "SELECT AVG(16 + length(CAST(account AS BLOB)) + length(CAST(address AS BLOB))"
        " + length(CAST(action AS BLOB)) + length(CAST(target AS BLOB))"
        " + length(CAST(detail AS BLOB)) + length(prev_hash) + length(hash))"
        " FROM (SELECT * FROM audit ORDER BY id DESC LIMIT ?)", (SAMPLE,)).fetchone()[0]
    return int(rows * (float(mean or 0.0) + ROW_OVERHEAD))


def size_figures(conn: sqlite3.Connection, max_mb: float) -> dict[str, Any]:
    """The trail's rows, its estimated size in MB, the limit and whether it is past it
    (``max_mb`` 0: no limit, never past it)."""
    rows = rows_in_chain(conn)
    size_mb = estimated_bytes(conn, rows) / MB
    shown = round(size_mb, 1) if size_mb >= 0.1 else round(size_mb, 3)  # never "0.0 MB"
    return {"rows": rows, "estimated_mb": shown,
            "max_mb": max_mb, "over_limit": bool(max_mb) and size_mb > max_mb}


#: the alarm's words (the device page shows the same message), followed by :data:`COMMANDS`
ALARM = N_("The audit trail takes about %(size)s MB, more than [audit] max_mb (%(max)s MB). "
           "The box deletes no row to make room: save a copy off the box, set a shorter "
           "[audit] keep_days, then run the retention pass (or wait for the hourly one):")
#: what the alarm asks a technician to run, in that order (commands: never translated)
COMMANDS = ("clinibox audit --json > FILE", "clinibox retention")


def alarm_text(figures: dict[str, Any]) -> str:
    """The alarm for ``size_figures``'s result, in the current language (its commands
    follow on their own lines where the terminal prints it)."""
    return gettext(ALARM, size=figures["estimated_mb"], max=figures["max_mb"])
