"""The clinic's worklist on the live page: today's scheduled patients to pick from, or why the
patient is typed (``storage/worklist.py``, which the box's worklist poller fills).

The viewer reads only the database: it never asks the worklist itself (no pynetdicom here),
so a slow or absent worklist never holds the page.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

from clinibox_common.i18n import N_, formats, gettext
from firmware_app.storage import worklist
from firmware_app.storage.worklist import WorklistItem, WorklistState
from firmware_app.words import labels, wording, worklist_words

#: the most scheduled patients the page lists (the poller keeps at most ``max_items``)
SHOWN = 100
#: what the page says when the patient cannot be picked, by the worklist's state
NOTICES = {
    WorklistState.DOWN: N_("Today's appointment list cannot be fetched just now: type the "
                           "patient's details below."),
}


def device_view(conn: sqlite3.Connection, enabled: bool, peer: str) -> dict[str, Any]:
    """The worklist on the device page: configured or not, where it stands (in words), how
    many steps it gave, when it last answered."""
    found = worklist.status(conn)
    down = found.state == WorklistState.DOWN
    return {"enabled": enabled, "peer": peer, "state": found.state.value,
            "reason": found.reason if down else "",
            "why": worklist_words.down_reason(found.reason) if down else "",
            "said": worklist_words.state_text(found.state.value, found.reason, found.items),
            "count": found.items, "answered_at": found.answered_at,
            "checked_at": found.checked_at}


def _clock(text: str) -> str:
    """A scheduled time (HHMMSS, or shorter) as ``HH:MM``; '' when there is none."""
    return f"{text[:2]}:{text[2:4]}" if len(text) >= 4 else (f"{text[:2]}:00" if text else "")


def row(stored: worklist.StoredItem) -> dict[str, Any]:
    """One scheduled patient as the page lists it."""
    item = stored.item
    return {"id": stored.id, "patient_name": item.patient_name,
            "patient_id": item.patient_id,
            "birth_date": wording.dicom_date(item.birth_date) if item.birth_date else "",
            "sex": labels.sex(item.sex) if item.sex else "",
            "accession_number": item.accession_number, "time": _clock(item.scheduled_time),
            "description": item.description}


def view(conn: sqlite3.Connection, today: dt.date | None = None) -> dict[str, Any]:
    """What the session panel shows of the worklist: its state, today's patients (while it
    answers), the sentence to say when they cannot be picked, and when it last answered."""
    found = worklist.status(conn)
    day = (today or dt.date.today()).strftime("%Y%m%d")
    rows = [row(item) for item in worklist.offered(conn, day, SHOWN)]
    notice = NOTICES.get(found.state)
    return {"state": found.state.value, "rows": rows,
            "notice": gettext(notice) if notice else "",
            "answered": formats.moment(found.answered_at) if found.answered_at else ""}


def picked(conn: sqlite3.Connection, item_id: str, patient_id: str) -> WorklistItem | None:
    """The scheduled step a pick names, if it is still offered and still this patient's (a
    page older than the worklist's last answer never starts a session for another)."""
    if not item_id.isascii() or not item_id.isdigit() or len(item_id) > 15:
        return None
    if worklist.status(conn).state != WorklistState.OK:
        return None
    item = worklist.item(conn, int(item_id))
    return item if item is not None and item.patient_id == patient_id else None
