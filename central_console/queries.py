"""Every read query of the console, bounded (LIMIT, and the indexes of central schema v4).

The pages read one query each for their list (a JOIN, never a query per row), so the
worklist and the fleet page stay fast with 2,000 boxes: alerts are read through
``alerts_by_state`` / ``alerts_by_box``, a box's history through ``messages_by_kind``,
``alerts_by_box`` and ``drift_points_by_box``, the fleet from ``box_state`` (one row a
box). The same SQL runs on SQLite and PostgreSQL (``?`` placeholders, ``central.sql``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from central import intake, rollouts
from central.config import HealthConfig
from central.fleet import BOX_STATE_COLUMNS
from central.reviews import ALERT_COLUMNS
from central.sql import Database
from central_console import box_story
from clinibox_common.contracts.downlink import AlertState

#: rows per page of the worklist, the fleet and the audit trail
ALERTS_PER_PAGE = 50
BOXES_PER_PAGE = 100
AUDIT_PER_PAGE = 100
#: the most rows any list query returns
MOST = 500

#: the worklist's state filter: "open" (new or under review, the default), one state, or all
STATE_FILTERS = ("open", *(state.value for state in AlertState), "all")
#: the fleet's health filter (``queue``: more objects waiting than ``[health] queue_warn``;
#: ``disk``: the disk fuller than ``[health] disk_warn_pct``)
HEALTH_FILTERS = ("all", "stale", "drift", "queue", "disk", "ok")
#: the largest id or page number a request may name (SQLite's integers are 64-bit)
LARGEST = 2**62
#: the most clinics and models the filters' selects offer
MOST_CHOICES = 5000


def bounded(value: int) -> int:
    """``value`` kept within 0 … :data:`LARGEST` (a query never overflows the database)."""
    return max(0, min(int(value), LARGEST))


def page_number(args: Any) -> int:
    """The page a request's query string asks for (``page``): 1 when none or not a number,
    at most :data:`LARGEST` (each list keeps it within its own pages)."""
    try:
        return min(max(1, int(args.get("page", "1"))), LARGEST)
    except ValueError:
        return 1


def _like_prefix(value: str) -> str:
    """A LIKE pattern for names starting with ``value`` (its ``%``, ``_`` and ``\\`` taken
    literally: ``ESCAPE '\\'``)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

#: a box's state (``central.fleet``'s columns) with its clinic's name and county
_BOX_JOINED = " FROM box_state b LEFT JOIN clinics c ON c.clinic = b.clinic"
_BOX_SELECT = ("SELECT " + ", ".join(f"b.{c}" for c in BOX_STATE_COLUMNS)
               + ", c.name AS clinic_name, c.county AS county" + _BOX_JOINED)


@dataclass(frozen=True)
class AlertFilters:
    """The worklist's filters (GET parameters); empty means any."""

    county: str = ""
    clinic: str = ""
    box: str = ""
    model: str = ""
    state: str = "open"

    @classmethod
    def from_args(cls, args: Any) -> AlertFilters:
        """The filters from a request's query string (unknown states become ``open``)."""
        state = str(args.get("state", "open") or "open")
        return cls(county=_arg(args, "county"), clinic=_arg(args, "clinic"),
                   box=_arg(args, "box"), model=_arg(args, "model"),
                   state=state if state in STATE_FILTERS else "open")

    def params(self) -> dict[str, str]:
        """The non-empty filters, for links (pages, the poll)."""
        return {k: v for k, v in (("county", self.county), ("clinic", self.clinic),
                                  ("box", self.box), ("model", self.model),
                                  ("state", self.state)) if v and not (k == "state" and
                                                                       v == "open")}

    def where(self) -> tuple[list[str], list[Any]]:
        """SQL conditions on ``a`` (alerts) and ``c`` (clinics), and their parameters."""
        terms: list[str] = []
        params: list[Any] = []
        for column, value in (("c.county", self.county), ("a.clinic", self.clinic),
                              ("a.model", self.model)):
            if value:
                terms.append(f"{column} = ?")
                params.append(value)
        if self.box:  # the start of a box's id is enough
            terms.append("a.device LIKE ? ESCAPE '\\'")
            params.append(_like_prefix(self.box))
        if self.state == "open":
            terms.append("a.state IN (?, ?)")
            params += [AlertState.NEW.value, AlertState.UNDER_REVIEW.value]
        elif self.state != "all":
            terms.append("a.state = ?")
            params.append(self.state)
        return terms, params


def _arg(args: Any, name: str) -> str:
    return str(args.get(name, "") or "").strip()[:100]


@dataclass
class Page:
    """One page of a list: its rows, the page number and the total."""

    rows: list[dict[str, Any]]
    page: int
    per_page: int
    total: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pages(self) -> int:
        """How many pages the list has (at least one)."""
        return max(1, -(-self.total // self.per_page))


def _dicts(cursor: Any) -> list[dict[str, Any]]:
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _payload(text: Any) -> Any:
    """A stored message's JSON payload, or ``{}`` when it is none or not JSON."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return {}


def _escalated(alert: dict[str, Any], escalate_before: float) -> bool:
    return alert["state"] != AlertState.REVIEWED and alert["received_at"] < escalate_before


#: the whole image's probability from which a waiting alert is of high priority
HIGH_PRIORITY_SCORE = 0.9


def priority(alert: dict[str, Any]) -> str:
    """An alert's priority, the worklist's order in one word: ``overdue`` (waiting longer
    than ``[alerts] escalate_minutes``: ``escalated``), ``high`` (the model's probability
    for the whole image is :data:`HIGH_PRIORITY_SCORE` or more), ``normal``; "" for a
    reviewed alert (nothing is waiting)."""
    if alert["state"] == AlertState.REVIEWED:
        return ""
    if alert.get("escalated"):
        return "overdue"
    score = alert.get("score")
    return "high" if score is not None and float(score) >= HIGH_PRIORITY_SCORE else "normal"


def _mark(rows: list[dict[str, Any]], escalate_before: float) -> None:
    for row in rows:
        row["escalated"] = _escalated(row, escalate_before)
        row["priority"] = priority(row)


_ALERT_SELECT = ("SELECT " + ", ".join(f"a.{c}" for c in ALERT_COLUMNS)
                 + ", c.name AS clinic_name, c.county AS county"
                 " FROM alerts a LEFT JOIN clinics c ON c.clinic = a.clinic")


#: A box's alerts the worklist shows at most (unless filtered to one box): the rest are
#: one line, "N more from this box", so one box's flood cannot fill a page.
PER_BOX_ON_WORKLIST = 3
#: The worklist's order: escalated first, then score, then age (parameters: the reviewed
#: state and the escalation time), on the columns of ``_ALERT_SELECT``'s rows.
_WORKLIST_ORDER = ("CASE WHEN {p}state <> ? AND {p}received_at < ? THEN 0 ELSE 1 END,"
                   " {p}score DESC, {p}received_at ASC, {p}id ASC")

#: ``_ALERT_SELECT`` with each alert's place among its box's (``box_rank``, by the worklist's
#: order) and its box's count (``box_total``).
_RANKED_SELECT = _ALERT_SELECT.replace(
    " FROM alerts a",
    ", ROW_NUMBER() OVER (PARTITION BY a.clinic, a.device ORDER BY "
    + _WORKLIST_ORDER.format(p="a.") + ") AS box_rank,"
    " COUNT(*) OVER (PARTITION BY a.clinic, a.device) AS box_total FROM alerts a", 1)

#: ``_ALERT_SELECT`` with each alert's place among its box's newest (``box_rank``) and its
#: box's count (``box_total``): the poll's new alerts, a box's newest few.
_NEWEST_SELECT = _ALERT_SELECT.replace(
    " FROM alerts a",
    ", ROW_NUMBER() OVER (PARTITION BY a.clinic, a.device ORDER BY a.id DESC) AS box_rank,"
    " COUNT(*) OVER (PARTITION BY a.clinic, a.device) AS box_total FROM alerts a", 1)


def worklist(db: Database, filters: AlertFilters, *, page: int, escalate_minutes: float,
             now: float | None = None, per_box: int = PER_BOX_ON_WORKLIST) -> Page:
    """The alerts the filters keep, by priority: escalated first, then score, then age.

    Escalated: not reviewed and waiting longer than ``escalate_minutes``. Unless the
    filters name a box, at most ``per_box`` alerts of one box are listed (its first by
    that order); the last listed carries ``more_from_box``, how many more it has.
    """
    now = time.time() if now is None else now
    before = now - escalate_minutes * 60
    terms, params = filters.where()
    where = (" WHERE " + " AND ".join(terms)) if terms else ""
    page = min(max(1, page), LARGEST // ALERTS_PER_PAGE)
    per_box = LARGEST if filters.box else per_box
    order = [AlertState.REVIEWED.value, before]
    ranked = f"SELECT * FROM ({_RANKED_SELECT}{where}) AS ranked WHERE box_rank <= ?"
    with db.transaction(write=False) as tx:
        total = int(tx.execute(f"SELECT COUNT(*) FROM ({ranked}) AS listed",
                               [*order, *params, per_box]).fetchone()[0])
        cursor = tx.execute(
            f"{ranked} ORDER BY {_WORKLIST_ORDER.format(p='')} LIMIT ? OFFSET ?",
            [*order, *params, per_box, *order, ALERTS_PER_PAGE, (page - 1) * ALERTS_PER_PAGE])
        rows = _dicts(cursor)
        last = tx.execute("SELECT MAX(id) FROM alerts").fetchone()[0]
    for row in rows:
        rank, count = int(row.pop("box_rank")), int(row.pop("box_total"))
        row["more_from_box"] = count - rank if rank == per_box and count > rank else 0
    _mark(rows, before)
    return Page(rows, page, ALERTS_PER_PAGE, total, {"last_id": int(last or 0)})


def alerts_after(db: Database, filters: AlertFilters, after: int, *, escalate_minutes: float,
                 now: float | None = None) -> tuple[list[dict[str, Any]], int]:
    """Alerts newer than id ``after`` that the filters keep (newest first, at most a page;
    unless the filters name a box, a box's newest :data:`PER_BOX_ON_WORKLIST`, the last with
    ``more_from_box``), and the newest alert id of all."""
    now = time.time() if now is None else now
    before = now - escalate_minutes * 60
    terms, params = filters.where()
    after = bounded(after)
    terms.insert(0, "a.id > ?")
    params.insert(0, after)
    per_box = LARGEST if filters.box else PER_BOX_ON_WORKLIST
    with db.transaction(write=False) as tx:  # a box's newest few, as on the worklist
        rows = _dicts(tx.execute(
            f"SELECT * FROM ({_NEWEST_SELECT} WHERE {' AND '.join(terms)}) AS ranked"
            " WHERE box_rank <= ? ORDER BY id DESC LIMIT ?",
            [*params, per_box, ALERTS_PER_PAGE]))
        last = tx.execute("SELECT MAX(id) FROM alerts").fetchone()[0]
    for row in rows:
        rank, count = int(row.pop("box_rank")), int(row.pop("box_total"))
        row["more_from_box"] = count - rank if rank == per_box and count > rank else 0
    _mark(rows, before)
    return rows, max(int(last or 0), after)


def counties(db: Database) -> list[str]:
    """The counties the clinics are in (for the filter), at most :data:`MOST`."""
    with db.transaction(write=False) as tx:
        rows = tx.execute("SELECT DISTINCT county FROM clinics WHERE county <> ''"
                          " ORDER BY county LIMIT ?", (MOST,)).fetchall()
    return [str(row[0]) for row in rows]


def clinics(db: Database) -> list[tuple[str, str, str]]:
    """The clinics for the filters' select: (id, name, county), by county and name."""
    with db.transaction(write=False) as tx:
        rows = tx.execute("SELECT clinic, name, county FROM clinics ORDER BY county, name,"
                          " clinic LIMIT ?", (MOST_CHOICES,)).fetchall()
    return [(str(row[0]), str(row[1] or row[0]), str(row[2] or "")) for row in rows]


def models(db: Database) -> list[str]:
    """The models the boxes run now (one row a box in ``box_state``), for the filter."""
    with db.transaction(write=False) as tx:
        rows = tx.execute("SELECT DISTINCT model FROM box_state WHERE model IS NOT NULL"
                          " AND model <> '' ORDER BY model LIMIT ?", (MOST_CHOICES,)).fetchall()
    return [str(row[0]) for row in rows]


#: one alert with its clinic and the whole payload the box sent (its message)
_ALERT_DETAIL = ("SELECT " + ", ".join(f"a.{c}" for c in ALERT_COLUMNS)
                 + ", c.name AS clinic_name, c.county AS county, m.payload AS payload"
                 " FROM alerts a LEFT JOIN clinics c ON c.clinic = a.clinic"
                 " LEFT JOIN messages m ON m.clinic = a.clinic AND m.device = a.device"
                 " AND m.seq = a.seq")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def sent_lesions(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The lesions an alert's payload carries (label, score, size in mm or None, growth since
    the patient's earlier study in per cent or None), as the box sent them (highest score
    first); none from a box older than the console."""
    lesions = payload.get("lesions")
    if not isinstance(lesions, list):
        return []
    return [{"label": str(lesion.get("label", "")), "score": _number(lesion.get("score")),
             "size_mm": _number(lesion.get("size_mm")),
             "growth_pct": _number(lesion.get("growth_pct"))}
            for lesion in lesions if isinstance(lesion, dict)]


def alert(db: Database, alert_id: int, *, escalate_minutes: float,
          now: float | None = None) -> dict[str, Any] | None:
    """One alert with its clinic, or None; with what its message carries beyond the alert's
    columns: ``assessment`` (the top image's, None from a box older than the console) and
    ``lesions`` (:func:`sent_lesions`)."""
    now = time.time() if now is None else now
    if not 0 < alert_id <= LARGEST:
        return None
    with db.transaction(write=False) as tx:
        rows = _dicts(tx.execute(f"{_ALERT_DETAIL} WHERE a.id = ?", (alert_id,)))
    if not rows:
        return None
    row = rows[0]
    _mark([row], now - escalate_minutes * 60)
    payload = _payload(row.pop("payload"))
    payload = payload if isinstance(payload, dict) else {}
    assessment = payload.get("assessment")
    row["assessment"] = assessment if isinstance(assessment, str) else None
    row["lesions"] = sent_lesions(payload)
    return row


def box_state(db: Database, clinic: str, device: str) -> dict[str, Any] | None:
    """A box's latest reported state (``box_state``) with its clinic's name and county."""
    with db.transaction(write=False) as tx:
        rows = _dicts(tx.execute(f"{_BOX_SELECT} WHERE b.clinic = ? AND b.device = ?",
                                 (clinic, device)))
    return rows[0] if rows else None


def downlinks(db: Database, clinic: str, device: str, alert_id: int) -> list[dict[str, Any]]:
    """The verdicts sent (or waiting to be sent) to a box for one alert: the newest 20,
    oldest first."""
    with db.transaction(write=False) as tx:
        rows = _dicts(tx.execute(
            "SELECT seq, kind, payload, created_at, sent_at, attempts, last_error FROM downlinks"
            " WHERE clinic = ? AND device = ? AND alert_id = ? ORDER BY seq DESC LIMIT 20",
            (clinic, device, alert_id)))[::-1]
    for row in rows:
        row["payload"] = _payload(row["payload"])
    return rows


def delivery(downlink: dict[str, Any], box: dict[str, Any] | None, *, stale: bool,
             resend_before: float) -> str:
    """Where a verdict stands: ``confirmed`` (the box reported this sequence number);
    ``sent`` (published since ``resend_before``), ``unconfirmed`` (published before it and
    still not confirmed); not published yet: ``no_key`` (the box never reported its
    downlink key), ``waiting`` (the box is ``stale``: silent too long) or ``queued``
    (the box is in touch: it goes out with the publisher's next round)."""
    if box is not None and box.get("downlink_seq") is not None \
            and int(box["downlink_seq"]) >= int(downlink["seq"]):
        return "confirmed"
    if downlink.get("sent_at") is not None:
        return "sent" if float(downlink["sent_at"]) >= resend_before else "unconfirmed"
    if box is None or not box.get("downlink_key"):
        return "no_key"
    return "waiting" if stale else "queued"


def fleet(db: Database, *, county: str, clinic: str, health: str, page: int,
          warn: HealthConfig, now: float | None = None, flood_messages: int = 200) -> Page:
    """Every box (100 a page), stalest first, with its clinic and county, filtered by the
    ``health`` word; each row marked by :func:`mark_health` (``warn``: ``[health]``) and
    with ``held`` (its messages waiting in the receiver's intake) and ``flooding`` (more
    than ``flood_messages`` of them: ``[receiver] flood_messages``)."""
    now = time.time() if now is None else now
    stale_before = now - warn.stale_seconds
    queue_warn, disk_warn_pct = warn.queue_warn, warn.disk_warn_pct
    terms: list[str] = []
    params: list[Any] = []
    if county:
        terms.append("c.county = ?")
        params.append(county)
    if clinic:
        terms.append("b.clinic = ?")
        params.append(clinic)
    if health == "stale":
        terms.append("COALESCE(b.last_seen, 0) < ?")
        params.append(stale_before)
    elif health == "drift":
        terms.append("b.drift <> 0")
    elif health == "queue":
        terms.append("b.queue_depth > ?")
        params.append(queue_warn)
    elif health == "disk":
        terms.append("b.disk_used_pct >= ?")
        params.append(disk_warn_pct)
    elif health == "ok":
        terms.append("COALESCE(b.last_seen, 0) >= ? AND b.drift = 0"
                     " AND COALESCE(b.queue_depth, 0) <= ? AND COALESCE(b.disk_used_pct, 0) < ?")
        params += [stale_before, queue_warn, disk_warn_pct]
    where = (" WHERE " + " AND ".join(terms)) if terms else ""
    page = min(max(1, page), LARGEST // BOXES_PER_PAGE)
    with db.transaction(write=False) as tx:
        total = int(tx.execute(f"SELECT COUNT(*){_BOX_JOINED}{where}", params).fetchone()[0])
        rows = _dicts(tx.execute(
            f"{_BOX_SELECT}{where}"
            " ORDER BY COALESCE(b.last_seen, 0) ASC, b.clinic, b.device LIMIT ? OFFSET ?",
            [*params, BOXES_PER_PAGE, (page - 1) * BOXES_PER_PAGE]))
    held = intake.held(db) if rows else {}
    for row in rows:
        mark_health(row, warn, now)
        row["held"] = held.get((row["clinic"], row["device"]), 0)
        row["flooding"] = row["held"] > flood_messages
    return Page(rows, page, BOXES_PER_PAGE, total)


def mark_health(box: dict[str, Any], health: HealthConfig, now: float) -> None:
    """Set a box row's ``stale`` (silent longer than ``[health] stale_seconds`` at ``now``),
    ``restart`` (its ``offline`` is the restart after installing a model or going back to
    one: :func:`box_story.restart`), ``queue_warn`` and ``disk_warn`` (``[health]
    queue_warn``, ``disk_warn_pct``)."""
    box["stale"] = (box.get("last_seen") or 0) < now - health.stale_seconds
    box["restart"] = None if box["stale"] else box_story.restart(
        box.get("state"), box.get("state_at"), box.get("last_event"), box.get("last_event_at"),
        now)
    box["queue_warn"] = box.get("queue_depth") is not None \
        and box["queue_depth"] > health.queue_warn
    box["disk_warn"] = box.get("disk_used_pct") is not None \
        and box["disk_used_pct"] >= health.disk_warn_pct


def box_messages(db: Database, clinic: str, device: str, kind: str,
                 limit: int = 20) -> list[dict[str, Any]]:
    """A box's latest messages of one kind (``status``, ``event``), newest first."""
    with db.transaction(write=False) as tx:
        rows = _dicts(tx.execute(
            "SELECT seq, kind, model, created_at, received_at, payload FROM messages"
            " WHERE clinic = ? AND device = ? AND kind = ? ORDER BY seq DESC LIMIT ?",
            (clinic, device, kind, min(limit, MOST))))
    for row in rows:
        row["payload"] = _payload(row["payload"])
    return rows


def box_alerts(db: Database, clinic: str, device: str, limit: int = 20) -> list[dict[str, Any]]:
    """A box's latest alerts, newest first."""
    with db.transaction(write=False) as tx:
        return _dicts(tx.execute(
            f"{_ALERT_SELECT} WHERE a.clinic = ? AND a.device = ?"
            " ORDER BY a.received_at DESC LIMIT ?", (clinic, device, min(limit, MOST))))


def drift_series(db: Database, clinic: str, device: str,
                 limit: int = 200) -> dict[str, list[dict[str, Any]]]:
    """A box's drift points per model, oldest first (the latest ``limit`` of each model)."""
    with db.transaction(write=False) as tx:
        models = [str(row[0]) for row in tx.execute(
            "SELECT DISTINCT model FROM drift_points WHERE clinic = ? AND device = ?"
            " ORDER BY model LIMIT 20", (clinic, device)).fetchall()]
        series = {}
        for model in models:  # a box runs one or two models: not a query per row of a list
            rows = _dicts(tx.execute(
                "SELECT seq, at, psi_confidence, psi_intensity, disagree_rate, reviews, drift"
                " FROM drift_points WHERE clinic = ? AND device = ? AND model = ?"
                " ORDER BY at DESC LIMIT ?", (clinic, device, model, min(limit, MOST))))
            series[model] = rows[::-1]
    return series


def drifting(db: Database) -> list[dict[str, Any]]:
    """The boxes marked as drifting, with their latest signals (at most :data:`MOST`)."""
    with db.transaction(write=False) as tx:
        return _dicts(tx.execute(
            "SELECT b.clinic, b.device, b.model, b.last_seen, b.psi_confidence, b.psi_intensity,"
            " b.disagree_rate, c.name AS clinic_name, c.county AS county FROM box_state b"
            " LEFT JOIN clinics c ON c.clinic = b.clinic WHERE b.drift <> 0"
            " ORDER BY c.county, b.clinic, b.device LIMIT ?", (MOST,)))


def audit_trail(db: Database, page: int) -> Page:
    """The console's audit trail, newest first, 100 a page."""
    page = min(max(1, page), LARGEST // AUDIT_PER_PAGE)
    with db.transaction(write=False) as tx:
        total = int(tx.execute("SELECT COUNT(*) FROM console_audit").fetchone()[0])
        rows = _dicts(tx.execute(
            "SELECT id, at, account, address, action, target, detail FROM console_audit"
            " ORDER BY at DESC, id DESC LIMIT ? OFFSET ?",
            (AUDIT_PER_PAGE, (page - 1) * AUDIT_PER_PAGE)))
    return Page(rows, page, AUDIT_PER_PAGE, total)


#: a box's latest rollout target (the newest rollout it is in), with that rollout's package
#: and state (index ``rollout_targets_box``)
_LATEST_TARGET = (
    "SELECT t.rollout_id, t.clinic, t.device, t.wave, t.offer_seq, t.step, t.reason,"
    " t.updated_at, t.rollback_seq, r.name AS name, r.version AS version, r.state AS state"
    " FROM rollout_targets t JOIN rollouts r ON r.id = t.rollout_id"
    " WHERE t.rollout_id = (SELECT MAX(u.rollout_id) FROM rollout_targets u"
    " WHERE u.clinic = t.clinic AND u.device = t.device)")


def latest_rollout_targets(db: Database, boxes: list[tuple[str, str]]
                           ) -> dict[tuple[str, str], dict[str, Any]]:
    """Each box's latest rollout target row (``central/rollouts.py``) with the rollout's
    package and state, by (clinic, device); a box in no rollout is left out. One query per
    100 boxes (a page of the fleet)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    wanted = list(dict.fromkeys(boxes))[:MOST]
    with db.transaction(write=False) as tx:
        for start in range(0, len(wanted), BOXES_PER_PAGE):
            part = wanted[start:start + BOXES_PER_PAGE]
            pairs = " OR ".join(["(t.clinic = ? AND t.device = ?)"] * len(part))
            for row in _dicts(tx.execute(f"{_LATEST_TARGET} AND ({pairs})",
                                         [v for box in part for v in box])):
                found[(row["clinic"], row["device"])] = row
    return found


#: how long after its install a box's model still "came from a recent rollout" (days)
RECENT_ROLLOUT_DAYS = 30


def drift_proposal(target: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
    """What the console proposes for a drifting box, from its latest rollout target
    (:func:`latest_rollout_targets`): ``hold`` the rollout (it is active and on its way to
    the box, or the box's model came from it), ``rollback`` the box (it was offered the
    package and has not refused it nor been sent back); None when neither applies. A
    person confirms each (``views_rollouts.decide``)."""
    if target is None:
        return None
    step = target["step"]
    on_its_way = step in (rollouts.WAITING, *rollouts.IN_PROGRESS_STEPS) \
        and target["state"] in (rollouts.ACTIVE, rollouts.PAUSED)
    recent = step in rollouts.INSTALLED_STEPS and \
        float(target["updated_at"] or 0) >= now - RECENT_ROLLOUT_DAYS * 86400
    if not (on_its_way or recent):
        return None
    hold = target["state"] == rollouts.ACTIVE
    rollback = target["offer_seq"] is not None and target["rollback_seq"] is None \
        and step in (*rollouts.IN_PROGRESS_STEPS, *rollouts.INSTALLED_STEPS)
    if not (hold or rollback):
        return None
    return {**target, "hold": hold, "rollback": rollback, "on_its_way": on_its_way}


def enrolled_boxes(db: Database) -> tuple[list[dict[str, Any]], int]:
    """The enrolled boxes a rollout may go to (not revoked), by county, clinic and box, with
    their clinic's name and the model they report; at most :data:`MOST`, and how many there
    are in all."""
    with db.transaction(write=False) as tx:
        total = int(tx.execute("SELECT COUNT(*) FROM devices WHERE revoked_at IS NULL"
                               ).fetchone()[0])
        rows = _dicts(tx.execute(
            "SELECT d.clinic, d.device, c.name AS clinic_name, c.county AS county, b.model"
            " FROM devices d LEFT JOIN clinics c ON c.clinic = d.clinic"
            " LEFT JOIN box_state b ON b.clinic = d.clinic AND b.device = d.device"
            " WHERE d.revoked_at IS NULL ORDER BY c.county, d.clinic, d.device LIMIT ?",
            (MOST,)))
    return rows, total
