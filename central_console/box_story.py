"""What a box's page tells of its recent past, once each: a restart that loads a model told
as such, not as the box going offline, and a run of the same status or event as one line
with its count and times.

A box that installs a model (or goes back to its earlier one) reports the event, then
restarts its service to load it: its telemetry says ``offline`` as it stops and ``online``
when it is back, a minute later. Nothing in the ``offline`` status says why; the event just
before it does. An ``offline`` received at most :data:`RESTART_SECONDS` after such an event
is that restart, and the box is "restarting to install a model" until it is back, or until
:data:`RESTART_SECONDS` have passed without it (then it is offline, as it says).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

#: how long a restart for a model may take before the box is called offline (seconds)
RESTART_SECONDS = 600.0
#: the events after which a box restarts to load a model, and what the restart is for
RESTART_EVENTS = {"model_installed": "install", "model_rolled_back": "rollback"}


def restart(state: object, state_at: object, event: object, event_at: object,
            now: float) -> str | None:
    """``install`` or ``rollback`` when a box's ``offline`` (received at ``state_at``) is the
    restart after its install or rollback ``event`` (at ``event_at``), less than
    :data:`RESTART_SECONDS` ago; else None. The two times are at most
    :data:`RESTART_SECONDS` apart either way: an event's time may be the box's clock, a
    little ahead of the hospital's."""
    kind = RESTART_EVENTS.get(str(event))
    if state != "offline" or kind is None or not _time(state_at) or not _time(event_at):
        return None
    went = float(state_at)  # type: ignore[arg-type]
    if abs(went - float(event_at)) > RESTART_SECONDS:  # type: ignore[arg-type]
        return None
    return kind if now - went < RESTART_SECONDS else None


def _time(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def runs(items: Sequence[Mapping[str, Any]], key: Callable[[Mapping[str, Any]], Any]
         ) -> list[dict[str, Any]]:
    """``items`` (newest first, each with ``received_at``) with each run of neighbours of
    the same ``key`` made one: the newest of the run with ``count`` and ``since`` (when
    the run's oldest arrived)."""
    out: list[dict[str, Any]] = []
    for item in items:
        if out and key(out[-1]) == key(item):
            out[-1]["count"] += 1
            out[-1]["since"] = item.get("received_at")
        else:
            out.append({**item, "count": 1, "since": item.get("received_at")})
    return out


def statuses(rows: Sequence[Mapping[str, Any]],
             events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A box's recent statuses (newest first, ``queries.box_messages``) in runs, each with
    its ``word``: its state (a heartbeat is ``online``), or ``restart_install`` /
    ``restart_rollback`` for an ``offline`` that was the restart after an install or a
    rollback among ``events`` (the box's recent events, newest first)."""
    marked = []
    for row in rows:
        state = row["payload"].get("state")
        word = "online" if state == "heartbeat" else str(state)
        if state == "offline":
            went = row.get("received_at")
            for event in events:  # the latest install or rollback before it went offline
                kind = restart(state, went, event["payload"].get("event"),
                               event.get("received_at"), float(went or 0) + 1)
                if kind is not None:
                    word = f"restart_{kind}"
                    break
        marked.append({**row, "word": word})
    return runs(marked, lambda item: item["word"])


def events(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A box's recent events (newest first) in runs: the same event, reason, step, rollout
    and model repeated in a row (a stalled download said again and again) is one line."""
    return runs(rows, lambda item: tuple(item["payload"].get(name) for name in (
        "event", "reason", "step", "rollout", "subject_model")))
