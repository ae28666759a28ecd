"""Model rollouts in the console: the list, a rollout's boxes by wave, starting one from a
package the hospital placed in ``[rollouts] packages_dir``, holding, resuming and rolling
back; and the drift page's proposals (hold the rollout, roll the box back), which a person
confirms.

Everyone logged in sees the rollouts; only ``admin`` accounts change them (403 otherwise).
Every change is a POST with the CSRF token (``webcore.security``), and the ones that reach
boxes — starting, rolling back, a drift decision — are asked twice: the first POST answers
a confirmation page, the second (``confirmed=1``) acts. The rollouts themselves are
``central/rollouts.py``'s, which writes each change to the console's audit trail under the
account's name; a decision taken from a drift proposal is a row of its own
(``drift_decision``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from central import labels, reviews, rollouts
from central_console import queries
from central_console.request_context import admin_only, client_address, console, current_account
from clinibox_common.contracts import signing
from clinibox_common.i18n import gettext, ngettext

blueprint = Blueprint("rollouts", __name__)
#: the most package archives the start form lists
MOST_PACKAGES = 200
#: where a drift decision sends the browser back to
BACK = ("drift", "box")


def _account_name() -> str:
    account = current_account()
    assert account is not None
    return account.name


def packages() -> list[str]:
    """The package archives (``*.tar.gz``) and releases of the box's software
    (``*.release``) in ``[rollouts] packages_dir``, by name."""
    folder = console().config.rollouts.packages_dir
    if not folder or not Path(folder).is_dir():
        return []
    return sorted(p.name for pattern in ("*.tar.gz", "*.release")
                  for p in Path(folder).glob(pattern) if p.is_file())[:MOST_PACKAGES]


def _clinic_names() -> dict[str, tuple[str, str]]:
    return {clinic: (name, county)
            for clinic, name, county in queries.clinics(console().store.database)}


def _groups() -> dict[str, list[tuple[str, str]]]:
    """The start form's groups, (value, name) each: the counties and the clinics."""
    db = console().store.database
    return {"counties": [(county, county) for county in queries.counties(db)],
            "clinics": [(clinic, name) for clinic, name, _ in queries.clinics(db)]}


def _listing(error: str | None = None, form: dict[str, Any] | None = None,
             status: int = 200) -> tuple[str, int]:
    state = console()
    db = state.store.database
    with db.transaction(write=False) as tx:
        rows = rollouts.rollouts(tx)
    account = current_account()
    boxes, total = queries.enrolled_boxes(db) if account and account.is_admin else ([], 0)
    settings = state.config.rollouts
    form = form or {"package": "", "boxes": [], "group": "", "canary": settings.canary,
                    "wave_size": settings.wave_size, "pause_on_failure": False}
    return render_template(
        "rollouts.html", rollouts=rows, packages=packages(), boxes=boxes, total_boxes=total,
        steps=queries.latest_rollout_targets(db, [(b["clinic"], b["device"]) for b in boxes]),
        groups=_groups() if boxes else {}, packages_dir=settings.packages_dir, error=error,
        form=form), status


@blueprint.route("/rollouts")
def listing():
    """The latest rollouts, each with its boxes counted by step; for admins, the start form."""
    return _listing()


def _number(text: Any) -> int | None:
    """A whole number typed in a field, or None."""
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _start_form() -> tuple[str | None, dict[str, Any], list[tuple[str, str]]]:
    """(why the start form is refused or None, the form as sent, the boxes it names)."""
    sent = request.form
    form: dict[str, Any] = {
        "package": sent.get("package", ""), "boxes": sent.getlist("box")[:queries.MOST_CHOICES],
        "group": sent.get("group", "").strip()[:100], "canary": sent.get("canary", ""),
        "wave_size": sent.get("wave_size", ""), "pause_on_failure": bool(
            sent.get("pause_on_failure"))}
    if form["package"] not in packages():
        return gettext("Choose a package archive from the list."), form, []
    canary, wave_size = _number(form["canary"]), _number(form["wave_size"])
    if rollouts.waves_problem(canary, wave_size) is not None:  # the one rule, in the page's words
        return gettext("The canary count is a number from 0 and the wave size a number from "
                       "1."), form, []
    form["canary"], form["wave_size"] = canary, wave_size
    boxes = []
    for text in form["boxes"]:
        clinic, slash, device = text.partition("/")
        if slash and clinic and device:
            boxes.append((clinic, device))
    if form["group"]:
        with console().store.database.transaction(write=False) as tx:
            found = rollouts.group_boxes(tx, form["group"])
        if not found:
            return gettext("No enrolled box in %(group)s.", group=form["group"]), form, []
        boxes += found
    boxes = list(dict.fromkeys(boxes))
    if not boxes:
        return gettext("Choose at least one box or a group."), form, []
    return None, form, boxes


def _package_problem(exc: rollouts.RolloutError) -> str:
    """Why a package cannot be offered, in words (the boxes would refuse it)."""
    if isinstance(exc.__cause__, signing.SignatureError):
        return gettext("This package is not signed by a key the hospital trusts ([rollouts] "
                       "trusted_keys): the boxes would refuse it. Sign it with the hospital's "
                       "model-signing key.")
    return gettext("The boxes would refuse this package: %(reason)s", reason=str(exc))


@blueprint.route("/rollouts/new", methods=["POST"])
@admin_only
def start():
    """Check the chosen package and boxes and ask to confirm; once confirmed, start."""
    state = console()
    error, form, boxes = _start_form()
    if error:
        return _listing(error, form, 400)
    path = Path(state.config.rollouts.packages_dir) / form["package"]
    try:
        package = rollouts.check_package(path, [Path(k) for k in
                                                state.config.rollouts.trusted_keys])
    except rollouts.RolloutError as exc:
        return _listing(_package_problem(exc), form, 400)
    archive = package.archive
    if request.form.get("confirmed") != "1":
        return render_template("rollout_confirm.html", form=form, boxes=boxes, package=package,
                               clinics=_clinic_names(), summary=_summary(archive, boxes, form))
    if request.form.get("archive_sha256") != archive.sha256:
        return _listing(gettext("The package archive changed after you chose it: choose it "
                                "again."), form, 400)
    try:
        with state.store.database.transaction(write=True) as tx:
            rollout_id = rollouts.create(
                tx, package, boxes, canary=form["canary"], wave_size=form["wave_size"],
                pause_on_failure=form["pause_on_failure"],
                chunk_kib=state.config.rollouts.chunk_kib, by=_account_name())
    except rollouts.RolloutError as exc:
        return _listing(gettext("The rollout was not started: %(reason)s", reason=str(exc)),
                        form, 400)
    flash(gettext("Rollout %(id)s started: %(package)s.", id=rollout_id,
                  package=f"{archive.name}@{archive.version}"))
    return redirect(url_for("rollouts.detail", rollout_id=rollout_id))


def _summary(archive: Any, boxes: list[tuple[str, str]], form: dict[str, Any]) -> str:
    package = f"{archive.name}@{archive.version}"
    n = len(boxes)
    if form["canary"]:
        return ngettext("You are about to offer %(package)s to %(num)d box, %(canary)s "
                        "canary first.",
                        "You are about to offer %(package)s to %(num)d boxes, %(canary)s "
                        "canary first.", n, package=package, canary=min(form["canary"], n))
    return ngettext("You are about to offer %(package)s to %(num)d box, without canaries, "
                    "%(wave)s at a time.",
                    "You are about to offer %(package)s to %(num)d boxes, without canaries, "
                    "%(wave)s at a time.", n, package=package, wave=form["wave_size"])


def _rollout_or_404(rollout_id: int) -> dict[str, Any]:
    if not 0 < rollout_id <= queries.LARGEST:
        abort(404)
    with console().store.database.transaction(write=False) as tx:
        row = rollouts.rollout(tx, rollout_id)
        if row is None:
            abort(404)
        row["boxes"] = rollouts.targets(tx, rollout_id)
        for target in row["boxes"]:
            target["download"] = (download_progress(tx, rollout_id, target["clinic"],
                                                    target["device"])
                                  if target["step"] == "downloading" else None)
    return row


#: the latest event messages of a box looked through for its download's progress
PROGRESS_LOOKBACK = 40


def download_progress(tx: Any, rollout_id: int, clinic: str, device: str
                      ) -> dict[str, Any] | None:
    """How far a box's download of the rollout's package had come when it last said so (its
    ``downloading`` events carry ``received_bytes`` and ``total_bytes`` at each tenth): bytes,
    total, percent, when it was received here, and the rate and minutes left from its last two
    reports (None while there is one); None when the box has said nothing yet."""
    rows = tx.execute("SELECT payload, received_at FROM messages WHERE clinic = ? AND"
                      " device = ? AND kind = 'event' ORDER BY seq DESC LIMIT ?",
                      (clinic, device, PROGRESS_LOOKBACK)).fetchall()
    reports = []
    for payload, received_at in rows:
        body = json.loads(payload)
        if body.get("rollout") == rollout_id and "received_bytes" in body:
            reports.append((body, float(received_at)))
        if len(reports) == 2:
            break
    if not reports:
        return None
    newest, at = reports[0]
    received, total = int(newest["received_bytes"]), int(newest["total_bytes"])
    progress: dict[str, Any] = {"received_bytes": received, "total_bytes": total,
                                "percent": round(100 * received / total) if total else 0,
                                "at": at, "rate_bps": None, "minutes_left": None}
    if len(reports) == 2:
        older = reports[1][0]
        seconds = float(newest["created_at"]) - float(older["created_at"])  # the box's clock
        gained = received - int(older["received_bytes"])
        if seconds > 0 and gained > 0:
            progress["rate_bps"] = gained / seconds
            progress["minutes_left"] = max(1, math.ceil((total - received) / gained * seconds
                                                        / 60))
    return progress


@blueprint.route("/rollouts/<int:rollout_id>")
def detail(rollout_id: int):
    """One rollout: its package and state, and its boxes by wave with their steps."""
    row = _rollout_or_404(rollout_id)
    waves: dict[int, list[dict[str, Any]]] = {}
    for target in row["boxes"]:
        target["can_roll_back"] = rollouts.can_roll_back(target)
        waves.setdefault(int(target["wave"]), []).append(target)
    return render_template("rollout.html", rollout=row, waves=sorted(waves.items()),
                           clinics=_clinic_names(),
                           any_to_roll_back=any(t["can_roll_back"] for t in row["boxes"]))


def _change(rollout_id: int, action: str) -> Response:
    """Hold or resume a rollout (POST, admin)."""
    _rollout_or_404(rollout_id)
    offered = 0
    try:
        with console().store.database.transaction(write=True) as tx:
            if action == "hold":
                rollouts.pause(tx, rollout_id, _account_name())
            else:
                offered = rollouts.resume(tx, rollout_id, _account_name())
    except rollouts.RolloutError:
        flash(gettext("Nothing changed: the rollout is no longer in that state."))
    else:
        flash(gettext("Rollout %(id)s is on hold: no further wave is offered.", id=rollout_id)
              if action == "hold" else
              gettext("Rollout %(id)s resumed: offered now to %(n)s boxes.", id=rollout_id,
                      n=offered))
    return redirect(url_for("rollouts.detail", rollout_id=rollout_id))


@blueprint.route("/rollouts/<int:rollout_id>/hold", methods=["POST"])
@admin_only
def hold(rollout_id: int):
    """Hold a rollout: no further wave is offered."""
    return _change(rollout_id, "hold")


@blueprint.route("/rollouts/<int:rollout_id>/resume", methods=["POST"])
@admin_only
def resume(rollout_id: int):
    """Go on with a rollout on hold."""
    return _change(rollout_id, "resume")


def _confirm(question: str, action: str, fields: dict[str, str], cancel: str,
             button: str) -> str:
    return render_template("confirm.html", question=question, action=action,
                           fields=fields, cancel=cancel, button=button)


@blueprint.route("/rollouts/<int:rollout_id>/rollback", methods=["POST"])
@admin_only
def rollback(rollout_id: int):
    """Roll back a whole rollout, or one of its boxes (``clinic``, ``device``), once
    confirmed."""
    row = _rollout_or_404(rollout_id)
    clinic, device = request.form.get("clinic", ""), request.form.get("device", "")
    back = url_for("rollouts.detail", rollout_id=rollout_id)
    package = f"{row['name']}@{row['version']}"
    if clinic or device:
        target = next((t for t in row["boxes"] if (t["clinic"], t["device"]) == (clinic,
                                                                                device)), None)
        if target is None:
            abort(404)
        question = gettext("Roll box %(box)s back from %(package)s to the model it ran "
                           "before?", box=f"{clinic}/{device}", package=package)
    else:
        question = gettext("Roll back rollout %(id)s (%(package)s)? Every box that installed "
                           "it goes back to the model it ran before, and no further box is "
                           "offered it.", id=rollout_id, package=package)
    if request.form.get("confirmed") != "1":
        return _confirm(question, url_for("rollouts.rollback", rollout_id=rollout_id),
                        {"clinic": clinic, "device": device} if clinic else {}, back,
                        gettext("Roll back"))
    try:
        with console().store.database.transaction(write=True) as tx:
            if clinic:
                _same_rollout(tx, rollout_id, clinic, device)
                sent = rollouts.rollback(tx, _account_name(), boxes=[(clinic, device)])
            else:
                sent = rollouts.rollback(tx, _account_name(), rollout_id=rollout_id)
    except rollouts.RolloutError as exc:
        flash(gettext("Nothing was sent: %(reason)s", reason=str(exc)))
    else:
        flash(ngettext("Rollback sent to %(num)d box.", "Rollback sent to %(num)d boxes.",
                       sent))
    return redirect(back)


def _same_rollout(tx: Any, rollout_id: int, clinic: str, device: str) -> None:
    """RolloutError unless a box's rollback would undo this rollout (``rollouts.rollback``
    undoes the box's latest rollout it has not refused)."""
    mine = rollouts.undoable(tx, clinic, device)
    if mine is not None and int(mine["rollout_id"]) != rollout_id:
        raise rollouts.RolloutError(gettext(
            "the box is in a later rollout (%(id)s): roll it back from that rollout's page",
            id=mine["rollout_id"]))


@blueprint.route("/drift/<clinic>/<device>/decide", methods=["POST"])
@admin_only
def decide(clinic: str, device: str):
    """A drift proposal taken up: hold the rollout or roll the box back, once confirmed;
    the decision is a row of the audit trail."""
    choice = request.form.get("action", "")
    back_to = request.form.get("back", "drift")
    back = url_for("fleet.box", clinic=clinic, device=device) if back_to == "box" \
        else url_for("fleet.drift")
    db = console().store.database
    target = queries.latest_rollout_targets(db, [(clinic, device)]).get((clinic, device))
    proposal = queries.drift_proposal(target, time.time())
    offered = proposal is not None and str(proposal["rollout_id"]) == request.form.get(
        "rollout", "") and ((choice == "hold_rollout" and proposal["hold"])
                            or (choice == "rollback_box" and proposal["rollback"]))
    if not offered or proposal is None:
        flash(gettext("Nothing changed: that proposal no longer applies."))
        return redirect(back)
    rollout_id = int(proposal["rollout_id"])
    package = f"{proposal['name']}@{proposal['version']}"
    if request.form.get("confirmed") != "1":
        question = (gettext("Box %(box)s is drifting. Hold rollout %(id)s (%(package)s), so "
                            "that no further box is offered it?", box=f"{clinic}/{device}",
                            id=rollout_id, package=package)
                    if choice == "hold_rollout" else
                    gettext("Box %(box)s is drifting. Roll it back from %(package)s to the "
                            "model it ran before?", box=f"{clinic}/{device}", package=package))
        return _confirm(question, url_for("rollouts.decide", clinic=clinic, device=device),
                        {"action": choice, "rollout": str(rollout_id),
                         "back": back_to if back_to in BACK else "drift"}, back,
                        labels.drift_action(choice))
    by = _account_name()
    try:
        with db.transaction(write=True) as tx:
            if choice == "hold_rollout":
                rollouts.pause(tx, rollout_id, by)
            else:
                rollouts.rollback(tx, by, boxes=[(clinic, device)])
            reviews.audit(tx, by, client_address(), "drift_decision", f"box:{clinic}/{device}",
                          f"{choice}:{rollout_id}")
    except rollouts.RolloutError as exc:
        flash(gettext("Nothing was sent: %(reason)s", reason=str(exc)))
    else:
        flash(gettext("Done: %(decision)s.", decision=labels.rollout_detail(
            "drift_decision", f"{choice}:{rollout_id}")))
    return redirect(back)
