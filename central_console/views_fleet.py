"""The hospital's IT pages: the fleet, a box's page with its drift charts, the drifting boxes,
the console's audit trail and its users (read only: ``clinibox central user``).

The fleet, drift, audit and users pages are for ``admin`` accounts; a radiologist is
answered 403 (a radiologist sees a box's health on each alert's page).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, abort, render_template, request
from markupsafe import Markup

from central_console import box_story, charts, queries
from central_console.request_context import admin_only, console
from clinibox_common.i18n import formats, gettext

blueprint = Blueprint("fleet", __name__)
F = TypeVar("F", bound=Callable[..., Any])


def moment(epoch: float | None) -> str:
    """A time for a chart's label or a list, "–" where it is none or not a date
    (a box's clock may claim the year 36812)."""
    try:
        return formats.moment(epoch)
    except (ValueError, OverflowError, OSError):
        return "–"


@blueprint.route("/fleet")
@admin_only
def fleet():
    """Every box, stalest first, 100 a page, filtered by county, clinic and health."""
    state = console()
    db = state.store.database
    county = request.args.get("county", "").strip()[:100]
    clinic = request.args.get("clinic", "").strip()[:100]
    health = request.args.get("health", "all")
    if health not in queries.HEALTH_FILTERS:
        health = "all"
    page = queries.fleet(db, county=county, clinic=clinic, health=health,
                         page=queries.page_number(request.args), warn=state.config.health,
                         flood_messages=state.config.receiver.flood_messages)
    steps = queries.latest_rollout_targets(db, [(b["clinic"], b["device"]) for b in page.rows])
    return render_template("fleet.html", page=page, county=county, clinic=clinic,
                           health=health, healths=queries.HEALTH_FILTERS, rollout_steps=steps,
                           counties=queries.counties(db), clinics=queries.clinics(db))


def drift_charts(series: dict[str, list[dict[str, Any]]], psi_threshold: float,
                 disagree_threshold: float) -> list[tuple[str, list[Markup]]]:
    """Per model, three SVG charts: PSI of confidence, PSI of intensity, disagreement rate;
    a point is marked where its own value is over its own chart's threshold."""
    shown = []
    for model, points in series.items():
        first = moment(points[0]["at"]) if points else ""
        last = moment(points[-1]["at"]) if points else ""
        drawn = []
        for column, title, threshold, number in (
                ("psi_confidence", gettext("PSI of the model's confidence"), psi_threshold,
                 None),
                ("psi_intensity", gettext("PSI of the image intensity"), psi_threshold, None),
                ("disagree_rate", gettext("Clinicians' disagreement rate"), disagree_threshold,
                 formats.percent)):  # in percent, as the drift page shows it
            svg = charts.line_chart(
                title, [(p["at"], p[column], p[column] is not None and p[column] > threshold)
                        for p in points],
                threshold=threshold, threshold_label=gettext("threshold"),
                first_label=first, last_label=last, empty_label=gettext("No figures yet."),
                number=number)
            drawn.append(Markup(svg))  # every text in it is escaped by charts
        shown.append((model, drawn))
    return shown


@blueprint.route("/fleet/<clinic>/<device>")
@admin_only
def box(clinic: str, device: str):
    """One box: its latest state, recent statuses and events (each run once:
    :mod:`central_console.box_story`) and alerts, and its drift charts."""
    state = console()
    db = state.store.database
    found = queries.box_state(db, clinic, device)
    if found is None:
        abort(404)
    health = state.config.health
    now = time.time()
    queries.mark_health(found, health, now)
    target = queries.latest_rollout_targets(db, [(clinic, device)]).get((clinic, device))
    events = queries.box_messages(db, clinic, device, "event", limit=50)
    return render_template(
        "box.html", box=found, moment=moment, rollout_target=target,
        proposal=queries.drift_proposal(target, now) if found["drift"] else None,
        statuses=box_story.statuses(queries.box_messages(db, clinic, device, "status",
                                                         limit=50), events),
        events=box_story.events(events),
        alerts=queries.box_alerts(db, clinic, device),
        charts=drift_charts(queries.drift_series(db, clinic, device), health.drift_psi,
                            health.disagree_warn))


@blueprint.route("/drift")
@admin_only
def drift():
    """The boxes marked as drifting, with links to their pages and their thresholds, and
    what the console proposes where a rollout brought or is bringing a box's model."""
    state = console()
    db = state.store.database
    boxes = queries.drifting(db)
    targets = queries.latest_rollout_targets(db, [(b["clinic"], b["device"]) for b in boxes])
    now = time.time()
    proposals = {key: found for key, target in targets.items()
                 if (found := queries.drift_proposal(target, now)) is not None}
    return render_template("drift.html", boxes=boxes, proposals=proposals,
                           psi_threshold=state.config.health.drift_psi,
                           disagree_threshold=state.config.health.disagree_warn)


@blueprint.route("/audit")
@admin_only
def audit():
    """Who logged in and who reviewed what, newest first, 100 a page."""
    return render_template("audit.html", page=queries.audit_trail(console().store.database,
                                                                queries.page_number(request.args)))


@blueprint.route("/users")
@admin_only
def users():
    """The console's accounts (changed with ``clinibox central user``)."""
    return render_template("users.html", users=console().accounts().all())
