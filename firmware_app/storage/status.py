"""The box's status: one set of figures for ``clinibox status`` and the viewer's device page.

Both read :func:`box_status`, so they agree on every count: what is received,
waiting, processed, held back and why (quarantined and failed objects, by
reason), what waits in the outbox, the link to the hospital, the disk, the
last errors, the retention figures, the DICOM outbox's backlog and last error per
PACS destination, the audit trail's size (alarm past ``[audit] max_mb``), whether the box
waits for a model it may run (``model_waiting``) and the hospital's latest model rollout
orders (``model_orders``).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from clinibox_common.contracts.statuses import (
    HELD_STATUSES,
    WAITING_STATUSES,
    InstanceStatus,
    OutboxState,
    Verdict,
)
from firmware_app.storage import download_progress, model_offers, worklist
from firmware_app.storage.audit_size import size_figures as audit_size_figures
from firmware_app.storage.dicom_outbox import destination_figures
from firmware_app.storage.disk import disk_figures
from firmware_app.storage.outbox import outbox_pending
from firmware_app.storage.queue import JobQueue
from firmware_app.storage.records_outbox import receiver_figures
from firmware_app.storage.results import ResultStore
from firmware_app.storage.retention import status_figures as retention_figures


def day_bounds(day: dt.date) -> tuple[float, float]:
    """The local-time start and end of ``day`` as epoch seconds."""
    start = dt.datetime.combine(day, dt.time.min).astimezone()
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min).astimezone()
    return start.timestamp(), end.timestamp()


def held_reasons(conn: sqlite3.Connection, limit: int = 20) -> dict[str, int]:
    """Objects held back (quarantined or failed), counted by reason, most frequent first."""
    rows = conn.execute(
        "SELECT COALESCE(reason, '') AS reason, COUNT(*) AS n FROM instances"
        f" WHERE status IN ({', '.join('?' * len(HELD_STATUSES))})"
        " GROUP BY reason ORDER BY n DESC, reason LIMIT ?",
        (*HELD_STATUSES, limit))
    return {row[0]: int(row[1]) for row in rows}


def feedback_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Clinicians' verdicts recorded so far, by verdict."""
    counts = {verdict.value: 0 for verdict in Verdict}
    for verdict, n in conn.execute("SELECT verdict, COUNT(*) FROM feedback GROUP BY verdict"):
        counts[verdict] = n
    return counts


def _latest_result(conn: sqlite3.Connection) -> dict[str, Any] | None:
    row = conn.execute("SELECT model_id, backend, created_at FROM results"
                       " ORDER BY created_at DESC LIMIT 1").fetchone()
    return None if row is None else dict(row)


#: how many of the hospital's latest rollout offers and rollback orders the status shows
MODEL_ORDERS_SHOWN = 5


def model_waiting(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """Why the box waits for a model (reason code, detail, since), or None while it runs one."""
    wait = model_offers.waiting(conn)
    return None if wait is None else {"reason": wait.reason, "detail": wait.detail,
                                      "since": wait.since}


def model_orders(conn: sqlite3.Connection, limit: int = MODEL_ORDERS_SHOWN,
                 ) -> list[dict[str, Any]]:
    """The hospital's latest rollout offers and rollback orders, newest first, and the step
    the box reached in each (without the package's chunk list)."""
    return [{"seq": o.seq, "kind": o.kind, "rollout": o.rollout, "name": o.name,
             "version": o.version, "model_id": o.model_id, "step": o.step, "reason": o.reason,
             "received_at": o.received_at, "updated_at": o.updated_at, "done": o.done}
            for o in model_offers.recent(conn, limit)]


def study_images_waiting(conn: sqlite3.Connection, study_key: str) -> int:
    """How many images of a study are received and not analysed yet (queued or processing)."""
    return conn.execute(
        "SELECT COUNT(*) FROM instances WHERE study_instance_uid = ?"
        f" AND status IN ({', '.join('?' * len(WAITING_STATUSES))})",
        (study_key, *WAITING_STATUSES)).fetchone()[0]


def box_status(conn: sqlite3.Connection, state_dir: Path, now: float | None = None,
               pacs_destinations: Iterable[str] = (), audit_max_mb: float = 0,
               records_receivers: Iterable[str] = ()) -> dict[str, Any]:
    """Every status figure of the box (counts are integers; times are epoch seconds).

    ``pacs_destinations``: the configured destinations' names, listed under ``pacs``
    even before anything was queued for them (a destination with rows is listed anyway).
    ``records_receivers``: the clinic information systems configured, under ``records``
    likewise.
    ``audit_max_mb``: ``[audit] max_mb``, past which ``audit.over_limit`` is the alarm.
    """
    now = time.time() if now is None else now
    today, _ = day_bounds(dt.date.fromtimestamp(now))
    statuses = JobQueue(conn).counts()
    store = ResultStore(conn)
    link = dict(conn.execute("SELECT name, value FROM telemetry_state").fetchall())
    duplicates = conn.execute("SELECT COALESCE(SUM(duplicates), 0) FROM instances").fetchone()[0]
    return {
        "received": sum(statuses.values()),
        "queued": sum(statuses[status] for status in WAITING_STATUSES),
        "processed": statuses[InstanceStatus.PROCESSED],
        "quarantined": statuses[InstanceStatus.QUARANTINED],
        "not_analysed": statuses[InstanceStatus.NOT_ANALYSED],
        "failed": statuses[InstanceStatus.FAILED],
        "processing": statuses[InstanceStatus.PROCESSING],
        "statuses": statuses,
        "duplicates_ignored": int(duplicates),
        "studies": store.study_count(),
        "received_today": conn.execute(
            "SELECT COUNT(*) FROM instances WHERE received_at >= ?", (today,)).fetchone()[0],
        "processed_today": conn.execute(
            "SELECT COUNT(*) FROM results WHERE created_at >= ?", (today,)).fetchone()[0],
        "quarantine_reasons": held_reasons(conn),
        "outbox_pending": outbox_pending(conn),
        "outbox_last_sent": conn.execute(
            "SELECT MAX(sent_at) FROM outbox WHERE state = ?", (OutboxState.SENT,)).fetchone()[0],
        "pacs": destination_figures(conn, pacs_destinations),
        "records": receiver_figures(conn, list(records_receivers)),
        "link_up": None if "link_up" not in link else bool(link["link_up"]),
        "link_since": link.get("link_since"),
        "appliance_seen_at": link.get("appliance_seen_at"),
        "latest_result": _latest_result(conn),
        "last_errors": store.last_errors(10),
        "feedback": feedback_counts(conn),
        "state_dir": str(state_dir),
        "disk": disk_figures(state_dir),  # free_mb, total_mb, used_percent, mount
        "audit": audit_size_figures(conn, audit_max_mb),  # rows, estimated_mb, over_limit
        **retention_figures(conn),  # images_deleted_by_retention, last_retention_pass
        "model_waiting": model_waiting(conn),  # None, or reason, detail, since
        "model_orders": model_orders(conn),  # the hospital's latest rollouts, newest first
        # the download in progress: seq, received/total bytes, percent, rate, time left, at
        "download": download_progress.current(conn),
        "worklist": worklist_figures(conn),  # state, reason, items, answered_at, checked_at
    }


def worklist_figures(conn: sqlite3.Connection) -> dict[str, Any]:
    """The clinic's worklist as the poller last found it: a ``WorklistState`` code, the
    reason code while it is down (else ''), today's steps, when it last answered and was
    last asked (epoch seconds, or None)."""
    found = worklist.status(conn)
    return {"state": found.state.value, "reason": found.reason if found.state ==
            worklist.WorklistState.DOWN else "", "items": found.items,
            "answered_at": found.answered_at, "checked_at": found.checked_at}
