"""The hospital's model rollouts on the box (``model_offers``, v18) and the box's wait for a
model it may run (``model_waiting``).

A rollout offer or rollback order arrives over the downlink (``telemetry/downlink.py``)
and is kept here, by the downlink's sequence number, in the same transaction as its audit
row, before the message is acknowledged; the updater (``models/updates.py``) then works
through the open ones in order and records each step it reaches (``step``, one of
``contracts.egress.ROLLOUT_STEPS``), so a box that restarts, or loses power, picks up where
it stood. ``model_waiting`` holds one row while the box has no model it may run: the
worklist, the device page, ``clinibox status`` and the self-test read it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from firmware_app.storage import audit

#: who the audit trail names for a rollout order that came down from the hospital
ACTOR = "hospital:rollout"


@dataclass(frozen=True)
class ModelOffer:
    """One rollout offer or rollback order, and where the box stands in it."""

    seq: int
    kind: str
    rollout: int
    name: str
    version: str
    payload: dict[str, Any]
    step: str
    reason: str
    received_at: float
    updated_at: float
    done: bool

    @property
    def model_id(self) -> str:
        """``name@version`` of the package the order is about."""
        return f"{self.name}@{self.version}"


_COLUMNS = ("seq, kind, rollout, name, version, payload, step, reason, received_at, "
            "updated_at, done")


def _offer(row: sqlite3.Row | tuple) -> ModelOffer:
    seq, kind, rollout, name, version, payload, step, reason, received, updated, done = tuple(row)
    return ModelOffer(int(seq), kind, int(rollout), name, version, json.loads(payload), step,
                      reason, float(received), float(updated), bool(done))


def add(conn: sqlite3.Connection, *, seq: int, kind: str, payload: dict[str, Any],
        step: str, reason: str = "", done: bool = False) -> bool:
    """Keep one order and its audit row (in the caller's transaction); False when ``seq`` is
    kept already (a redelivery: nothing written). An order kept closed (``done``: refused on
    arrival) waits for the updater to tell the hospital (``reported`` 0)."""
    now = time.time()
    inserted = conn.execute(
        f"INSERT OR IGNORE INTO model_offers({_COLUMNS}, reported)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, kind, int(payload["rollout"]), payload["name"], payload["version"],
         json.dumps(payload, sort_keys=True), step, reason, now, now, int(done),
         int(not done))).rowcount == 1
    if inserted:
        audit.record(conn, f"model_{kind}_received", account=ACTOR,
                     target=f"model:{payload['name']}@{payload['version']}",
                     detail=f"rollout {payload['rollout']}" + (f"; {reason}" if reason else ""))
    return inserted


def open_offers(conn: sqlite3.Connection) -> list[ModelOffer]:
    """The orders not done yet, oldest first."""
    return [_offer(row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM model_offers WHERE done = 0 ORDER BY seq")]


def recent(conn: sqlite3.Connection, limit: int = 20) -> list[ModelOffer]:
    """The latest orders, newest first (the device page shows them)."""
    return [_offer(row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM model_offers ORDER BY seq DESC LIMIT ?", (limit,))]


def get(conn: sqlite3.Connection, seq: int) -> ModelOffer | None:
    """The order kept under ``seq``, or None."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM model_offers WHERE seq = ?", (seq,)).fetchone()
    return None if row is None else _offer(row)


def set_step(conn: sqlite3.Connection, seq: int, step: str, *, reason: str = "",
             done: bool = False) -> bool:
    """Record the step the box reached in order ``seq`` (in the caller's transaction);
    False when the order was closed meanwhile (a newer one replaced it): nothing written."""
    return conn.execute("UPDATE model_offers SET step = ?, reason = ?, done = ?, updated_at = ?"
                        " WHERE seq = ? AND done = 0",
                        (step, reason, int(done), time.time(), seq)).rowcount == 1


def settle(conn: sqlite3.Connection, name: str, version: str, step: str,
           reason: str = "") -> int:
    """After a package's trial ended or it was rolled back, the closed rollout offers that
    installed ``name@version`` say so (``kept``, or ``rolled_back`` with its reason), so the
    update table is true; how many rows changed (in the caller's transaction). Only offers
    that reached the install (``on_trial`` or ``kept``) change: a refused one stays refused.
    """
    return conn.execute(
        "UPDATE model_offers SET step = ?, reason = ?, updated_at = ? WHERE kind = 'rollout'"
        " AND done = 1 AND name = ? AND version = ? AND step IN ('on_trial', 'kept')"
        " AND NOT (step = ? AND reason = ?)",
        (step, reason, time.time(), name, version, step, reason)).rowcount


def finish_older(conn: sqlite3.Connection, name: str, before_seq: int, reason: str) -> int:
    """Close every open rollout offer for package ``name`` older than ``before_seq`` (a newer
    order replaces it; a rollback order is never closed by another); how many. The updater
    tells the hospital (``reported`` 0)."""
    return conn.execute(
        "UPDATE model_offers SET done = 1, step = 'refused', reason = ?, updated_at = ?,"
        " reported = 0 WHERE done = 0 AND kind = 'rollout' AND name = ? AND seq < ?",
        (reason, time.time(), name, before_seq)).rowcount


def unreported(conn: sqlite3.Connection) -> list[ModelOffer]:
    """Orders closed without the updater that the hospital has not been told of."""
    return [_offer(row) for row in conn.execute(
        f"SELECT {_COLUMNS} FROM model_offers WHERE reported = 0 ORDER BY seq")]


def mark_reported(conn: sqlite3.Connection, seq: int) -> None:
    """The hospital has been told of order ``seq``'s end (in the caller's transaction)."""
    conn.execute("UPDATE model_offers SET reported = 1 WHERE seq = ?", (seq,))


@dataclass(frozen=True)
class ModelWaiting:
    """The box has no model it may run: why (a reason code), in words, since when."""

    reason: str
    detail: str
    since: float


def set_waiting(conn: sqlite3.Connection, reason: str, detail: str) -> None:
    """Note that the box waits for a model (keeps ``since`` while the wait goes on)."""
    conn.execute(
        "INSERT INTO model_waiting(id, reason, detail, since) VALUES (1, ?, ?, ?)"
        " ON CONFLICT(id) DO UPDATE SET reason = excluded.reason, detail = excluded.detail",
        (reason, detail[:500], time.time()))


def clear_waiting(conn: sqlite3.Connection) -> None:
    """The box runs a model again."""
    conn.execute("DELETE FROM model_waiting")


def waiting(conn: sqlite3.Connection) -> ModelWaiting | None:
    """Why the box waits for a model, or None while it runs one."""
    row = conn.execute("SELECT reason, detail, since FROM model_waiting WHERE id = 1").fetchone()
    return None if row is None else ModelWaiting(row[0], row[1], float(row[2]))
