"""The hospital's time sent to a box whose clock is behind (a ``clock`` downlink).

A clinic box with a flat clock battery and no internet has no NTP: at each power cut its clock
starts again from the last time it saved, and falls behind. Its statuses say what its clock
read (``created_at``); the receiver compares that with its own clock when the status arrives.
A status more than ``CLOCK_TOLERANCE_SECONDS`` behind queues a ``clock`` downlink for the box,
at most one every :data:`RESEND_SECONDS`: the downlink publisher seals and sends it like a
verdict, and the box moves its clock forward to its signed ``created_at``
(``firmware_app/ops/hospital_clock.py``). This is checked before the receiver's age limit, so
a box so far behind that its messages are refused as too old still gets the time.

A status that waited in the box's outbox, or the broker's last will (built when the box
connected), also looks behind: the box then finds its clock right and changes nothing, so
the cost of a wrong guess is one small message an hour. Only ``online`` and ``heartbeat``
statuses count, and only from a box the hospital can send to (a downlink key known, a signing
key configured).
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

#: at most one ``clock`` downlink a box in this many seconds
RESEND_SECONDS = 3600.0
#: the statuses whose ``created_at`` is read: built and sent while the box is connected
COUNTED_STATES = ("online", "heartbeat")


def behind_s(payload: dict[str, Any], received_at: float) -> float:
    """How far a status's ``created_at`` is behind the hospital's clock (0: not behind)."""
    created = payload.get("created_at")
    if not isinstance(created, int | float) or isinstance(created, bool):
        return 0.0
    return max(0.0, received_at - float(created))


def notice(tx: Transaction, clinic: str, device: str, payload: dict[str, Any],
           received_at: float) -> int | None:
    """Queue the hospital's time for the box when this status shows its clock behind and no
    time went to it in the last :data:`RESEND_SECONDS`; the downlink's sequence number, or
    None. The caller checks that the hospital can sign downlinks."""
    behind = behind_s(payload, received_at)
    if payload.get("state") not in COUNTED_STATES or behind <= CLOCK_TOLERANCE_SECONDS:
        return None
    row = tx.execute("SELECT downlink_key FROM box_state WHERE clinic = ? AND device = ?",
                     (clinic, device)).fetchone()
    if (row is None or not row[0]) and not fleet.keep_downlink_key(
            tx, clinic, device, payload.get("downlink_key"), received_at):
        return None  # nothing can be sealed to the box yet
    (last,) = tx.execute("SELECT MAX(created_at) FROM downlinks WHERE clinic = ? AND device = ?"
                         " AND kind = ?", (clinic, device, downlink.KIND_CLOCK)).fetchone()
    if last is not None and received_at - float(last) < RESEND_SECONDS:
        return None
    seq = queue_downlink(tx, clinic, device, downlink.KIND_CLOCK,
                         downlink.clock_payload(behind, received_at), received_at)
    log.info("%s/%s: its clock is %.0f s behind the hospital's; the hospital's time queued "
             "(downlink %d)", clinic, device, behind, seq)
    return seq
