"""Short labels of the viewer in the reader's language: statuses, verdicts, classes, audit
actions, worklist filters, window presets.

Each table maps the box's stable word (stored, sent in forms and JSON, never
translated) to its English label, marked for the catalog; the functions
return the label in the current language (the word itself when unknown).
The words of states and kinds are the members of ``contracts/statuses.py``:
these tables are keyed by them, one label for every member
(``tests/unit/firmware_app/test_statuses.py``); the command line shows the same labels.
"""

from __future__ import annotations

import datetime as dt

from clinibox_common.contracts.assessment_words import ASSESSMENT_WORDS
from clinibox_common.contracts.class_words import class_words
from clinibox_common.contracts.downlink import verdict_words
from clinibox_common.contracts.statuses import (
    WAITING_STATUSES,
    InstanceStatus,
    LiveHint,
    LiveKept,
    LiveState,
    OutboxState,
    Role,
    Verdict,
)
from clinibox_common.i18n import N_, formats, gettext
from engine.inference.volume import PER_SLICE_WORDS
from firmware_app.storage.audit import ACTIONS

#: the clinician's verdicts on a finding (form values)
VERDICTS = {Verdict.AGREE: N_("agree"), Verdict.DISAGREE: N_("disagree"),
            Verdict.UNSURE: N_("unsure")}
#: the badge of a study row in the worklist, by level
LEVELS = {"alert": N_("ALERT"), "finding": N_("finding"), "unassessable": N_("not assessable"),
          "outside": N_("outside validated range"), "clear": N_("no finding"),
          "doctor_must_read": N_("doctor must read")}
#: instance statuses as the worklist and quarantine list show them (``done``: a study row;
#: ``waiting``: an object row of the waiting filter, queued or processing;
#: ``waiting_for_model``: the same while the box has no model it may run, ``row_status``)
STATUSES = {InstanceStatus.QUEUED: N_("queued"), InstanceStatus.PROCESSING: N_("processing"),
            InstanceStatus.QUARANTINED: N_("quarantined"), InstanceStatus.FAILED: N_("failed"),
            InstanceStatus.NOT_ANALYSED: N_("not analysed"),
            InstanceStatus.PROCESSED: N_("processed"), "done": N_("done"),
            "waiting": N_("waiting for analysis"),
            "waiting_for_model": N_("waiting for a model")}
#: the worklist's filters
FILTERS = {"all": N_("all studies"), "alert": N_("alerts only"), "done": N_("studies done"),
           "waiting": N_("waiting for analysis"), "quarantined": N_("quarantined objects"),
           "not_analysed": N_("not analysed (no model for them)")}
#: where a received image came from (``instances.source``), as the worklist's rows say it
SOURCES = {"dicom": N_("a scanner (DICOM)"), "usb": N_("a USB stick or folder"),
           "live": N_("live video")}
#: CT window presets (name, centre, width in Hounsfield units)
CT_PRESETS = ((N_("Soft tissue"), 40, 400), (N_("Lung"), -600, 1500), (N_("Bone"), 400, 1800),
              (N_("Brain"), 40, 80))
#: audit actions as the audit page names them (their meanings: storage.audit.ACTIONS)
ACTION_NAMES = {
    "login": N_("login"),
    "login_failed": N_("login failed"),
    "login_throttled": N_("login throttled"),
    "logout": N_("logout"),
    "worklist_view": N_("worklist view"),
    "study_view": N_("study view"),
    "image_view": N_("image view"),
    "dicomweb_search": N_("DICOMweb search"),
    "dicomweb_retrieve": N_("DICOMweb retrieve"),
    "report_view": N_("report view"),
    "report_download": N_("report download"),
    "export": N_("export"),
    "feedback": N_("feedback"),
    "quarantine_requeued": N_("quarantine requeued"),
    "quarantine_deleted": N_("quarantine deleted"),
    "account_created": N_("account created"),
    "password_changed": N_("password changed"),
    "account_removed": N_("account removed"),
    "model_installed": N_("model installed"),
    "model_refused": N_("model refused"),
    "model_rolled_back": N_("model rolled back"),
    "model_kept": N_("model kept"),
    "model_drift": N_("model drifting"),
    "audit_viewed": N_("audit viewed"),
    "audit_pruned": N_("audit pruned"),
    "hospital_review_received": N_("hospital verdict received"),
    "model_rollout_received": N_("hospital's model rollout received"),
    "model_rollback_received": N_("hospital's rollback order received"),
    "live_view": N_("live page view"),
    "live_session_started": N_("live session started"),
    "live_session_ended": N_("live session ended"),
    "live_keep_requested": N_("live keep requested"),
}
#: the model's assessment of an image (``contracts/assessment_words.py``: the hospital's
#: console shows the same words)
ASSESSMENTS = ASSESSMENT_WORDS
#: why a series of several images is read image by image, not as a volume
SERIES_READINGS = PER_SLICE_WORDS
#: account roles
ROLES = {Role.CLINICIAN: N_("clinician"), Role.TECHNICIAN: N_("technician")}
#: where a bedside live source stands, as its page says it (``web/views_live.py``)
LIVE_STATE = {
    LiveState.STARTING: N_("Starting the live video…"),
    LiveState.RUNNING: N_("Live"),
    LiveState.DISCONNECTED: N_("The video is not connected — check the cable"),
    LiveState.STALLED: N_("The video has stopped — check the machine and its cable"),
    LiveState.NETWORK_LOST: N_("The network video has stopped — check the network and that "
                               "the machine is sending its video"),
    LiveState.NO_SIGNAL: N_("No picture from the machine — check that its video output is on"),
    LiveState.FROZEN: N_("The machine's picture is frozen — unfreeze it on the machine"),
    LiveState.NO_CONTACT: N_("Probe not on the skin"),
    LiveState.REFUSED: N_("The box cannot read this video — call the technician"),
    LiveState.DECODER_FAILED: N_("The video reader stopped; it is starting again"),
    LiveState.NO_MODEL: N_("No model on this box reads these images — call the technician"),
    LiveState.STOPPED: N_("Live mode is stopped"),
}
#: the plain hint of a live frame (``none``: nothing is shown)
LIVE_HINT = {
    LiveHint.NONE: N_("no hint"),
    LiveHint.HOLD_HERE: N_("Possible lesion — hold the probe here"),
    LiveHint.OUTSIDE_VALIDATED_RANGE: N_("This picture is outside what the model was validated "
                                         "on — no marks are shown"),
    LiveHint.NOT_ASSESSABLE: N_("The picture cannot be judged (too dark, blank or too bright) "
                                "— no marks are shown"),
}
#: what a live session kept
LIVE_KEPT = {LiveKept.KEY_FRAME: N_("key frame"), LiveKept.CLIP: N_("clip")}
#: a patient's sex in the session form (DICOM Patient's Sex: M, F, O; '' not given)
SEXES = {"": N_("not given"), "F": N_("female"), "M": N_("male"), "O": N_("other")}
#: the kinds of message the box sends the hospital (``contracts.egress.KINDS``)
OUTBOX_KINDS = {"alert": N_("alert message"), "summary": N_("daily summary"),
                "status": N_("status report"), "event": N_("device event")}
#: a message's state in the outbox (``contracts.statuses.OutboxState``)
OUTBOX_STATES = {OutboxState.PENDING: N_("waiting to be sent"), OutboxState.SENT: N_("sent"),
                 OutboxState.DROPPED: N_("dropped (outbox full)"),
                 OutboxState.SUPERSEDED: N_("replaced by a newer one"),
                 OutboxState.WILL: N_("last will, sent by the broker")}


def _label(table: dict[str, str], word: str | None) -> str:
    if word is None:
        return ""
    english = table.get(word)
    return gettext(english) if english else word.replace("_", " ")


def outbox_kind(word: str) -> str:
    """A telemetry message's kind in words."""
    return _label(OUTBOX_KINDS, word)


def outbox_state(word: str) -> str:
    """A telemetry message's state in the outbox in words."""
    return _label(OUTBOX_STATES, word)


def verdict(word: str) -> str:
    """A verdict button's label."""
    return _label(VERDICTS, word)


def level(word: str) -> str:
    """A worklist badge's label."""
    return _label(LEVELS, word)


def status(word: str) -> str:
    """An instance status."""
    return _label(STATUSES, word)


def row_status(word: str, waiting_for_model: object = None) -> str:
    """The state word of a worklist row: ``waiting`` (or a waiting instance status) reads
    ``waiting_for_model`` while the box waits for a model (``waiting_for_model`` truthy)."""
    if waiting_for_model and word in ("waiting", *WAITING_STATUSES):
        return "waiting_for_model"
    return word


def source(word: str) -> str:
    """Where a received image came from, in words (the code itself when unknown)."""
    return _label(SOURCES, word)


def worklist_filter(word: str) -> str:
    """A worklist filter's label."""
    return _label(FILTERS, word)


def class_label(word: str | None) -> str:
    """A class label of the model, known ones translated (``contracts/class_words.py``: the
    hospital's console shows the same words)."""
    return class_words(word)


def action(word: str) -> str:
    """An audit action's name."""
    return _label(ACTION_NAMES, word)


def action_meaning(word: str) -> str:
    """What an audit action means (``storage.audit.ACTIONS``)."""
    meaning = ACTIONS.get(word)
    return gettext(meaning) if meaning else ""


#: the hospital's verdict in words: "refer the patient", "follow up in 6 months" …
#: (``contracts/downlink.verdict_words``: the console shows the same)
hospital_verdict = verdict_words


def late_review(reviewed_at: float) -> str:
    """What a verdict that reached the box late adds: "(arrived late, given 2026-11-23)"."""
    return gettext("(arrived late, given %(date)s)",
                   date=formats.day(dt.date.fromtimestamp(reviewed_at)))


def assessment(word: str) -> str:
    """The model's assessment of an image."""
    return _label(ASSESSMENTS, word)


def series_reading(code: str) -> str:
    """Why a series is read image by image, in words (the code itself when unknown)."""
    return _label(SERIES_READINGS, code)


def role(word: str) -> str:
    """An account role."""
    return _label(ROLES, word)


def live_state(word: str | None) -> str:
    """A live source's state in plain words."""
    return _label(LIVE_STATE, word)


def live_hint(word: str | None) -> str:
    """A live frame's hint in plain words ("" for none)."""
    return "" if word in (None, LiveHint.NONE) else _label(LIVE_HINT, word)


def live_kept(word: str) -> str:
    """What a live session kept (a key frame, a clip)."""
    return _label(LIVE_KEPT, word)


def sex(word: str) -> str:
    """A patient's sex as the session form names it."""
    return _label(SEXES, word)


def presets() -> list[tuple[str, int, int]]:
    """The CT window presets with their names in the current language."""
    return [(gettext(name), centre, width) for name, centre, width in CT_PRESETS]
