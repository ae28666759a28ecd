"""The hospital's time sent to a box whose clock is behind (a ``clock`` downlink).

A clinic box with a flat clock battery and no internet has no NTP: at each power cut its clock
starts again from the last time it saved, and falls behind. Its statuses say what its clock
read (``created_at``); the receiver compares that with its own clock when the status arrives.
A status more than ``CLOCK_TOLERANCE_SECONDS`` behind queues a ``clock`` downlink for the box,
at most :data:`PER_WINDOW` in :data:`WINDOW_SECONDS`, :data:`RETRY_SECONDS` apart: the
downlink publisher seals and sends it like a verdict, and the box moves its clock forward to
its signed ``created_at`` (``firmware_app/ops/hospital_clock.py``). A time that reached the
box late (held at the broker while the box's service restarted) leaves it behind still; its
next statuses say so, and the next time goes minutes later, not an hour. This is checked
before the receiver's age limit, so a box so far behind that its messages are refused as too
old still gets the time.

A status that waited in the box's outbox, or the broker's last will (built when the box
connected), also looks behind: the box then finds its clock right and changes nothing, so
the cost of a wrong guess is three small messages an hour. Only ``online`` and ``heartbeat``
statuses count, only from a box that says it takes the time (``takes_time``: an older box
would refuse the kind, and its sequence number would hold up every downlink after it) and
that the hospital can send to (a downlink key known, a signing key configured), and only one
time waits for a box at a time: none is queued while the last is not confirmed by the box's
watermark, so a box that lies about its clock cannot pile them up.
"""

from __future__ import annotations

import logging
from typing import Any

from central import fleet
from central.reviews import queue_downlink
from central.sql import Transaction
from clinibox_common.contracts import downlink
from clinibox_common.contracts.downlink import CLOCK_TOLERANCE_SECONDS

log = logging.getLogger(__name__)

#: at most PER_WINDOW ``clock`` downlinks a box in WINDOW_SECONDS, RETRY_SECONDS apart
PER_WINDOW = 3
WINDOW_SECONDS = 3600.0
RETRY_SECONDS = 300.0
#: the statuses whose ``created_at`` is read: built and sent while the box is connected
COUNTED_STATES = ("online", "heartbeat")


def behind_s(payload: dict[str, Any], received_at: float) -> float:
    """How far a status's ``created_at`` is behind the hospital's clock (0: not behind)."""
    created = payload.get("created_at")
    if not isinstance(created, int | float) or isinstance(created, bool):
        return 0.0
    return max(0.0, received_at - float(created))


def wanted(payload: dict[str, Any], received_at: float) -> bool:
    """Whether this status asks for the hospital's time: a box that takes it (``takes_time``:
    an older box would refuse the kind, and its sequence number would hold up every downlink
    after it), an ``online`` or ``heartbeat`` status, more than the tolerance behind."""
    return (payload.get("takes_time") == 1 and payload.get("state") in COUNTED_STATES
            and behind_s(payload, received_at) > CLOCK_TOLERANCE_SECONDS)


def notice(tx: Transaction, clinic: str, device: str, payload: dict[str, Any],
           received_at: float) -> int | None:
    """Queue the hospital's time for the box when this status :func:`wanted` it, none is
    still unconfirmed (the box's watermark has not passed it), the last went
    :data:`RETRY_SECONDS` ago or more and fewer than :data:`PER_WINDOW` went in the last
    :data:`WINDOW_SECONDS`; the downlink's sequence number, or None. The caller checks that
    the hospital can sign downlinks."""
    if not wanted(payload, received_at):
        return None
    behind = behind_s(payload, received_at)
    row = tx.execute("SELECT downlink_key, downlink_seq FROM box_state WHERE clinic = ?"
                     " AND device = ?", (clinic, device)).fetchone()
    if (row is None or not row[0]) and not fleet.keep_downlink_key(
            tx, clinic, device, payload.get("downlink_key"), received_at):
        return None  # nothing can be sealed to the box yet
    last = tx.execute("SELECT seq, created_at FROM downlinks WHERE clinic = ? AND device = ?"
                      " AND kind = ? ORDER BY seq DESC LIMIT 1",
                      (clinic, device, downlink.KIND_CLOCK)).fetchone()
    if last is not None:
        confirmed = int((row[1] if row is not None else None) or 0)
        if int(last[0]) > confirmed or received_at - float(last[1]) < RETRY_SECONDS:
            return None  # one time waits for the box at most: no pile of them
        [(sent,)] = tx.execute("SELECT COUNT(*) FROM downlinks WHERE clinic = ? AND device = ?"
                               " AND kind = ? AND created_at > ?",
                               (clinic, device, downlink.KIND_CLOCK,
                                received_at - WINDOW_SECONDS)).fetchall()
        if int(sent) >= PER_WINDOW:
            return None
    seq = queue_downlink(tx, clinic, device, downlink.KIND_CLOCK,
                         downlink.clock_payload(behind, received_at), received_at)
    log.info("%s/%s: its clock is %.0f s behind the hospital's; the hospital's time queued "
             "(downlink %d)", clinic, device, behind, seq)
    return seq
