"""Events of the box's parts as they record them (an English line and a code,
``storage/event_codes.py``), and one from before codes, for the pages that show them."""

from __future__ import annotations

import sqlite3

from firmware_app.storage import db, event_codes

#: events of the box's parts as they record them (English line, code), and one from before
#: codes (no code: a Chinese page must not show its English line)
EVENTS = [
    ("telemetry", "broker link down: [Errno 111] Connection refused", event_codes.LINK_DOWN),
    ("pacs main", "association rejected by PACS@10.0.0.9:104: Called AE title not recognised "
     "(Rejected Permanent, Service User)", "pacs_failed:rejected:called_ae"),
    ("pacs main", "C-STORE of Comprehensive SR Storage refused: 0xA700 Refused: Out of "
     "Resources (SOP Instance 1.2.3)", "pacs_failed:refused:0xA700"),
    ("ingest", "C-STORE refused: reason=uid_mismatch calling='CT_1'",
     "cstore_refused:uid_mismatch:CT_1"),
    ("retention", "retention: deleted 3 image(s), 3.8 MB: 3 by age, 0 held by age, 0 for disk "
     "space; 0 already gone, 0 left by an interrupted pass; disk 91.0 % -> 88.2 %",
     "retention:3:4000000:0:0"),
    ("quarantine", "object 4 queued again by tech (was: truncated file)", "requeued:4:tech"),
    ("worker", "3 object(s) failed after repeated interrupted processing", ""),
]


def record_events(conn: sqlite3.Connection) -> None:
    """:data:`EVENTS`, the failing PACS destination's last."""
    with db.transaction(conn):
        for component, message, code in reversed(EVENTS):
            db.record_event(conn, "WARNING", component, message, code)
