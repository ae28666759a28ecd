"""Which files of a USB stick or import folder the box has already taken, and with what outcome.

A file is known by its path on the medium, its size and its modification
time, so a file replaced under the same name is taken again, and a stick
plugged in twice is not imported twice.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from clinibox_common.contracts.statuses import ImportOutcome


def already_imported(conn: sqlite3.Connection, path: Path, size: int, mtime_ns: int) -> bool:
    """Whether this very file (path, size, modification time) was taken before."""
    row = conn.execute(
        "SELECT 1 FROM imported_files WHERE medium_path=? AND size_bytes=? AND mtime_ns=?",
        (str(path), size, mtime_ns)).fetchone()
    return row is not None


def remember_import(conn: sqlite3.Connection, path: Path, size: int, mtime_ns: int,
                    outcome: ImportOutcome | str, instance_id: int | None) -> None:
    """Record that the file was taken, its outcome (an ``ImportOutcome``, or
    ``statuses.skipped(why)``) and the instance it became (if any)."""
    conn.execute(
        "INSERT OR REPLACE INTO imported_files(medium_path, size_bytes, mtime_ns, outcome,"
        " instance_id, imported_at) VALUES (?, ?, ?, ?, ?, ?)",
        (str(path), size, mtime_ns, outcome, instance_id, time.time()))
