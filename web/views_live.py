"""Bedside live mode in the viewer: the sources, a source's live page, its frames, its sessions.

    /live                         the configured sources and where each stands
    /live/<source>                the page: the newest frame with its boxes, the hint, the
                                  source's state, freeze / step / measure, the session panel
    /live/<source>/next?after=N   long poll: the newest frame once its seq passes N (JPEG, its
                                  overlay in ``X-Live-Frame``), 204 after LONG_POLL_SECONDS
    /live/<source>/frame/<seq>    one frame of the ring (stepping back while frozen)
    /live/<source>/state          JSON for the page's state line and session panel (each second)
    POST /live/<source>/session, /session/end, /keep   a sonographer's session (clinicians)

The frames and the state are files the source's live process writes on a tmpfs
(``storage/live_frames.py``); the viewer only reads them. Sessions and requests are rows of
the box database (``storage/live_sessions.py``): the live process keeps what is asked as DICOM
through the spool. Opening the page (it may name a patient), starting and ending a session
and asking to keep something are audit rows.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
import unicodedata
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from clinibox_common.contracts.statuses import LiveHint, LiveRequest, LiveState
from clinibox_common.i18n import N_, formats, gettext, ngettext
from clinibox_common.redaction import redact_detail
from firmware_app.settings.live import LiveSource
from firmware_app.storage import live_frames, live_sessions, live_studies, studies
from firmware_app.words import labels, wording
from web import audit_trail, live_worklist
from web.security import current_account, database

blueprint = Blueprint("live", __name__)

#: the longest a ``next`` request waits for a newer frame (seconds), and how often it looks
LONG_POLL_SECONDS = 2.0
POLL_INTERVAL = 0.01
#: a running source whose state file is older than this is shown stalled (its process is gone)
STALE_SECONDS = 10.0
LIVE_VIEW_COALESCE = 300.0
#: a frame served later than this after it arrived is not said late: its arrival is not on
#: this boot's clock (a state file left from before a reboot)
MAX_DELAY_SECONDS = 600.0
#: the longest patient name and ID a session takes (DICOM PN and LO: 64 characters)
FIELD_LIMIT = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
#: Unicode categories a patient field never keeps: format characters (bidi overrides and
#: zero-width marks: what is shown would differ from what is stored), line and paragraph
#: separators, surrogates
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
#: a frame number as the page sends it (ASCII digits: ``str.isdigit`` takes "²")
_SEQ = re.compile(r"^[0-9]{1,15}$")
#: web threads a long poll never takes: other pages are served while live pages wait
POLL_RESERVED_THREADS = 2
#: what the keeper's error on the state file means for the nurse
KEEP_ERRORS = {
    "SpoolFull": N_("Not kept: the box's storage is full. Tell the technician."),
    "busy": N_("Not kept: the box is still storing what was asked before. Ask again in a "
               "moment."),
    "gone": N_("Not kept: that frame is no longer held. Keep a frame shown in the last "
               "seconds."),
}
KEEP_ERROR_OTHER = N_("Not kept: the box could not store it. Tell the technician.")
#: a session ended this recently is shown on its source's page, with where its study went
LAST_SESSION_SECONDS = 12 * 3600.0
#: what a source's picture shows, in words (``[[live.sources]] modality``)
MODALITY_WORDS = {"US": N_("Ultrasound"), "ES": N_("Endoscopy")}


def _config():
    return current_app.config["CLINIBOX"].config


def _root() -> Path:
    return live_frames.live_root(_config().state_dir)


def _source(name: str) -> LiveSource:
    """The configured source called ``name`` (404 otherwise: no path reaches a file)."""
    found = _config().live.source(name)
    if found is None:
        abort(404)
    return found


@blueprint.app_context_processor
def live_nav() -> dict[str, Any]:
    """Whether the header shows "Live" (only when a source is configured), and the sources a
    study page offers a session on for its patient: (name, what the tablet calls it)."""
    sources = _config().live.sources
    return {"live_sources": bool(sources),
            "live_choices": [(s.name, s.label or s.name) for s in sources]}


def effective_state(state: dict[str, Any] | None, now: float | None = None) -> str:
    """The state to show: the live process's word, ``stalled`` when it said running but wrote
    nothing for STALE_SECONDS, ``starting`` while there is no state yet."""
    if state is None:
        return LiveState.STARTING.value
    word = str(state.get("state") or LiveState.STARTING.value)
    wall = state.get("wall")
    if (word == LiveState.RUNNING and isinstance(wall, (int, float))
            and (time.time() if now is None else now) - wall > STALE_SECONDS):
        return LiveState.STALLED.value
    return word


def _kind(source: LiveSource) -> str:
    """What the source's picture shows, in words."""
    word = MODALITY_WORDS.get(source.modality)
    return gettext(word) if word else source.modality


@blueprint.route("/live")
def index():
    """The configured live sources, each with where it stands."""
    root = _root()
    rows = [{"source": source, "kind": _kind(source),
             "state": labels.live_state(effective_state(live_frames.read_state(root,
                                                                                 source.name)))}
            for source in _config().live.sources]
    return render_template("live_index.html", rows=rows)


def _session_view(session: live_sessions.LiveSession | None) -> dict[str, Any] | None:
    """An open session as the page and the state JSON show it: its patient, what it kept and
    the study page once the worker analysed what it kept."""
    if session is None:
        return None
    conn = database()
    kept = live_sessions.kept_by(conn, session.id)
    study_id = studies.study_id(conn, session.study_uid) if kept else None
    return {
        "id": session.id,
        "patient_name": session.patient_name, "patient_id": session.patient_id,
        "accession_number": session.accession_number,
        "birth_date": wording.dicom_date(session.birth_date), "sex": labels.sex(session.sex)
        if session.sex else "",
        "started": formats.moment(session.started_at),
        "kept": [_kept_line(item) for item in kept],
        "study_url": url_for("clinic.study", study_id=study_id) if study_id else None,
    }


def _last_session(source: str) -> dict[str, Any] | None:
    """The source's last session when none is open and it ended in the last
    LAST_SESSION_SECONDS: its patient, what it kept, when it ended and its study page (the
    page says where the study went after "end session")."""
    recent = live_sessions.recent(database(), source, limit=1)
    if not recent or recent[0].ended_at is None \
            or time.time() - recent[0].ended_at > LAST_SESSION_SECONDS:
        return None
    view = _session_view(recent[0])
    assert view is not None
    return {**view, "ended": formats.moment_in_list(recent[0].ended_at)}


def _kept_line(item: live_sessions.Kept) -> str:
    """One kept object in words: "key frame, 10:32:05" or "clip of 75 frames, 10:32:40"."""
    when = formats.moment(item.kept_at, with_seconds=True)
    if item.kind == "clip":
        return ngettext("clip of %(num)d frame, %(when)s", "clip of %(num)d frames, %(when)s",
                        item.frames, when=when)
    return gettext("%(what)s, %(when)s", what=labels.live_kept(item.kind), when=when)


@blueprint.route("/live/<source>")
def page(source: str):
    """A source's live page (404 for a source not configured); ``?study=<study key>``
    prefills the session form with that worklist study's patient."""
    found = _source(source)
    prefill = {"patient_name": "", "patient_id": "", "birth_date": "", "sex": "", "study": ""}
    key = request.args.get("study", "")[:128]
    if key:
        patient = live_studies.patient_of_study(database(), key)
        if patient is not None:
            prefill = {"patient_name": patient.patient_name, "patient_id": patient.patient_id,
                       "birth_date": patient.birth_date, "sex": patient.sex,
                       "study": patient.study_key}
    return _page(found, prefill)


def _page(found: LiveSource, prefill: dict[str, str], status: int = 200) -> tuple[str, int]:
    """The live page of ``found`` (its opening recorded), the form filled with ``prefill``."""
    session = live_sessions.open_session(database(), found.name)
    audit_trail.note("live_view", f"live:{found.name}",
                     f"session {session.id}" if session else "",
                     coalesce_seconds=LIVE_VIEW_COALESCE)
    state = live_frames.read_state(_root(), found.name)
    live = _config().live
    return render_template(
        "live.html", source=found, session=_session_view(session), prefill=prefill,
        last=None if session else _last_session(found.name),
        sexes=labels.SEXES, state_word=effective_state(state),
        hint_word=(state or {}).get("hint") or LiveHint.NONE.value,
        states=labels.LIVE_STATE, hints=labels.LIVE_HINT,
        ring_seconds=live.ring_seconds, clip_seconds=live.clip_seconds, kind=_kind(found),
        calibrated=found.mm_per_pixel > 0, may_act=_may_act(),
        worklist=None if session else live_worklist.view(database())), status


def _may_act() -> bool:
    """Whether this account may start, end and use sessions: clinic staff (clinicians)."""
    account = current_account()
    return account is not None and account.is_clinician


def served_delay_ms(entry: dict[str, Any], now: float | None = None) -> int | None:
    """How late a frame is as it is served (ms): from its arrival at the box (the live
    process's ``time.monotonic()``, one clock for every process of the box) to now; None
    where its arrival is not known or not on this clock."""
    arrived = entry.get("arrived")
    if not isinstance(arrived, (int, float)) or isinstance(arrived, bool):
        return None
    delay = (time.monotonic() if now is None else now) - float(arrived)
    return round(delay * 1000) if 0.0 <= delay < MAX_DELAY_SECONDS else None


def _frame_header(entry: dict[str, Any], state: dict[str, Any]) -> str:
    """``X-Live-Frame``: the frame's entry and the state's size, scale, state, hint, fps,
    and how late the frame is as it is served (``delay_ms``: the page adds its own time to
    draw it)."""
    shown = {"width": state.get("width"), "height": state.get("height"),
             "mm_per_pixel": state.get("mm_per_pixel"), "state": effective_state(state),
             "hint": state.get("hint"), "fps": state.get("fps"),
             "delay_ms": served_delay_ms(entry)}
    return json.dumps({**shown, **entry}, separators=(",", ":"))


def _no_store(response: Response) -> Response:
    """A live answer no cache keeps (it is stale a frame later)."""
    response.headers["Cache-Control"] = "no-store"
    return response


def _jpeg(data: bytes, entry: dict[str, Any], state: dict[str, Any]) -> Response:
    response = Response(data, mimetype="image/jpeg")
    response.headers["X-Live-Frame"] = _frame_header(entry, state)
    return _no_store(response)


@blueprint.route("/live/<source>/next")
def next_frame(source: str):
    """The newest frame once its seq is past ``after`` (waits up to LONG_POLL_SECONDS, looking
    at the state's version every POLL_INTERVAL); 204 when none came."""
    name = _source(source).name
    try:
        after = int(request.args.get("after", "-1"))
    except ValueError:
        abort(400)
    slots = _poll_slots()
    if not slots.acquire(blocking=False):  # the other pages keep their threads: try again
        busy = Response(status=503)
        busy.headers["Retry-After"] = "1"
        return _no_store(busy)
    try:
        return _wait_for_frame(name, after)
    finally:
        slots.release()


def _poll_slots() -> threading.BoundedSemaphore:
    """The long polls this viewer serves at once: its threads less POLL_RESERVED_THREADS
    (at least one), so live pages waiting on a quiet source never hold every thread."""
    slots = current_app.extensions.get("live_polls")
    if slots is None:
        size = max(1, _config().web.threads - POLL_RESERVED_THREADS)
        slots = current_app.extensions.setdefault("live_polls",
                                                  threading.BoundedSemaphore(size))
    return slots


def _wait_for_frame(name: str, after: int) -> Response:
    """The newest frame past ``after``, or 204 after LONG_POLL_SECONDS. A newest frame
    numbered below ``after`` is answered too: the box restarted its numbering (a reboot
    empties the tmpfs), and a page waiting for its old number would wait for ever."""
    root = _root()
    deadline = time.monotonic() + LONG_POLL_SECONDS
    seen = -1
    while True:
        version = live_frames.state_version(root, name)
        if version != seen:
            seen = version
            state = live_frames.read_state(root, name)
            newest = live_frames.newest_frame(state) if state else None
            if state and newest and int(newest["seq"]) != after:
                data = live_frames.frame_bytes(root, name, int(newest["seq"]))
                if data is not None:
                    return _jpeg(data, newest, state)
        if time.monotonic() >= deadline:
            return _no_store(Response(status=204))
        time.sleep(POLL_INTERVAL)


@blueprint.route("/live/<source>/frame/<int:seq>")
def frame(source: str, seq: int):
    """One frame of the ring (404 once it is gone)."""
    name = _source(source).name
    root = _root()
    state = live_frames.read_state(root, name)
    entry = next((f for f in (state or {}).get("frames") or [] if f.get("seq") == seq), None)
    data = live_frames.frame_bytes(root, name, seq) if entry is not None else None
    if state is None or entry is None or data is None:
        abort(404)
    return _jpeg(data, entry, state)


@blueprint.route("/live/<source>/state")
def state_json(source: str):
    """Where the source stands, its open session and the ring's seqs (the page polls it)."""
    found = _source(source)
    name = found.name
    state = live_frames.read_state(_root(), name) or {}
    session = _session_view(live_sessions.open_session(database(), name))
    last = None if session else _last_session(name)
    answer = jsonify(
        state=effective_state(state or None),
        detail=redact_detail(state.get("detail") or {}, found.secrets),
        hint=state.get("hint") or LiveHint.NONE.value, fps=state.get("fps"),
        analysed=state.get("analysed"), dropped=state.get("dropped"),
        session=None if session is None else {
            "id": session["id"], "kept": session["kept"], "study_url": session["study_url"],
            "error": _keep_error(state, session["id"])},
        last=None if last is None else {"id": last["id"], "kept": last["kept"],
                                        "study_url": last["study_url"]},
        seqs=[f["seq"] for f in state.get("frames") or []])
    return _no_store(answer)


def _keep_error(state: dict[str, Any], session_id: int) -> str:
    """Why the live process could not keep the session's last object, in words ("" when it
    could)."""
    kept = state.get("session")
    if not isinstance(kept, dict) or kept.get("id") != session_id or not kept.get("error"):
        return ""
    return gettext(KEEP_ERRORS.get(str(kept["error"]), KEEP_ERROR_OTHER))


def _clinician_only() -> str:
    """The account's name; 403 unless it is clinic staff (``_may_act``)."""
    if not _may_act():
        abort(403)
    return current_account().name


def _clean(field: str, limit: int = FIELD_LIMIT) -> str:
    """A form field, trimmed, without control characters or backslashes (a DICOM delimiter),
    nor invisible ones (bidi overrides, zero-width marks)."""
    text = _CONTROL.sub("", request.form.get(field, ""))
    text = "".join(c for c in text if unicodedata.category(c) not in _INVISIBLE)
    return text.strip()[:limit]


def _person_name(text: str) -> str:
    """A patient name DICOM's PN can hold: at most three component groups (``=``) of at
    most five components (``^``); what is beyond joins the last with a space."""
    groups = text.split("=")
    groups = [*groups[:2], " ".join(groups[2:])] if len(groups) > 3 else groups
    shaped = []
    for group in groups:
        parts = group.split("^")
        shaped.append("^".join([*parts[:4], " ".join(parts[4:])] if len(parts) > 5 else parts))
    return "=".join(shaped)


def _seq(text: str) -> int | None:
    """A frame number the page sent, or None (not ASCII digits, or absurd)."""
    return int(text) if _SEQ.match(text) else None


def _stale_page(session: live_sessions.LiveSession | None) -> bool:
    """Whether the form came from a page showing another session than the open one (a
    page frozen while its session ended and the next patient's began)."""
    shown = request.form.get("session", "")
    return bool(shown) and (session is None or shown != str(session.id))


def _birth_date() -> str | None:
    """The form's birth date (YYYY-MM-DD) as DICOM's YYYYMMDD; "" when none; None when bad."""
    text = request.form.get("birth_date", "").strip()
    if not text:
        return ""
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        return None
    return day.strftime("%Y%m%d") if dt.date(1900, 1, 1) <= day <= dt.date.today() else None


def _form_values() -> dict[str, str]:
    """The session form as it was sent (shown again when it is refused)."""
    return {name: request.form.get(name, "")[:FIELD_LIMIT * 2]
            for name in ("patient_name", "patient_id", "birth_date", "sex", "study")}


def _back(source: str) -> Response:
    return redirect(url_for("live.page", source=source))


@blueprint.route("/live/<source>/session", methods=["POST"])
def start_session(source: str):
    """Open a session for a patient (name or ID at least), typed or picked from the clinic's
    worklist (``worklist_item``); 409 when one is open."""
    name = _source(source).name
    who = _clinician_only()
    if "worklist_item" in request.form:
        return _start_picked(name, who)
    patient_name, patient_id = _person_name(_clean("patient_name")), _clean("patient_id")
    stored = _person_name(_clean("patient_name_dicom"))
    if stored and request.form.get("patient_name", "").strip() == formats.person_name(stored):
        # the worklist study's name, shown as people read it and left as it was: the
        # session keeps the study's own DICOM name (components and all)
        patient_name = stored
    sex, birth = request.form.get("sex", ""), _birth_date()
    if sex not in labels.SEXES or birth is None or not (patient_name or patient_id):
        flash(gettext("Give at least the patient's name or ID (and a birth date that is a "
                      "real past day)."))
        return _page(_source(name), _form_values(), 400)
    from_study = request.form.get("study", "")[:128]
    conn = database()
    try:
        session = live_sessions.start(conn, source=name, started_by=who,
                                      patient_name=patient_name, patient_id=patient_id,
                                      birth_date=birth, sex=sex, from_study=from_study)
    except live_sessions.SessionAlreadyOpen:
        flash(gettext("A session is already open on this source: end it first."))
        return _page(_source(name), _form_values(), 409)
    audit_trail.note("live_session_started", f"live_session:{session.id}",
                     f"source {name}" + (" (from a worklist study)" if from_study else ""))
    flash(gettext("Session started. Frames where a lesion is seen are kept for this patient."))
    return _back(name)


def _start_picked(name: str, who: str):
    """Open a session for the scheduled patient the page's worklist names: the patient as
    the worklist has them, with the order's accession number and step ID."""
    conn = database()
    item = live_worklist.picked(conn, request.form.get("worklist_item", ""),
                                request.form.get("worklist_patient", ""))
    if item is None:
        flash(gettext("That appointment is no longer on the list: pick again, or type the "
                      "patient's details."))
        return _page(_source(name), _form_values(), 409)
    try:
        session = live_sessions.start(
            conn, source=name, started_by=who, patient_name=_person_name(item.patient_name),
            patient_id=item.patient_id, birth_date=item.birth_date, sex=item.sex,
            accession_number=item.accession_number, sps_id=item.sps_id)
    except live_sessions.SessionAlreadyOpen:
        flash(gettext("A session is already open on this source: end it first."))
        return _page(_source(name), _form_values(), 409)
    audit_trail.note("live_session_started", f"live_session:{session.id}",
                     f"source {name} (from the clinic's worklist)")
    flash(gettext("Session started. Frames where a lesion is seen are kept for this patient."))
    return _back(name)


@blueprint.route("/live/<source>/session/end", methods=["POST"])
def end_session(source: str):
    """End the source's open session."""
    name = _source(source).name
    _clinician_only()
    conn = database()
    session = live_sessions.open_session(conn, name)
    if session is None or _stale_page(session) or not live_sessions.end(conn, session.id):
        flash(gettext("No session is open on this source."))
        return _page(_source(name), _form_values(), 409)
    audit_trail.note("live_session_ended", f"live_session:{session.id}", f"source {name}")
    # no flash: the page's panel says the session ended, and where its study went
    return _back(name)


@blueprint.route("/live/<source>/keep", methods=["POST"])
def keep(source: str):
    """Ask the live process to keep the frame shown now or a clip (JSON for the page's
    script, else back to the page)."""
    found = _source(source)
    who = _clinician_only()
    try:
        kind = LiveRequest(request.form.get("kind", ""))
    except ValueError:
        abort(400)
    conn = database()
    session = live_sessions.open_session(conn, found.name)
    wants_json = request.accept_mimetypes.best == "application/json"
    if session is None:
        said = gettext("No session is open: start one first. Nothing is kept without a "
                       "session.")
        if wants_json:
            return jsonify(ok=False, message=said), 409
        flash(said)
        return _page(found, _form_values(), 409)
    if _stale_page(session):
        said = gettext("Not kept: the session this page shows has ended. Reload the page.")
        if wants_json:
            return jsonify(ok=False, message=said), 409
        flash(said)
        return _page(found, _form_values(), 409)
    seq = _seq(request.form.get("seq", ""))
    shown = seq if kind == LiveRequest.KEY_FRAME else None
    request_id = live_sessions.ask(conn, session.id, kind, who, seq=shown)
    audit_trail.note("live_keep_requested", f"live_session:{session.id}",
                     f"{kind.value}" + (f" at frame {seq}" if seq is not None else ""))
    said = (gettext("Asked to keep this frame.") if kind == LiveRequest.KEY_FRAME else
            gettext("Asked to keep a clip of the last %(seconds)s seconds.",
                    seconds=formats.decimal(_config().live.clip_seconds, 0)))
    if wants_json:
        return jsonify(ok=True, request=request_id, message=said)
    flash(said)
    return _back(found.name)
