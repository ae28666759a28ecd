"""The box's audit trail as the witness tests need it: rows, a heartbeat queued as the
service queues it, the rewrite the hash chain alone cannot see (issue 43), and the front of
the trail deleted with the anchor moved past it, without an ``audit_pruned`` row (issue 56)."""

from __future__ import annotations

import sqlite3
import time
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


def queue_heartbeat(conn: sqlite3.Connection, *, sent: bool = True,
                    keep_days: float | None = None) -> dict[str, Any]:
    """A heartbeat as the service queues it, with its outbox ``seq``; ``sent``: the broker
    acknowledged it. With ``keep_days`` (``[audit] keep_days``, as the service passes it) it
    says where the trail starts."""
    outbox = Outbox(conn, 100, {"lesion"})
    with db.transaction(conn):
        audit_witness.remember_acknowledged(conn)
        payload = build_status(conn, outbox, MODEL, "heartbeat", 60.0,
                               audit_keep_days=keep_days)
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


def delete_front(conn: sqlite3.Connection, through: int) -> None:
    """The attack of issue 56: as the service user, with the triggers left in place — lift
    the anchor's pruning flag, delete rows 1 … ``through``, move the anchor to row
    ``through`` (its id and hash, so the chain after it still checks) and lower the flag; no
    ``audit_pruned`` row says so."""
    (last_hash,) = conn.execute("SELECT hash FROM audit WHERE id = ?", (through,)).fetchone()
    conn.execute("UPDATE audit_anchor SET pruning = 1 WHERE id = 1")
    conn.execute("DELETE FROM audit WHERE id <= ?", (through,))
    conn.execute("UPDATE audit_anchor SET last_id = ?, last_hash = ?, pruned_at = ?,"
                 " pruning = 0 WHERE id = 1", (through, last_hash, time.time()))
    conn.commit()
