"""Each box's latest state (``box_state``) and its drift over time (``drift_points``).

Written in the transaction that stores each message, so the fleet page reads one row a
box: any message moves ``last_seen``; a status sets the box's state, model, software,
runtime (and whether it is a fallback), queue and outbox, its downlink key and the last
downlink it acknowledged, and its audit head — unless it is late (see
:func:`is_late_status`): a status the box numbered before one already stored only moves
``last_seen`` (and, when it is the broker's
``offline`` last will, sealed when the box connected, the state), so an old status never
takes the downlink key, the acknowledged downlink or the state back. A ``downlink_key``
no X25519 exchange accepts (:func:`clinibox_common.contracts.downlink.parse_key_text`) is
not kept: the box's previous key stays, and the refusal is logged once per box and key.
Each figure is kept with when the box measured it (:func:`measured_at`): the queue
(``queue_at``) from whichever of the statuses and summaries the box numbered last
(``queue_seq``), the disk (``disk_at``) from the last summary, the audit head
(``audit_at``) from the last status that carried one. A summary sets its disk and queue
and appends a drift point (PSI of the
confidence and intensity histograms of the recent window against the model's baseline
on that box, the disagreement rate of the recent window, and whether that is drift, by
the one rule of :func:`central.drift.windows` and :func:`central.drift.figures`, the
report's too); an event sets the last event, and one
naming a rollout moves that box's step in it (:func:`central.rollouts.note_event`).

Cost per summary: two bounded reads of the box's summaries (``[health]
baseline_summaries`` and ``recent_summaries`` rows, by the ``messages_by_kind`` index);
a status costs one index lookup (is a later status stored?) and one upsert;
every other message costs one upsert.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from central import drift, rollouts
from central.config import HealthConfig
from central.sql import Transaction
from clinibox_common.contracts import downlink
from clinibox_common.contracts.envelope import Header

__all__ = ["BOX_STATE_COLUMNS", "is_late_status", "rebuild", "record", "summaries",
           "usable_key"]

log = logging.getLogger("clinibox.central.fleet")

#: The state of the broker's last will (sealed at connect, so older than what followed).
OFFLINE = "offline"
#: Refused downlink keys already logged (box and key), so each is logged once.
_REFUSED_KEYS: set[tuple[str, str, str]] = set()
_REFUSED_KEYS_LIMIT = 10_000

#: box_state's columns, as the console reads them.
BOX_STATE_COLUMNS = (
    "clinic", "device", "last_seen", "state", "state_at", "model", "software", "runtime",
    "runtime_fallback", "queue_depth", "outbox_pending", "disk_used_pct", "disk_free_mb",
    "downlink_key", "downlink_seq",
    "audit_row", "audit_hash", "audit_verdict", "last_event", "last_event_reason",
    "last_event_at", "psi_confidence", "psi_intensity", "disagree_rate", "drift",
    "waiting_for_model", "queue_at", "queue_seq", "disk_at", "audit_at", "model_digest",
    "finding_threshold", "package_threshold", "threshold_state", "threshold_lesions",
    "threshold_clear")
#: How far back a box's clock may date a figure and still be believed (a day): its
#: ``created_at`` within that of the message's arrival is when it measured the figure.
TRUSTED_CLOCK_SECONDS = 86_400.0
#: The columns a message sets only when it is newer (by sequence number) than the one that
#: set them: a summary, a late status or the broker's last will never takes back a queue
#: a later heartbeat reported.
_BY_SEQ = ("queue_depth", "queue_at", "queue_seq")

_LATER_SEEN = ("last_seen = CASE WHEN box_state.last_seen IS NULL"
               " OR excluded.last_seen > box_state.last_seen THEN excluded.last_seen"
               " ELSE box_state.last_seen END")


def _upsert(tx: Transaction, clinic: str, device: str, seen: float,
            values: dict[str, Any], keep_if_null: tuple[str, ...] = ()) -> None:
    """Insert the box's row or update ``values`` (and last_seen, never backwards)."""
    names = ("clinic", "device", "last_seen", *values)
    marks = ", ".join("?" for _ in names)
    sets = [_LATER_SEEN]
    for name in values:
        if name in _BY_SEQ:
            sets.append(f"{name} = CASE WHEN box_state.queue_seq IS NULL OR excluded.queue_seq"
                        f" >= box_state.queue_seq THEN excluded.{name} ELSE box_state.{name} END")
        elif name in keep_if_null:
            sets.append(f"{name} = COALESCE(excluded.{name}, box_state.{name})")
        else:
            sets.append(f"{name} = excluded.{name}")
    tx.execute(
        f"INSERT INTO box_state ({', '.join(names)}) VALUES ({marks})"
        f" ON CONFLICT (clinic, device) DO UPDATE SET {', '.join(sets)}",
        (clinic, device, seen, *values.values()))


def summaries(tx: Transaction, clinic: str, device: str, model: str, *, limit: int,
              newest: bool) -> list[tuple[Any, ...]]:
    """Up to ``limit`` summary rows (clinic, device, seq, kind, received_at, payload as JSON
    text) of ``clinic/device`` running ``model``: the latest ones (``newest``, latest first)
    or the first ones (first first)."""
    order = "DESC" if newest else "ASC"
    return list(tx.execute(
        "SELECT clinic, device, seq, kind, received_at, payload FROM messages"
        " WHERE clinic = ? AND device = ? AND kind = 'summary' AND model = ?"
        f" ORDER BY seq {order} LIMIT ?", (clinic, device, model, int(limit))).fetchall())


def _drift(tx: Transaction, clinic: str, device: str, model: str,
           health: HealthConfig) -> dict[str, Any]:
    first = summaries(tx, clinic, device, model, limit=health.baseline_summaries,
                      newest=False)
    latest = summaries(tx, clinic, device, model, limit=health.recent_summaries, newest=True)
    baseline, recent = drift.windows([(int(row[2]), json.loads(row[5])) for row in first],
                                     [(int(row[2]), json.loads(row[5])) for row in latest],
                                     health)
    return drift.figures(baseline, recent, health)


def measured_at(body: dict[str, Any], received_at: float) -> float:
    """When the box measured a message's figures, on the hospital's clock: its
    ``created_at`` where the box's clock is believable (not after the message arrived, and
    at most :data:`TRUSTED_CLOCK_SECONDS` before), else when it arrived (a message that waited
    in the box's outbox is as old as it was made, not as new as its arrival)."""
    created = body.get("created_at")
    if isinstance(created, (int, float)) and not isinstance(created, bool) \
            and received_at - TRUSTED_CLOCK_SECONDS <= created <= received_at:
        return float(created)
    return float(received_at)


def _queue_values(body: dict[str, Any], seq: int, received_at: float) -> dict[str, Any]:
    """The queue a status or a summary reports, when it was measured and by which message."""
    return {"queue_depth": body.get("queue_depth"),
            "queue_at": measured_at(body, received_at), "queue_seq": int(seq)}


def _status_values(clinic: str, device: str, body: dict[str, Any],
                   received_at: float) -> dict[str, Any]:
    """What a status sets in its box's row (its audit head and queue aside)."""
    return {"state": body.get("state"), "state_at": received_at,
            "model": body.get("model"), "model_digest": body.get("model_digest"),
            "software": body.get("software"),
            "runtime": body.get("runtime"), "runtime_fallback": body.get("runtime_fallback"),
            "outbox_pending": body.get("outbox_pending"),
            "downlink_key": usable_key(clinic, device, body.get("downlink_key")),
            "downlink_seq": body.get("downlink_seq"),
            "waiting_for_model": body.get("waiting_for_model"),
            **_threshold_values(body.get("threshold"))}


def _threshold_values(threshold: Any) -> dict[str, Any]:
    """The box's finding threshold a status reports (all None when it reports none)."""
    threshold = threshold if isinstance(threshold, dict) else {}
    return {"finding_threshold": threshold.get("finding"),
            "package_threshold": threshold.get("package"),
            "threshold_state": threshold.get("state"),
            "threshold_lesions": threshold.get("lesions"),
            "threshold_clear": threshold.get("clear")}


def _summary_values(body: dict[str, Any], model: str, figures: dict[str, Any],
                    received_at: float) -> dict[str, Any]:
    """What a summary and its drift ``figures`` set in its box's row (its queue aside)."""
    return {"disk_used_pct": body.get("disk_used_pct"),
            "disk_free_mb": body.get("disk_free_mb"),
            "disk_at": measured_at(body, received_at), "model": model,
            "psi_confidence": figures["psi_confidence"],
            "psi_intensity": figures["psi_intensity"],
            "disagree_rate": figures["disagree_rate"], "drift": figures["drift"]}


def _event_values(body: dict[str, Any], received_at: float) -> dict[str, Any]:
    """What an event sets in its box's row."""
    return {"last_event": body.get("event"), "last_event_reason": body.get("reason"),
            "last_event_at": float(body.get("created_at") or received_at)}


def is_late_status(tx: Transaction, header: Header) -> bool:
    """Whether a status the box numbered after ``header``'s is stored already: ``header``'s
    status was made before it (the box numbers its messages as it makes them, so its
    sequence number orders them even when its clock does not) and arrives late."""
    return tx.execute(
        "SELECT 1 FROM messages WHERE clinic = ? AND device = ? AND kind = 'status'"
        " AND seq > ? LIMIT 1", (header.clinic, header.device, int(header.seq))
    ).fetchone() is not None


def usable_key(clinic: str, device: str, text: Any) -> str | None:
    """``text`` when it is a downlink key verdicts can be sealed to; else None (the box's
    previous key stays), the refusal logged once per box and key."""
    if text is None:
        return None
    try:
        downlink.parse_key_text(str(text))
    except ValueError as exc:
        seen = (clinic, device, str(text))
        if seen not in _REFUSED_KEYS:
            if len(_REFUSED_KEYS) >= _REFUSED_KEYS_LIMIT:
                _REFUSED_KEYS.clear()
            _REFUSED_KEYS.add(seen)
            log.warning("%s/%s reported a downlink key that cannot be used (%s): its "
                        "previous key is kept", clinic, device, exc)
        return None
    return str(text)


def keep_downlink_key(tx: Transaction, clinic: str, device: str, text: Any,
                      seen: float) -> bool:
    """Keep the downlink key an authentic status reported, when it is usable, even when the
    status itself is not kept (refused as too old: ``central/box_clock.py`` still sends
    the box the time); whether one was kept."""
    key = usable_key(clinic, device, text)
    if key is None:
        return False
    # a box's row keeps its last seen time (the status was refused); a box never seen before
    # gets its first row, seen now (the hospital did hear from it)
    tx.execute("INSERT INTO box_state (clinic, device, last_seen, downlink_key) VALUES"
               " (?, ?, ?, ?) ON CONFLICT (clinic, device) DO UPDATE SET downlink_key ="
               " COALESCE(box_state.downlink_key, excluded.downlink_key)",
               (clinic, device, seen, key))
    return True


def record(tx: Transaction, header: Header, payload: dict[str, Any], received_at: float,
           health: HealthConfig, audit_verdict: str | None = None) -> None:
    """Update ``header``'s box after storing its message (and add a drift point)."""
    clinic, device = header.clinic, header.device
    if header.kind == "status" and is_late_status(tx, header):
        late: dict[str, Any] = {}
        if payload.get("state") == OFFLINE:  # the last will: the box is gone all the same
            late = {"state": OFFLINE, "state_at": received_at}
        _upsert(tx, clinic, device, received_at, late)
    elif header.kind == "status":
        head = payload.get("audit") or {}
        _upsert(tx, clinic, device, received_at, {
            **_status_values(clinic, device, payload, received_at),
            **_queue_values(payload, header.seq, received_at),
            "audit_row": head.get("row"), "audit_hash": head.get("hash"),
            "audit_verdict": audit_verdict,
            "audit_at": measured_at(payload, received_at) if head else None},
            keep_if_null=("downlink_key", "downlink_seq", "audit_row", "audit_hash",
                          "audit_verdict", "audit_at", "model", "software"))
    elif header.kind == "summary":
        model = str(payload.get("model", ""))
        figures = _drift(tx, clinic, device, model, health)
        _upsert(tx, clinic, device, received_at, {
            **_summary_values(payload, model, figures, received_at),
            **_queue_values(payload, header.seq, received_at)})
        tx.execute(
            "INSERT INTO drift_points (clinic, device, seq, model, at, psi_confidence,"
            " psi_intensity, disagree_rate, reviews, drift) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (clinic, device, header.seq, model, float(payload.get("period_end") or received_at),
             figures["psi_confidence"], figures["psi_intensity"], figures["disagree_rate"],
             figures["reviews"], figures["drift"]))
    elif header.kind == "event":
        _upsert(tx, clinic, device, received_at, _event_values(payload, received_at))
        rollouts.note_event(tx, clinic, device, payload, received_at)
    else:
        _upsert(tx, clinic, device, received_at, {})


def rebuild(tx: Transaction, health: HealthConfig) -> int:
    """Fill ``box_state`` from the stored messages (a database from before it); the box count."""
    boxes = tx.execute("SELECT clinic, device, MAX(received_at) FROM messages"
                       " GROUP BY clinic, device").fetchall()
    for clinic, device, seen in boxes:
        values: dict[str, Any] = {}
        status = tx.execute(
            "SELECT received_at, payload, seq FROM messages WHERE clinic = ? AND device = ?"
            " AND kind = 'status' ORDER BY received_at DESC, seq DESC LIMIT 1",
            (clinic, device)).fetchone()
        if status is not None:
            body = json.loads(status[1])
            values.update(_status_values(clinic, device, body, float(status[0])))
            values.update(_queue_values(body, int(status[2]), float(status[0])))
        head = tx.execute(
            "SELECT head_row, head_hash, verdict FROM audit_heads WHERE clinic = ?"
            " AND device = ? ORDER BY seq DESC LIMIT 1", (clinic, device)).fetchone()
        if head is not None:
            values.update(audit_row=head[0], audit_hash=head[1], audit_verdict=head[2])
        summary = tx.execute(
            "SELECT payload, received_at, seq FROM messages WHERE clinic = ? AND device = ?"
            " AND kind = 'summary' ORDER BY seq DESC LIMIT 1", (clinic, device)).fetchone()
        if summary is not None:
            body = json.loads(summary[0])
            model = str(body.get("model", ""))
            figures = _drift(tx, clinic, device, model, health)
            values.update(_summary_values(body, model, figures, float(summary[1])))
            if int(summary[2]) > int(values.get("queue_seq") or 0):  # the newer one's queue
                values.update(_queue_values(body, int(summary[2]), float(summary[1])))
        event = tx.execute(
            "SELECT received_at, payload FROM messages WHERE clinic = ? AND device = ?"
            " AND kind = 'event' ORDER BY seq DESC LIMIT 1", (clinic, device)).fetchone()
        if event is not None:
            values.update(_event_values(json.loads(event[1]), event[0]))
        _upsert(tx, clinic, device, float(seen), values)
    return len(boxes)
