"""Technicians' pages: the box's health, its model package, and the quarantine.

Device status: queue depth, today's work, quarantine reasons, disk, the model
package and its validation metrics, the link to the hospital and the outbox, whether
the hospital's verdicts can arrive (downlink) and the last one received,
the DICOM outbox per PACS destination (backlog, last error), the clinic's worklist (where
it stands, when it last answered), last errors, the
audit trail's size (an alarm past ``[audit] max_mb``). The
quarantine lists every object held back with its reason;
a technician may process one again or delete it (both recorded as events and in
the audit trail, with the technician's address).
"""

from __future__ import annotations

import time
from importlib import metadata
from typing import Any

import segno
from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, url_for
from markupsafe import Markup

from clinibox_common.i18n import gettext
from firmware_app.storage import audit_size, event_codes, hospital_reviews, quarantine
from firmware_app.storage.enrolment import enrolment_code
from firmware_app.storage.status import box_status
from firmware_app.words import event_words, records_words, software_words
from web import live_worklist
from web.audit_trail import client_address
from web.i18n import choose_language
from web.security import current_account, database, technician_only

blueprint = Blueprint("device", __name__)

#: The appliance notes it is alive every 10 s; after this long without a note it is shown down.
SERVICE_SILENT_SECONDS = 60.0


def _viewer():
    return current_app.config["CLINIBOX"]


def status_figures() -> dict[str, Any]:
    """Everything the device page shows: the box's status (as ``clinibox status``) and more."""
    viewer = _viewer()
    config = viewer.config
    now = time.time()
    figures = box_status(database(), config.state_dir, now,
                         pacs_destinations=[d.name for d in config.pacs.destinations],
                         audit_max_mb=config.audit.max_mb,
                         records_receivers=[r.name for r in config.records.receivers])
    receivers = {r.name: r for r in config.records.receivers}
    for receiver in figures["records"]:  # the address (never a password), the error in words
        found = receivers.get(receiver["name"])
        receiver["peer"] = (f"{records_words.protocol(found.protocol)} {found.peer()}"
                            if found else "")
        receiver["held_said"] = records_words.receiver_said(receiver["held_error"] or "")
        receiver["said"] = records_words.error(receiver["last_error_code"],
                                               receiver["last_error"] or "")
        receiver["said_in_english"] = event_words.in_english()
    figures["disk"]["floor_mb"] = config.storage.min_free_mb
    seen = figures["appliance_seen_at"]
    figures.update(
        queue_depth=figures["queued"],
        service_running=seen is not None and now - seen < SERVICE_SILENT_SECONDS,
        broker=f"{config.mqtt.host}:{config.mqtt.port}" if config.mqtt.host else "",
        pacs_peers={d.name: d.peer() + (" (TLS)" if d.tls else "")
                    for d in config.pacs.destinations},
        pacs_to_fix=[d["name"] for d in figures["pacs"]
                     if d["waiting"] and event_codes.pacs_needs_a_person(d["last_error_code"])],
        records_to_fix=[r["name"] for r in figures["records"] if r["waiting"]
                        and event_codes.records_need_a_person(r["last_error_code"])],
        clinic=config.telemetry.clinic, device=config.telemetry.device,
        enrolment_code=_enrolment_code(config),
        software=_software(),
        package=viewer.package_facts(), now=now,
        downlink=_downlink_figures(bool(config.telemetry.hospital_signing_key)),
        worklist=live_worklist.device_view(
            database(), config.worklist.enabled,
            f"{config.worklist.ae_title}@{config.worklist.host}:{config.worklist.port}"),
    )
    return figures


def _software() -> dict[str, Any]:
    """The version the viewer runs (the box's: one tree runs both) and how the last update of
    the box's software ended, in words."""
    last = software_words.read_outcome()
    return {"version": metadata.version("clinibox"), "last": last,
            "sentence": software_words.outcome_sentence(last) if last else "",
            "when": software_words.outcome_time(last) if last else ""}


def _enrolment_code(config: Any) -> str | None:
    """The box's enrolment code, None before it is provisioned (or when its key cannot be read:
    the page then says the box waits for its bundle, as its screen does)."""
    try:
        return enrolment_code(config)
    except (OSError, ValueError):
        return None


def _qr_svg(code: str) -> Markup:
    """The enrolment code's QR code as inline SVG (segno writes only modules and a title)."""
    return Markup(segno.make(code, error="m").svg_inline(scale=3, title=code))


def _downlink_figures(configured: bool) -> dict[str, Any]:
    """The hospital's downlink: whether verdicts can arrive, the watermark, the last one."""
    conn = database()
    last = hospital_reviews.last_received(conn)
    return {"configured": configured, "seq": hospital_reviews.watermark(conn),
            "unresolved": hospital_reviews.unresolved(conn),
            "last": None if last is None else {
                "seq": last.seq, "verdict": last.verdict,
                "follow_up_months": last.follow_up_months, "reviewed_at": last.reviewed_at,
                "received_at": last.received_at, "study_known": last.study_key is not None}}


@blueprint.route("/device")
@technician_only
def device():
    """The box's health at a glance."""
    figures = status_figures()
    alarm = audit_size.alarm_text(figures["audit"]) if figures["audit"]["over_limit"] else ""
    # a refusal's and the log's English lines only on an English page (a Chinese one says
    # them from their codes)
    return render_template("device.html", s=figures, audit_alarm=alarm, qr_svg=_qr_svg,
                           audit_commands=audit_size.COMMANDS, event_words=event_words,
                           english=choose_language().startswith("en"))


@blueprint.route("/api/status")
@technician_only
def device_json():
    """The device page's figures as JSON."""
    return jsonify(status_figures())


@blueprint.route("/device/quarantine")
@technician_only
def held():
    """Every object held back, with its reason."""
    return render_template("quarantine.html", objects=quarantine.held_objects(database()))


def _act(instance_id: int, action, done: str) -> Any:
    account = current_account()
    assert account is not None
    try:
        action(database(), _viewer().spool, instance_id, account.name, client_address())
    except quarantine.QuarantineError as exc:
        abort(404, description=str(exc))
    flash(done)
    return redirect(url_for("device.held"))


@blueprint.route("/device/quarantine/<int:instance_id>/process", methods=["POST"])
@technician_only
def process_again(instance_id: int):
    """Queue a held object again (after the cause was fixed, e.g. a model update)."""
    return _act(instance_id, quarantine.process_again,
                gettext("Object %(id)s queued again.", id=instance_id))


@blueprint.route("/device/quarantine/<int:instance_id>/delete", methods=["POST"])
@technician_only
def delete(instance_id: int):
    """Delete a held object for good (the sender may send it again)."""
    return _act(instance_id, quarantine.delete, gettext("Object %(id)s deleted.", id=instance_id))
