"""The box's audit trail as the witness tests need it: rows, a heartbeat queued as the
service queues it, and the rewrite the hash chain alone cannot see (issue 43)."""

from __future__ import annotations

import sqlite3
from typing import Any

from firmware_app.storage import audit, audit_witness, db
from firmware_app.storage.audit_chain import row_hash
from firmware_app.storage.outbox import Outbox
from firmware_app.telemetry.messages import ModelFacts, build_status

MODEL = ModelFacts("clinibox-demo-lesion@1.0.0", ("lesion",), 0.5)


def fill_trail(conn: sqlite3.Connection, n: int, start: float = 1_000.0) -> None:
    """``n`` study views, one a second from ``start``."""
    for i in range(n):
        audit.record(conn, "study_view", account="carl", address="10.0.0.5",
                     target=f"study:{i + 1}", detail=f"instance {i}", at=start + i)


def queue_heartbeat(conn: sqlite3.Connection, *, sent: bool = True) -> dict[str, Any]:
    """A heartbeat as the service queues it, with its outbox ``seq``; ``sent``: the broker
    acknowledged it."""
    outbox = Outbox(conn, 100, {"lesion"})
    with db.transaction(conn):
        audit_witness.remember_acknowledged(conn)
        payload = build_status(conn, outbox, MODEL, "heartbeat", 60.0)
        seq = outbox.add("status", payload)
    if sent:
        outbox.mark_sent(seq)
    return {**payload, "seq": seq}


def rewrite_without(conn: sqlite3.Connection, gone: int) -> None:
    """The attack: as the service user, with the triggers left in place — lift the anchor's
    pruning flag, delete row ``gone`` and every later row, put the later rows back one id
    lower with their hashes made again, fix ``sqlite_sequence``, restore the flag."""
    later = conn.execute("SELECT at, account, address, action, target, detail FROM audit"
                         " WHERE id > ? ORDER BY id", (gone,)).fetchall()
    prev = conn.execute("SELECT hash FROM audit WHERE id = ?", (gone - 1,)).fetchone()[0]
    conn.execute("UPDATE audit_anchor SET pruning = 1 WHERE id = 1")
    conn.execute("DELETE FROM audit WHERE id >= ?", (gone,))
    for new_id, row in enumerate(later, start=gone):
        digest = row_hash(prev, new_id, *row)
        conn.execute("INSERT INTO audit(id, at, account, address, action, target, detail,"
                     " prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (new_id, *row, prev, digest))
        prev = digest
    conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'audit'",
                 (gone + len(later) - 1,))
    conn.execute("UPDATE audit_anchor SET pruning = 0 WHERE id = 1")
