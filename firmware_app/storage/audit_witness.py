"""The audit trail's head, as the box tells the hospital in its status heartbeats.

Whoever can write the box's database can rewrite the trail from an edited row
on, every later hash made again (``storage.audit_chain``); the chain then
checks. Against that the box sends its chain's head off the box, where the box
cannot take it back: every heartbeat (and the ``online`` message) carries

    "audit": {"row": R, "hash": H, "since_row": R0, "since_hash": H0, "at": T,
              "anchor_row": A, "keep_days": K}

* R, H: the id of the trail's last row and that row's hash (the anchor's id and
  hash while the trail has no row: ``storage.audit_schema``);
* R0: the row the last status message *acknowledged by the hospital's broker*
  reported (a heartbeat superseded in the outbox before it was sent never
  reached the hospital, so it does not count); on a box's first report R0 = R;
* H0: the hash the chain has at row R0 *now*, made again from that row as it is
  in the database (its ``prev_hash`` and content), not copied from memory. A
  chain rewritten since the hospital saw (R0, H) gives another H0: the hospital
  sees it at once. When row R0 is gone (pruned, or deleted) and is not the
  anchor's row, the box cannot say what its hash is now: it sends R0 = R and
  H0 = H, and the hospital sees a gap (the witness restarts at R).
* T: when row R was written (epoch seconds; 0 when the trail is empty): the
  hospital keeps it with the head, so a witnessed row that later went "pruned"
  while younger than ``[audit] keep_days`` shows as deleted (the check against
  the witness file).
* A, K: the anchor's row (the last row pruned: the trail starts after it) and
  ``[audit] keep_days``. The hospital checks them on every heartbeat: a row it
  witnessed at or before A, written less than K days before the heartbeat, was
  deleted, not pruned (``pruned_early`` on its fleet page), even when the rows
  after it were left alone and the chain from the moved anchor checks.

The row acknowledged last is read from the outbox (sent status messages stay
there for ``[telemetry] audit_days``) and kept in ``telemetry_state``
(``audit_witnessed_row``: the service notes it before each heartbeat and each purge
of the outbox) for when the outbox no longer lists them. Ids are kept as SQLite
REAL there: exact up to 2**53 rows.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from clinibox_common.contracts.statuses import OutboxState
from firmware_app.storage import telemetry as telemetry_state
from firmware_app.storage.audit_chain import anchor, row_hash

#: the ``telemetry_state`` key of the last audit row the hospital acknowledged
WITNESSED_ROW_KEY = "audit_witnessed_row"
#: the status states whose message carries the head (``offline`` is the broker's last will,
#: made long before it is sent)
WITNESSED_STATES = ("heartbeat", "online")


def head(conn: sqlite3.Connection) -> tuple[int, str]:
    """(id, hash) of the trail's last row; the anchor's when the trail has no row after it."""
    anchor_id, anchor_hash = anchor(conn)
    last = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    if last is None or int(last[0]) <= anchor_id:
        return anchor_id, anchor_hash
    return int(last[0]), str(last[1])


def hash_at(conn: sqlite3.Connection, row_id: int) -> str | None:
    """The hash the chain has at ``row_id`` now, made again from the row as it is (the
    anchor's hash at the anchor's row); None when that row is not in the database."""
    anchor_id, anchor_hash = anchor(conn)
    if row_id == anchor_id:
        return anchor_hash
    row = conn.execute("SELECT prev_hash, at, account, address, action, target, detail"
                       " FROM audit WHERE id = ? AND id > ?", (row_id, anchor_id)).fetchone()
    if row is None:
        return None
    return row_hash(str(row[0]), row_id, *row[1:7])


def acknowledged_row(conn: sqlite3.Connection) -> int | None:
    """The audit row the newest status message the broker acknowledged reported (from the
    outbox, else the remembered one); None when the hospital was never told."""
    for (payload,) in conn.execute(
            "SELECT payload FROM outbox WHERE kind = 'status' AND state = ?"
            " ORDER BY seq DESC LIMIT 50", (OutboxState.SENT,)):
        try:
            row = json.loads(payload).get("audit", {}).get("row")
        except (ValueError, AttributeError):
            continue
        if isinstance(row, int) and not isinstance(row, bool):
            return row
    remembered = telemetry_state.state_value(conn, WITNESSED_ROW_KEY)
    return None if remembered is None else int(remembered)


def remember_acknowledged(conn: sqlite3.Connection) -> None:
    """Keep the row the hospital last acknowledged in ``telemetry_state`` (for when the
    outbox no longer lists the message)."""
    row = acknowledged_row(conn)
    if row is not None:
        telemetry_state.set_state(conn, WITNESSED_ROW_KEY, float(row))


def status_field(conn: sqlite3.Connection, keep_days: float | None = None) -> dict[str, Any]:
    """The ``audit`` object of a status message (see the module's docstring for the rule);
    with ``keep_days`` (``[audit] keep_days``) it also says where the trail starts
    (``anchor_row``) and that period, for the hospital's ``pruned_early`` check."""
    row, digest = head(conn)
    since = acknowledged_row(conn)
    since_hash = None if since is None else hash_at(conn, since)
    if since is None or since_hash is None:
        since, since_hash = row, digest
    written = conn.execute("SELECT at FROM audit WHERE id = ?", (row,)).fetchone()
    field = {"row": row, "hash": digest, "since_row": since, "since_hash": since_hash,
             "at": int(written[0]) if written else 0}
    if keep_days is not None:
        field.update(anchor_row=anchor(conn)[0], keep_days=keep_days)
    return field
