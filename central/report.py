"""The hospital's overview: one row per device with its state, health and figures.

Health, from worst to best:

* ``revoked``  – the device's enrolment was revoked; its messages are refused;
* ``offline``  – its latest status message said it was shutting down;
* ``silent``   – nothing received for longer than ``stale_seconds`` (or ever);
* ``warning``  – disk nearly full, long queue, outbox dropping messages, drift, a
  recent device event (a model package rolled back or refused, a service failed), or
  an audit-trail head its heartbeats reported in the last ``AUDIT_ALARM_DAYS`` was
  ``rewritten``, ``rewound`` or a ``gap`` (:mod:`central.audit_witness`), even when
  later heads extend the trail again;
* ``ok``       – none of the above: the device reports and nothing needs a look.

Every reason behind a health word is listed with the row, so a person can act
on it without reading the raw messages.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from central.audit_witness import ALARMS
from central.config import HealthConfig
from central.drift import drift_warnings, windows
from central.store import Device, Store, StoredMessage

#: days a rewritten, rewound or gap verdict stays in the report after later heartbeats extend
#: the trail again (one heartbeat later the latest head is "extends": the alarm must not go)
AUDIT_ALARM_DAYS = 30
HEALTH_ORDER = ("revoked", "offline", "silent", "warning", "ok")

_COLUMNS = (
    # (heading, row key, align right?)
    ("CLINIC", "clinic", False),
    ("DEVICE", "device", False),
    ("MODEL", "model", False),
    ("LAST SEEN (UTC)", "last_seen", False),
    ("STATE", "state", False),
    ("HEALTH", "health", False),
    ("WAITING", "alerts_waiting", True),
    ("ALERTS", "alerts_total", True),
    ("STUDIES", "studies", True),
    ("FINDINGS", "findings", True),
    ("QUARANT.", "quarantined", True),
    ("P90 MS", "latency_p90_ms", True),
    ("QUEUE", "queue_depth", True),
    ("DISK %", "disk_used_pct", True),
)


def format_time(epoch: float | None) -> str:
    """``YYYY-MM-DD HH:MM`` in UTC, or ``never``."""
    if epoch is None:
        return "never"
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def format_duration(seconds: float) -> str:
    """A short human duration: ``45 s``, ``12 min``, ``3 h 20 min``, ``2 d 4 h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _latest_model(*messages: StoredMessage | None) -> str | None:
    present = [m for m in messages if m is not None and "model" in m.payload]
    if not present:
        return None
    return max(present, key=lambda m: m.seq).payload["model"]


def _drift(store: Store, record: Device, summary: StoredMessage | None,
           health: HealthConfig) -> list[str]:
    """Drift warnings for the model of the latest summary (first summaries vs latest ones,
    by the rule the console's drift mark follows: :func:`central.drift.windows`)."""
    if summary is None:
        return []
    model = summary.payload["model"]
    where = (record.clinic, record.device)
    latest = store.summaries(*where, model, limit=health.recent_summaries, newest=True)
    first = store.summaries(*where, model, limit=health.baseline_summaries, newest=False)
    baseline, recent = windows([(m.seq, m.payload) for m in first],
                               [(m.seq, m.payload) for m in latest], health)
    return drift_warnings(baseline, recent, health)


def latest_queue(*messages: StoredMessage | None) -> int | None:
    """The queue the box reported last: that of the message it numbered last among
    ``messages`` (its latest status and summary), as the console shows it."""
    present = [m for m in messages if m is not None and "queue_depth" in m.payload]
    return max(present, key=lambda m: m.seq).payload["queue_depth"] if present else None


def _warnings(summary: StoredMessage | None, queue: int | None,
              health: HealthConfig) -> list[str]:
    reasons = []
    if queue is not None and queue >= health.queue_warn:
        reasons.append(f"{queue} objects waiting in the box's queue")
    if summary is None:
        return reasons
    figures = summary.payload
    if figures["disk_used_pct"] >= health.disk_warn_pct:
        reasons.insert(0, f"disk {figures['disk_used_pct']:.0f}% full "
                       f"({figures['disk_free_mb']} MB free)")
    if figures["outbox_dropped"] > 0:
        reasons.append(f"the box's outbox dropped {figures['outbox_dropped']} messages")
    return reasons


#: device events in words, for the report's reasons
EVENT_WORDS = {
    "model_rolled_back": "model {subject_model} rolled back to {model}",
    "model_refused": "model package {subject_model} refused",
    "runtime_fallback": "model {model} fell back to another artifact",
    "model_unavailable": "model {subject_model} named by the routing rules is not running",
    "service_failed": "service {unit} failed",
}


def _event_warning(event: StoredMessage | None, health: HealthConfig, now: float) -> list[str]:
    """The latest device event in words, while it is recent and worth a person's look."""
    if event is None or event.payload["event"] not in EVENT_WORDS:
        return []
    if now - event.received_at > health.event_warn_hours * 3600:
        return []
    words = EVENT_WORDS[event.payload["event"]].format(**event.payload)
    return [f"{words} ({event.payload['reason'].replace('_', ' ')}) "
            f"at {format_time(event.payload['created_at'])}"]


def _audit_warning(head: dict[str, Any] | None) -> list[str]:
    """The latest witnessed audit head in words, when its verdict is an alarm."""
    if head is None or head["verdict"] not in ALARMS:
        return []
    return [f"audit trail {head['verdict']} (heartbeat #{head['seq']} at "
            f"{format_time(head['received_at'])}: row {head['row']}, since row "
            f"{head['since_row']}); see clinibox central audit-heads"]


def device_row(store: Store, record: Device, health: HealthConfig, now: float,
               last_seen: float | None, alerts: tuple[int, int],
               audit_head: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report row of one enrolled device (``audit_head``: its latest witnessed head)."""
    status, summary, alert, event = (store.latest(record.clinic, record.device, kind)
                                     for kind in ("status", "summary", "alert", "event"))
    state = status.payload["state"] if status else "unknown"
    state = "online" if state == "heartbeat" else state
    drift = _drift(store, record, summary, health)
    queue = latest_queue(status, summary)
    warnings = (_warnings(summary, queue, health) + drift + _event_warning(event, health, now)
                + _audit_warning(audit_head))
    reasons: list[str] = []
    if record.revoked_at is not None:
        health_word = "revoked"
        reasons.append(f"enrolment revoked on {format_time(record.revoked_at)}")
    elif state == "offline":
        health_word = "offline"
        reasons.append(f"the box said it was going offline "
                       f"({format_time(status.received_at if status else None)})")
    elif last_seen is None:
        health_word = "silent"
        reasons.append("never heard from since enrolment")
    elif now - last_seen > health.stale_seconds:
        health_word = "silent"
        reasons.append(f"no message for {format_duration(now - last_seen)}")
    else:
        health_word = "warning" if warnings else "ok"
    reasons.extend(warnings)
    figures = summary.payload if summary else {}
    return {
        "clinic": record.clinic,
        "device": record.device,
        "model": _latest_model(status, summary, alert, event),
        "last_seen": last_seen,
        "state": state,
        "health": health_word,
        "alerts_waiting": alerts[0],
        "alerts_total": alerts[1],
        "studies": figures.get("studies"),
        "findings": figures.get("findings"),
        "quarantined": figures.get("quarantined"),
        "latency_p90_ms": figures.get("latency_ms", {}).get("p90"),
        "queue_depth": queue,
        "disk_used_pct": figures.get("disk_used_pct"),
        "summary_at": summary.received_at if summary else None,
        "drift": drift,
        "audit": audit_head["verdict"] if audit_head else None,
        "reasons": reasons,
    }


def build_report(store: Store, health: HealthConfig, now: float) -> list[dict[str, Any]]:
    """One row per enrolled device, by clinic then device (see the module doc for health)."""
    seen = store.last_seen()
    alert_counts = store.alert_counts()
    heads = store.latest_audit_heads()
    alarms = store.latest_audit_alarms(now - AUDIT_ALARM_DAYS * 86400)
    return [device_row(store, record, health, now, seen.get((record.clinic, record.device)),
                       alert_counts.get((record.clinic, record.device), (0, 0)),
                       alarms.get((record.clinic, record.device))
                       or heads.get((record.clinic, record.device)))
            for record in store.devices()]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "never" if key == "last_seen" else "-"
    if key == "last_seen":
        return format_time(value)
    if key == "latency_p90_ms":
        return f"{value:.0f}"
    if key == "disk_used_pct":
        return f"{value:.1f}"
    return str(value)


def render_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table for people, with each device's reasons listed under it."""
    if not rows:
        return "no devices enrolled (clinibox central enrol …)\n"
    cells = [[_cell(key, row.get(key)) for _, key, _ in _COLUMNS] for row in rows]
    widths = [max(len(heading), *(len(line[i]) for line in cells))
              for i, (heading, _, _) in enumerate(_COLUMNS)]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if right else v.ljust(w)
                 for v, w, (_, _, right) in zip(values, widths, _COLUMNS, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line([heading for heading, _, _ in _COLUMNS]),
           line(["-" * w for w in widths])]
    out.extend(line(values) for values in cells)
    notes = [(row, reason) for row in rows for reason in row["reasons"]]
    if notes:
        out.append("")
        for row, reason in notes:
            out.append(f"{row['clinic']}/{row['device']}: {reason}")
    counts = {word: sum(1 for r in rows if r["health"] == word) for word in HEALTH_ORDER}
    out.append("")
    out.append(", ".join(f"{n} {word}" for word, n in counts.items() if n)
               + f" ({len(rows)} device{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"
