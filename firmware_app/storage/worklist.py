"""The clinic's Modality Worklist as the box last heard it (``worklist_items``,
``worklist_state``; migration v21).

The worklist poller (``ingest/worklist.py``) replaces the items whole at each answer and
records where the worklist stands: ``ok`` (it answered), ``down`` with a reason code, or
``off`` (not configured). The live page reads only these rows: it never asks the worklist
itself, so a slow or absent worklist never holds a page.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, fields
from enum import Enum


class WorklistState(str, Enum):
    """Where the clinic's worklist stands, as the poller last found it."""

    OK = "ok"
    """It answered the last question."""
    DOWN = "down"
    """It did not (``reason``: unreachable, refused, failed, timeout, bad_answer)."""
    OFF = "off"
    """``[worklist]`` is not enabled on this box."""


#: why the worklist is down (codes a program reads back; the page says one sentence)
DOWN_REASONS = ("unreachable", "refused", "failed", "timeout", "bad_answer")


@dataclass(frozen=True)
class WorklistItem:
    """One scheduled procedure step: the patient, the order, when and what."""

    patient_name: str = ""
    patient_id: str = ""
    birth_date: str = ""  # DICOM DA, YYYYMMDD ('' unknown)
    sex: str = ""  # M, F, O or ''
    accession_number: str = ""
    sps_id: str = ""
    modality: str = ""
    station_ae: str = ""
    scheduled_date: str = ""  # YYYYMMDD
    scheduled_time: str = ""  # HHMMSS (or shorter)
    description: str = ""


@dataclass(frozen=True)
class StoredItem:
    """An item as kept, with its row id (what the page's pick names)."""

    id: int
    item: WorklistItem


@dataclass(frozen=True)
class Status:
    """Where the worklist stands and when it last answered."""

    state: WorklistState
    reason: str = ""
    items: int = 0
    checked_at: float | None = None
    answered_at: float | None = None


_NAMES = tuple(spec.name for spec in fields(WorklistItem))
_COLUMNS = ", ".join(_NAMES)


def replace_items(conn: sqlite3.Connection, items: list[WorklistItem],
                  now: float | None = None) -> None:
    """Keep ``items`` as the worklist's answer (the previous answer goes) and say it is
    ``ok``, in one transaction."""
    now = time.time() if now is None else now
    marks = ", ".join("?" * (len(_NAMES) + 1))
    with conn:
        conn.execute("DELETE FROM worklist_items")
        conn.executemany(f"INSERT INTO worklist_items({_COLUMNS}, fetched_at) VALUES ({marks})",
                         [(*(getattr(i, n) for n in _NAMES), now) for i in items])
        _set(conn, WorklistState.OK, "", len(items), now, answered=True)


#: the items of a worklist that stopped answering are kept this long (seconds), not offered
KEEP_SECONDS = 24 * 3600.0


def set_state(conn: sqlite3.Connection, state: WorklistState, reason: str = "",
              now: float | None = None) -> None:
    """Record that the worklist is ``down`` (with a reason code) or ``off``. The items of its
    last answer are not offered (``offered``); they are deleted when it is ``off``, and a
    day after that answer while it is ``down`` (the patients' names stay no longer)."""
    now = time.time() if now is None else now
    with conn:
        if state == WorklistState.OFF:
            conn.execute("DELETE FROM worklist_items")
        else:
            conn.execute("DELETE FROM worklist_items WHERE fetched_at < ?",
                         (now - KEEP_SECONDS,))
        _set(conn, state, reason, None, now, answered=False)


def _set(conn: sqlite3.Connection, state: WorklistState, reason: str, count: int | None,
         now: float, answered: bool) -> None:
    conn.execute(
        "INSERT INTO worklist_state(id, state, reason, items, checked_at, answered_at) "
        "VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET state = excluded.state, "
        "reason = excluded.reason, items = COALESCE(?, worklist_state.items), "
        "checked_at = excluded.checked_at, "
        "answered_at = COALESCE(excluded.answered_at, worklist_state.answered_at)",
        (state.value, reason, count or 0, now, now if answered else None, count))


def status(conn: sqlite3.Connection) -> Status:
    """Where the worklist stands (``off`` when the poller never wrote)."""
    row = conn.execute("SELECT state, reason, items, checked_at, answered_at "
                       "FROM worklist_state WHERE id = 1").fetchone()
    if row is None:
        return Status(WorklistState.OFF)
    try:
        state = WorklistState(row[0])
    except ValueError:
        state = WorklistState.DOWN
    return Status(state, row[1], int(row[2]), row[3], row[4])


def offered(conn: sqlite3.Connection, day: str, limit: int = 1000) -> list[StoredItem]:
    """The items to pick from: the last answer's steps scheduled on ``day`` (YYYYMMDD), by
    scheduled time, while the worklist is ``ok``; none otherwise (a list gone stale is never
    offered: the patient is typed)."""
    if status(conn).state != WorklistState.OK:
        return []
    rows = conn.execute(f"SELECT id, {_COLUMNS} FROM worklist_items WHERE scheduled_date = ? "
                        "OR scheduled_date = '' ORDER BY scheduled_time, id LIMIT ?",
                        (day, limit)).fetchall()
    return [StoredItem(row[0], WorklistItem(*row[1:])) for row in rows]


def item(conn: sqlite3.Connection, item_id: int) -> WorklistItem | None:
    """One kept item by its row id (None once a newer answer replaced it)."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM worklist_items WHERE id = ?",
                       (item_id,)).fetchone()
    return WorklistItem(*row) if row else None
