"""v16: an event in the technician's log carries a code (``events.code``) beside its words, so
the box counts its own events by code, never by matching the start of a sentence.

The only events counted by kind are the C-STORE refusals the landing throttles
(``ingest/landing.py``); rows of the earlier software get their code from the words that
software wrote (frozen here, as v14 freezes the old reason sentences); every other row has
none ('').
"""

from __future__ import annotations

import sqlite3

from firmware_app.storage.migrations._sql import columns

#: how schema 15's software began a C-STORE refusal's event
V15_REFUSAL_PREFIX = "C-STORE refused:"


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 15 to 16."""
    present = columns(conn, "events")
    if not present or "code" in present:
        return
    conn.execute("ALTER TABLE events ADD COLUMN code TEXT NOT NULL DEFAULT ''")
    conn.execute("UPDATE events SET code = 'cstore_refused' WHERE component = 'ingest'"
                 " AND substr(message, 1, ?) = ?", (len(V15_REFUSAL_PREFIX), V15_REFUSAL_PREFIX))
