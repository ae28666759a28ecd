"""The hospital's overview: one row per device with its state, health and figures.

Health, from worst to best:

* ``revoked``  – the device's enrolment was revoked; its messages are refused;
* ``offline``  – its latest status message said it was shutting down;
* ``silent``   – nothing received for longer than ``stale_seconds`` (or ever);
* ``warning``  – disk nearly full, long queue, outbox dropping messages, drift, a
  recent device event (a model package rolled back or refused, a service failed), or
  an audit-trail head its heartbeats reported in the last ``AUDIT_ALARM_DAYS`` was
  ``rewritten``, ``rewound``, a ``gap`` or ``pruned_early`` (:mod:`central.audit_witness`),
  even when later heads extend the trail again;
* ``ok``       – none of the above: the device reports and nothing needs a look.

Every reason behind a health word is listed with the row, so a person can act
on it without reading the raw messages. The reasons and the table are in the current
language (``clinibox central report`` speaks the terminal's; ``--json`` is English).
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from typing import Any

from central.audit_witness import ALARMS
from central.config import HealthConfig
from central.drift import drift_warnings, windows
from central.store import Device, Store, StoredMessage
from clinibox_common.i18n import N_, gettext, ngettext

#: days a rewritten, rewound or gap verdict stays in the report after later heartbeats extend
#: the trail again (one heartbeat later the latest head is "extends": the alarm must not go)
AUDIT_ALARM_DAYS = 30
HEALTH_ORDER = ("revoked", "offline", "silent", "warning", "ok")

_COLUMNS = (
    # (heading, row key, align right?)
    (N_("CLINIC"), "clinic", False),
    (N_("DEVICE"), "device", False),
    (N_("MODEL"), "model", False),
    (N_("LAST SEEN (UTC)"), "last_seen", False),
    (N_("STATE"), "state", False),
    (N_("HEALTH"), "health", False),
    (N_("WAITING"), "alerts_waiting", True),
    (N_("ALERTS"), "alerts_total", True),
    (N_("STUDIES"), "studies", True),
    (N_("FINDINGS"), "findings", True),
    (N_("QUARANT."), "quarantined", True),
    (N_("P90 MS"), "latency_p90_ms", True),
    (N_("QUEUE"), "queue_depth", True),
    (N_("DISK %"), "disk_used_pct", True),
)
#: the health words of the table (the codes stay in ``--json``)
HEALTH_WORDS = {"revoked": N_("revoked"), "offline": N_("offline"), "silent": N_("silent"),
                "warning": N_("warning"), "ok": N_("ok")}


def width(text: str) -> int:
    """The columns ``text`` takes in a terminal (a Chinese character takes two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, columns: int, right: bool = False) -> str:
    """``text`` padded with spaces to ``columns`` terminal columns (left-aligned, or right)."""
    fill = " " * max(0, columns - width(text))
    return fill + text if right else text + fill


def format_time(epoch: float | None) -> str:
    """``YYYY-MM-DD HH:MM`` in UTC, or ``never`` (in the current language)."""
    if epoch is None:
        return gettext("never")
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def format_duration(seconds: float) -> str:
    """A short human duration: ``45 s``, ``12 min``, ``3 h 20 min``, ``2 d 4 h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return gettext("%(n)s s", n=seconds)
    minutes = seconds // 60
    if minutes < 60:
        return gettext("%(n)s min", n=minutes)
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return gettext("%(h)s h %(min)s min", h=hours, min=minutes) if minutes \
            else gettext("%(n)s h", n=hours)
    days, hours = divmod(hours, 24)
    return gettext("%(d)s d %(h)s h", d=days, h=hours) if hours \
        else gettext("%(d)s d", d=days)


def _latest_model(*messages: StoredMessage | None) -> str | None:
    present = [m for m in messages if m is not None and "model" in m.payload]
    if not present:
        return None
    return max(present, key=lambda m: m.seq).payload["model"]


def _drift(store: Store, record: Device, summary: StoredMessage | None,
           health: HealthConfig) -> list[str]:
    """Drift warnings for the model of the latest summary (first summaries vs latest ones,
    by the rule the console's drift mark follows: :func:`central.drift.windows`)."""
    if summary is None or "model" not in summary.payload:
        return []  # a box waiting for its first model: no model to drift
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
        reasons.append(gettext("%(n)s objects waiting in the box's queue", n=queue))
    if summary is None:
        return reasons
    figures = summary.payload
    if figures["disk_used_pct"] >= health.disk_warn_pct:
        reasons.insert(0, gettext("disk %(pct)s%% full (%(mb)s MB free)",
                                  pct=f"{figures['disk_used_pct']:.0f}",
                                  mb=figures["disk_free_mb"]))
    if figures["outbox_dropped"] > 0:
        reasons.append(gettext("the box's outbox dropped %(n)s messages",
                               n=figures["outbox_dropped"]))
    return reasons


#: device events in words, for the report's reasons
EVENT_WORDS = {
    "model_rolled_back": N_("model %(subject_model)s rolled back to %(model)s"),
    "model_refused": N_("model package %(subject_model)s refused"),
    "runtime_fallback": N_("model %(model)s fell back to another artifact"),
    "model_unavailable": N_("model %(subject_model)s named by the routing rules is not "
                            "running"),
    "service_failed": N_("service %(unit)s failed"),
}


def _coded(code: str, words: Any) -> str:
    """A code as the English report always wrote it (``load failed``), else ``words(code)``
    in the current language."""
    from clinibox_common.i18n import ENGLISH, current

    return code.replace("_", " ") if current() == ENGLISH else str(words(code))


def _event_warning(event: StoredMessage | None, health: HealthConfig, now: float) -> list[str]:
    """The latest device event in words, while it is recent and worth a person's look."""
    if event is None or event.payload["event"] not in EVENT_WORDS:
        return []
    if now - event.received_at > health.event_warn_hours * 3600:
        return []
    from central import labels

    words = gettext(EVENT_WORDS[event.payload["event"]], **{
        key: event.payload.get(key) for key in ("subject_model", "model", "unit")})
    return [gettext("%(event)s (%(reason)s) at %(time)s", event=words,
                    reason=_coded(event.payload["reason"], labels.rollout_reason),
                    time=format_time(event.payload["created_at"]))]


def _audit_warning(head: dict[str, Any] | None) -> list[str]:
    """The latest witnessed audit head in words, when its verdict is an alarm."""
    if head is None or head["verdict"] not in ALARMS:
        return []
    from central import labels

    return [gettext("audit trail %(verdict)s (heartbeat #%(seq)s at %(time)s: row %(row)s, "
                    "since row %(since)s); see %(command)s",
                    verdict=_coded(head["verdict"], labels.audit_verdict),
                    seq=head["seq"],
                    time=format_time(head["received_at"]), row=head["row"],
                    since=head["since_row"], command="clinibox central audit-heads")]


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
        reasons.append(gettext("enrolment revoked on %(time)s",
                               time=format_time(record.revoked_at)))
    elif state == "offline":
        health_word = "offline"
        reasons.append(gettext("the box said it was going offline (%(time)s)",
                               time=format_time(status.received_at if status else None)))
    elif last_seen is None:
        health_word = "silent"
        reasons.append(gettext("never heard from since enrolment"))
    elif now - last_seen > health.stale_seconds:
        health_word = "silent"
        reasons.append(gettext("no message for %(time)s",
                               time=format_duration(now - last_seen)))
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


def _cell(key: str, value: Any, english: bool) -> str:
    from central import labels

    if value is None:
        return gettext("never") if key == "last_seen" else "-"
    if key == "last_seen":
        return format_time(value)
    if key == "state" and not english:
        return labels.box_state(value, False) if value in labels.BOX_STATES \
            else gettext("unknown")
    if key == "health" and not english and value in HEALTH_WORDS:
        return gettext(HEALTH_WORDS[value])
    if key == "latency_p90_ms":
        return f"{value:.0f}"
    if key == "disk_used_pct":
        return f"{value:.1f}"
    return str(value)


def render_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table for people, with each device's reasons listed under it."""
    from clinibox_common.i18n import ENGLISH, current

    if not rows:
        return gettext("no devices enrolled (%(command)s)",
                       command="clinibox central enrol …") + "\n"
    english = current() == ENGLISH
    headings = [gettext(heading) for heading, _, _ in _COLUMNS]
    cells = [[_cell(key, row.get(key), english) for _, key, _ in _COLUMNS] for row in rows]
    widths = [max(width(heading), *(width(line[i]) for line in cells))
              for i, heading in enumerate(headings)]

    def line(values: list[str]) -> str:
        parts = [pad(v, w, right)
                 for v, w, (_, _, right) in zip(values, widths, _COLUMNS, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(headings), line(["-" * w for w in widths])]
    out.extend(line(values) for values in cells)
    notes = [(row, reason) for row in rows for reason in row["reasons"]]
    if notes:
        out.append("")
        for row, reason in notes:
            out.append(f"{row['clinic']}/{row['device']}: {reason}")
    counts = {word: sum(1 for r in rows if r["health"] == word) for word in HEALTH_ORDER}
    out.append("")
    out.append(gettext(", ").join(gettext("%(n)s %(health)s", n=n,
                                          health=gettext(HEALTH_WORDS[word]))
                                  for word, n in counts.items() if n)
               + ngettext(" (%(num)d device)", " (%(num)d devices)", len(rows)))
    return "\n".join(out) + "\n"
