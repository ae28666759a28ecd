"""The outbox: every outbound message, durable in SQLite before it is sent.

A message is checked by the egress gate, then written (with its sequence
number) in one committed transaction; it is marked ``sent`` only after the
broker acknowledged it (MQTT QoS 1 PUBACK), so a restart or a power cut at
any moment loses nothing: what was not acknowledged is sent again, and the
hospital de-duplicates by (device, sequence number).

Order: alerts first, then summaries, then status; oldest first within a kind.

Bound: at most ``max_messages`` wait. When a new message would pass the bound,
the least valuable waiting message is dropped — status before summaries
before alerts, oldest first — so an alert is never dropped while any metric
waits. Each drop is counted, logged as a warning and reported in the next
summary (``outbox_dropped``). A newer heartbeat simply supersedes an unsent
older one (not a loss: only the latest state matters).

Sent, dropped and superseded messages stay listed for the privacy audit for
``audit_days``, then are purged.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from clinibox_common.contracts.egress import PRIORITY, check_message
from clinibox_common.contracts.envelope import canonical_payload
from clinibox_common.contracts.statuses import OutboxState
from firmware_app.storage import event_codes
from firmware_app.storage.db import record_event, transaction
from firmware_app.storage.telemetry import state_value

log = logging.getLogger(__name__)


def outbox_pending(conn: sqlite3.Connection) -> int:
    """Messages committed to the outbox and not yet acknowledged by the hospital's broker."""
    return int(conn.execute("SELECT COUNT(*) FROM outbox WHERE state = ?",
                            (OutboxState.PENDING,)).fetchone()[0])


@dataclass(frozen=True)
class OutboxMessage:
    """One waiting message."""

    seq: int
    kind: str
    payload: dict[str, Any]
    envelope: bytes | None
    attempts: int


class Outbox:
    """The durable, bounded, prioritised queue of outbound messages."""

    def __init__(self, conn: sqlite3.Connection, max_messages: int,
                 labels: frozenset[str] | set[str]) -> None:
        self.conn = conn
        self.max_messages = max_messages
        self.labels = frozenset(labels)

    # -- writing ---------------------------------------------------------
    def enqueue(self, kind: str, payload: dict[str, Any]) -> int:
        """Gate and store a message in its own transaction; return its sequence number."""
        with transaction(self.conn):
            return self.add(kind, payload)

    def add(self, kind: str, payload: dict[str, Any],
            state: OutboxState = OutboxState.PENDING) -> int:
        """Gate and store a message inside the caller's transaction; return its seq."""
        check_message(kind, payload, self.labels)
        text = canonical_payload(payload).decode("utf-8")
        now = time.time()
        if kind == "status" and state == OutboxState.PENDING:
            self.conn.execute(
                "UPDATE outbox SET state=?, envelope=NULL WHERE state=? AND kind='status'",
                (OutboxState.SUPERSEDED, OutboxState.PENDING))
        cursor = self.conn.execute(
            "INSERT INTO outbox(kind, priority, payload, state, created_at)"
            " VALUES (?, ?, ?, ?, ?)", (kind, PRIORITY[kind], text, state, now))
        seq = int(cursor.lastrowid)
        if state == OutboxState.PENDING:
            self._enforce_bound()
        return seq

    def _enforce_bound(self) -> None:
        excess = self.pending_count() - self.max_messages
        if excess <= 0:
            return
        victims = self.conn.execute(
            "SELECT seq, kind FROM outbox WHERE state=?"
            " ORDER BY priority DESC, seq ASC LIMIT ?", (OutboxState.PENDING, excess)).fetchall()
        for seq, kind in victims:
            self.conn.execute("UPDATE outbox SET state=?, envelope=NULL WHERE seq=?",
                              (OutboxState.DROPPED, seq))
            self._bump("dropped_total")
            message = (f"outbox full ({self.max_messages} waiting): dropped {kind} "
                       f"message {seq}")
            log.warning(message)
            record_event(self.conn, "WARNING", "telemetry", message,
                         event_codes.code(event_codes.OUTBOX_DROPPED, seq, self.max_messages))

    def _bump(self, name: str, by: float = 1) -> None:
        self.conn.execute(
            "INSERT INTO telemetry_state(name, value) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, by))

    def set_envelope(self, seq: int, envelope: bytes) -> None:
        """Keep the sealed bytes so every resend is identical."""
        self.conn.execute("UPDATE outbox SET envelope=? WHERE seq=? AND state=?",
                          (envelope, seq, OutboxState.PENDING))

    def note_attempt(self, seq: int) -> None:
        """Count a send attempt (shown in the audit)."""
        self.conn.execute("UPDATE outbox SET attempts = attempts + 1 WHERE seq=?", (seq,))

    def mark_sent(self, seq: int) -> None:
        """The broker acknowledged the message: it is done (kept for audit only)."""
        self.conn.execute(
            "UPDATE outbox SET state=?, sent_at=?, envelope=NULL WHERE seq=? AND state=?",
            (OutboxState.SENT, time.time(), seq, OutboxState.PENDING))

    def purge(self, audit_seconds: float) -> int:
        """Forget finished messages older than the audit window; return how many."""
        cutoff = time.time() - audit_seconds
        cursor = self.conn.execute(
            "DELETE FROM outbox WHERE state != ? AND COALESCE(sent_at, created_at) < ?",
            (OutboxState.PENDING, cutoff))
        return cursor.rowcount

    # -- reading ---------------------------------------------------------
    def waiting(self, limit: int = 100) -> list[OutboxMessage]:
        """The next messages to send, alerts first, oldest first."""
        rows = self.conn.execute(
            "SELECT seq, kind, payload, envelope, attempts FROM outbox WHERE state=?"
            " ORDER BY priority, seq LIMIT ?", (OutboxState.PENDING, limit)).fetchall()
        return [OutboxMessage(int(r[0]), r[1], json.loads(r[2]),
                              bytes(r[3]) if r[3] is not None else None, int(r[4]))
                for r in rows]

    def pending_count(self) -> int:
        """Messages waiting for the broker's acknowledgement (``clinibox status`` counts)."""
        return outbox_pending(self.conn)

    def counter(self, name: str) -> int:
        """A telemetry counter (e.g. ``dropped_total``)."""
        return int(state_value(self.conn, name) or 0)

    def audit(self, since: float) -> list[dict[str, Any]]:
        """Every message waiting, or finished since ``since``, exactly as handed to encryption."""
        rows = self.conn.execute(
            "SELECT seq, kind, state, payload, created_at, sent_at, attempts FROM outbox"
            " WHERE state=? OR COALESCE(sent_at, created_at) >= ? ORDER BY seq",
            (OutboxState.PENDING, since)).fetchall()
        return [{"seq": r[0], "kind": r[1], "state": r[2], "created_at": r[4],
                 "sent_at": r[5], "attempts": r[6], "payload": json.loads(r[3])} for r in rows]
