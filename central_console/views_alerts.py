"""The alerts: the worklist across clinics, the poll for new alerts, an alert's page and review.

New alerts appear without reloading by **polling**, not server-sent events: every 5 s
``static/console.js`` asks ``/api/alerts/latest?after=<id>&<filters>`` and inserts the
rows it gets (rendered here, escaped, as an HTML fragment like the viewer's
``worklist_rows.html``). An open SSE stream would hold one of gunicorn's few threads
per browser for as long as the page is open; a poll holds one for a few milliseconds,
passes every proxy, and needs nothing but the session cookie.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for

from central import labels, reviews
from central_console import queries
from central_console.request_context import client_address, console, current_account, note
from clinibox_common.contracts import downlink
from clinibox_common.i18n import N_, gettext

blueprint = Blueprint("alerts", __name__)
#: seconds between two polls of the worklist
POLL_SECONDS = 5


@blueprint.route("/")
def home():
    """The console opens on the worklist."""
    return redirect(url_for("alerts.worklist"))


@blueprint.route("/alerts")
def worklist():
    """Alerts across clinics, escalated first, then by score and age, filtered, 50 a page."""
    state = console()
    filters = queries.AlertFilters.from_args(request.args)
    db = state.store.database
    page = queries.worklist(db, filters, page=queries.page_number(request.args),
                            escalate_minutes=state.config.alerts.escalate_minutes)
    return render_template("alerts.html", page=page, filters=filters,
                           states=queries.STATE_FILTERS, counties=queries.counties(db),
                           clinics=queries.clinics(db), models=queries.models(db),
                           poll_seconds=POLL_SECONDS)


@blueprint.route("/api/alerts/latest")
def latest():
    """Alerts after ``after`` (an id) that the filters keep: JSON with the rows as HTML."""
    state = console()
    filters = queries.AlertFilters.from_args(request.args)
    try:
        after = int(request.args.get("after", "0"))
    except ValueError:
        abort(400)
    rows, last = queries.alerts_after(state.store.database, filters, after,
                                      escalate_minutes=state.config.alerts.escalate_minutes)
    html = render_template("alert_rows.html", rows=rows) if rows else ""
    arrived = len(rows) + sum(row["more_from_box"] for row in rows)  # a box's, grouped
    return jsonify({"last": last, "count": arrived, "ids": [row["id"] for row in rows],
                    "html": html})


def _has_key(box: dict[str, Any] | None) -> bool:
    """Whether the box can receive verdicts: it has reported its downlink key."""
    return box is not None and bool(box.get("downlink_key"))


#: The page's words for each problem the one rule (``downlink.review_problem``) finds in a
#: review form (``clinibox central review`` says them its own way: ``central.reviews``).
PAGE_WORDS: dict[downlink.ReviewProblem, str] = {
    downlink.ReviewProblem.NO_VERDICT: N_("Choose a verdict."),
    downlink.ReviewProblem.NOTE_TOO_LONG: N_("The note is longer than %(n)s characters."),
    downlink.ReviewProblem.NOTE_NOT_TEXT: N_(
        "The note has characters that cannot be sent: write plain text."),
    downlink.ReviewProblem.MONTHS_MISSING: N_(
        "A follow-up needs a number of months from 1 to %(n)s."),
    downlink.ReviewProblem.MONTHS_NOT_FOLLOW_UP: N_("Months go with a follow-up only."),
    downlink.ReviewProblem.MONTHS_OUT_OF_RANGE: N_(
        "A follow-up needs a number of months from 1 to %(n)s."),
}


def page_words(problem: downlink.ReviewProblem) -> str:
    """A review form's problem in the page's words, in the reader's language."""
    note = problem in (downlink.ReviewProblem.NOTE_TOO_LONG, downlink.ReviewProblem.NOTE_NOT_TEXT)
    return gettext(PAGE_WORDS[problem],
                   n=downlink.MAX_NOTE if note else downlink.MAX_FOLLOW_UP_MONTHS)


def _form_review(form: Any) -> tuple[downlink.ReviewProblem | None, str, str, int | None]:
    """(the problem of a review form or None, verdict, note, months): the form read (the
    months only with a follow-up; not a whole number: 0), then the one rule
    (``downlink.review_problem``)."""
    verdict = form.get("verdict", "")
    text = form.get("note", "").replace("\r\n", "\n").strip()
    months: int | None = None
    if verdict == downlink.HospitalVerdict.FOLLOW_UP and form.get("months", "").strip():
        try:
            months = int(form.get("months", ""))
        except ValueError:
            months = 0
    problem = downlink.review_problem(verdict, text, months)
    return problem, verdict, text, None if problem else months


@blueprint.route("/alerts/<int:alert_id>", methods=["GET", "POST"])
def alert(alert_id: int):
    """What the box sent, the box's health, the review and its delivery; the review form."""
    state = console()
    db = state.store.database
    account = current_account()
    assert account is not None
    minutes = state.config.alerts.escalate_minutes
    found = queries.alert(db, alert_id, escalate_minutes=minutes)
    if found is None:
        abort(404)
    error = None
    form = {"verdict": "", "note": "", "months": ""}
    if request.method == "POST":
        if not account.is_radiologist:
            abort(403)
        problem, verdict, text, months = _form_review(request.form)
        error = None if problem is None else page_words(problem)
        form = {"verdict": verdict, "note": text, "months": request.form.get("months", "")}
        if error is None:
            try:
                state.store.review_alert(alert_id, verdict, text, account.name,
                                         follow_up_months=months, address=client_address())
            except reviews.ReviewError as exc:
                error = str(exc)
            else:
                words = labels.verdict(verdict, months)
                if _has_key(queries.box_state(db, found["clinic"], found["device"])):
                    flash(gettext("Verdict recorded: %(verdict)s. It goes to the box.",
                                  verdict=words))
                else:  # nothing can carry it: the clinic must hear it by phone
                    flash(gettext("Verdict recorded: %(verdict)s. This box cannot receive it: "
                                  "tell the clinic by phone.", verdict=words))
                return redirect(url_for("alerts.alert", alert_id=alert_id))
    elif account.is_radiologist and found["state"] == downlink.AlertState.NEW:
        if state.store.open_alert(alert_id, account.name):
            note("alert_opened", f"alert:{alert_id}")
        found = queries.alert(db, alert_id, escalate_minutes=minutes) or found
    box = queries.box_state(db, found["clinic"], found["device"])
    now = time.time()
    if box is not None:
        queries.mark_health(box, state.config.health, now)
    stale = box is None or box["stale"]
    resend_before = now - state.config.downlink.resend_minutes * 60
    sent = queries.downlinks(db, found["clinic"], found["device"], alert_id)
    for item in sent:
        item["delivery"] = queries.delivery(item, box, stale=stale, resend_before=resend_before)
    # a colleague opened it and has not given a verdict yet: say so before a second review
    colleague = found["opened_by"] if (found["state"] == downlink.AlertState.UNDER_REVIEW
                                       and found["opened_by"]
                                       and found["opened_by"] != account.name) else None
    answer = render_template("alert.html", alert=found, box=box, downlinks=sent,
                             verdicts=downlink.VERDICTS, error=error, form=form,
                             max_note=downlink.MAX_NOTE, max_months=downlink.MAX_FOLLOW_UP_MONTHS,
                             box_stale=stale, colleague=colleague, box_has_key=_has_key(box),
                             changing=bool(error) and bool(found["verdict"]))
    return answer, (400 if error else 200)
