"""The box's event log (``events``: level, component, code, message) in the reader's language.

The log keeps each event's English line as it was written (for the technician's logs and
``journalctl``) and a code a program reads back (``storage/event_codes.py``). The device page
and ``clinibox status`` say the level and the component in words, and the event in words from
its code: the model's events (``lifecycle``, kept as ``event:reason[:step]`` by
``telemetry.messages.lifecycle_code``) from the words of ``words/model_update_words.py``, what
happened to one object (``object:<status>:<id>``, the worker's) from :data:`OBJECTS`, the
hospital's downlink (``downlink_…``) from :data:`DOWNLINK`, and every other event of the box
from :data:`WORDS` with its code's parts (ids, counts, names). In English the recorded line is
shown where it says more (the object's, the PACS's and the other coded events': their
detail); outside English an event whose code is unknown (rows from before codes) is said as
:data:`RECORDED_IN_ENGLISH`, never as its English line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clinibox_common.i18n import ENGLISH, N_, current, formats, gettext
from firmware_app.storage import event_codes as codes
from firmware_app.words import model_update_words as model_words
from firmware_app.words import records_words

#: the levels the log keeps
LEVELS = {"INFO": N_("notice"), "WARNING": N_("warning"), "ERROR": N_("error")}
#: the parts of the box that write to the log (a PACS destination's is ``pacs <name>``)
COMPONENTS = {
    "lifecycle": N_("model"), "models": N_("model"), "worker": N_("analysis"),
    "ingest": N_("receiving"), "usb": N_("USB import"), "quarantine": N_("quarantine"),
    "telemetry": N_("link to the hospital"), "retention": N_("clean-up of old images"),
    "audit": N_("audit trail"), "dicom-out": N_("results to the PACS"),
    "downlink": N_("messages from the hospital"), "study-completion": N_("DICOM results"),
    "records": N_("results to the clinic's records"),
}
#: the model's device events (``contracts.egress.EVENTS``)
EVENTS = {
    "model_installed": N_("model installed"),
    "model_refused": N_("model package refused"),
    "model_rolled_back": N_("model rolled back"),
    "runtime_fallback": N_("switched to another runtime"),
    "service_failed": N_("a service of the box failed"),
    "model_unavailable": N_("model unavailable"),
    "model_kept": N_("model kept after its trial"),
    "model_drift": N_("model drifting"),
    "rollout": N_("model update from the hospital"),
}

#: what happened to one object (``storage.db.object_code``: ``object:<status>:<id>``), by
#: the status it was left in
OBJECTS = {
    "quarantined": N_("image %(id)s held back in quarantine; the quarantine list says why"),
    "failed": N_("image %(id)s could not be analysed; the quarantine list says why"),
    "queued": N_("image %(id)s met an error; it will be analysed again"),
    "not_analysed": N_("image %(id)s not analysed: no model on this box is meant for it"),
}


#: what an event of the box says, by its code's kind (``storage/event_codes.py``) and the
#: names of its parts, in order
WORDS: dict[str, tuple[tuple[str, ...], str]] = {
    codes.LINK_DOWN: ((), N_("the link to the hospital's message server went down; messages "
                            "wait on the box and go when it is back")),
    codes.OUTBOX_DROPPED: (("seq", "max"), N_(
        "too many messages waiting for the hospital (%(max)s): message %(seq)s was dropped")),
    codes.REQUEUED: (("id", "by"), N_("image %(id)s put back in the queue by %(by)s")),
    codes.DELETED: (("id", "by"), N_("image %(id)s deleted from the quarantine by %(by)s")),
    codes.INTERRUPTED: (("n",), N_("%(n)s image(s) not analysed: their analysis was "
                                   "interrupted again and again")),
    codes.AUDIT_KEPT: (("days",), N_("audit rows older than %(days)s days kept: the audit "
                                     "trail's chain check failed")),
    codes.DICOM_REQUEUED: (("n", "destination"), N_(
        "%(n)s held DICOM result(s) queued again")),
    codes.USB_UNFINISHED: (("device",), N_(
        "USB import from %(device)s did not finish in time; the stick was unmounted")),
    codes.USB_PROBLEM: (("device",), N_(
        "USB import from %(device)s finished with a problem; some files may be missing")),
    codes.DICOMDIR_MISSING: (("path",), N_(
        "the USB stick's DICOMDIR lists %(path)s, which is not on the stick")),
    codes.CONFLICT: (("id", "local"), N_(
        "an image with the same number as image %(id)s but other content arrived; it was "
        "kept aside (%(local)s) and not analysed")),
    codes.CSTORE_REFUSED: (("reason", "caller"), N_(
        "an image from %(caller)s was refused: %(reason)s")),
    codes.STUDY_LEFT_OUT: (("study", "version"), N_(
        "study %(study)s: some images were left out of its DICOM results")),
    codes.STUDY_SEG_LEFT_OUT: (("study", "version"), N_(
        "study %(study)s: some images were left out of its lesion outlines (SEG): their "
        "headers lack what it needs; their findings are still in its other DICOM results")),
    codes.STUDY_HEADER_FIXES: (("study", "version"), N_(
        "study %(study)s: image headers were completed to make its DICOM results")),
    codes.STUDY_RESULTS_NOT_MADE: (("study", "version", "tries"), N_(
        "study %(study)s: its DICOM results could not be made (try %(tries)s); the box "
        "tries again")),
    codes.STUDY_RESULTS_HELD: (("study", "version", "tries"), N_(
        "study %(study)s: its DICOM results could not be made; the box stopped trying")),
    codes.CLOCK_MOVED: (("minutes",), N_(
        "the box's clock was %(minutes)s minute(s) behind the hospital's signed time; it was "
        "set forward to it")),
    codes.CLOCK_REFUSED: (("reason",), N_(
        "a time left for the clock could not be checked as the hospital's; the clock was not "
        "changed")),
    codes.ROUTED_MODEL_DOWN: (("name",), N_(
        "the model %(name)s named by the routing rules is not running; its images are not "
        "analysed")),
}
#: a retention pass (``retention:<images>:<bytes>:<disk still full>:<dry run>``)
RETENTION = N_("clean-up of old images: %(n)s image(s) deleted, %(size)s freed")
RETENTION_DRY = N_("clean-up of old images (trial run): %(n)s image(s) would be deleted")
RETENTION_FULL = N_("; the disk is still too full and nothing more may be deleted")
#: how a PACS destination failed (``storage.event_codes.PACS_…``)
PACS_FAILURES = {
    codes.PACS_UNREACHABLE: N_("cannot reach the PACS (check that it is on, and host and "
                               "port, or url); the box tries again"),
    codes.PACS_TLS: N_("the secure connection (TLS) to the PACS failed"),
    codes.PACS_REJECTED: N_("the PACS turned the connection down"),
    codes.PACS_ABORTED: N_("the PACS broke off the connection"),
    codes.PACS_NO_ANSWER: N_("the PACS did not answer in time; the box tries again"),
    codes.PACS_REFUSED: N_("the PACS refused a result"),
    codes.PACS_LOST: N_("the connection to the PACS was lost while sending"),
    codes.PACS_UNREADABLE: N_("the box could not read a result file it was to send"),
    codes.PACS_CANNOT_SEND: N_("the PACS does not accept this kind of result"),
    codes.PACS_AUTH: N_("the PACS refused the box's user name or password, or the user may "
                        "not store (check username and password_file)"),
    codes.PACS_NO_SERVICE: N_("the PACS has no DICOMweb store at the configured address "
                              "(check url)"),
    codes.PACS_SERVER_ERROR: N_("the PACS failed or is busy; the box tries again"),
    codes.PACS_PASSWORD_FILE: N_("the box cannot use the password file it signs in to the "
                                 "PACS with"),
    codes.PACS_UNCONFIRMED: N_("the PACS answered without saying it stored the result "
                               "(check url); the box tries again"),
}
#: why the PACS turned the connection down (``pacs_failed:rejected:<why>``)
PACS_REJECTIONS = {
    "called_ae": N_("the PACS does not know the AE title the box calls it by (check the "
                    "destination's ae_title)"),
    "calling_ae": N_("the PACS does not know this box's AE title (ask its administrator to "
                     "add it)"),
    "busy": N_("the PACS is busy; the box tries again"),
}
#: why the box could not use its password file (``pacs_failed:password_file:<why>``)
PACS_PASSWORD_FILE_REASONS = {
    "missing": N_("there is no file at password_file (check the path)"),
    "unreadable": N_("the service may not read it (make it the clinibox user's, mode 600)"),
    "link": N_("it is a symbolic link (write the password in the file itself)"),
    "not_regular": N_("it is not a small text file"),
    "readable_by_others": N_("others may read it (make it the clinibox user's, mode 600)"),
    "not_utf8": N_("it is not UTF-8 text"),
    "empty": N_("its first line holds no password"),
}
#: why the PACS refused the box's credentials (``pacs_failed:auth:<why>``)
PACS_AUTH_REASONS = {
    "no_user": N_("it asks for a user name and password and none is set (set username and "
                  "password_file, with an https:// url)"),
}
#: a PACS failure with the C-STORE status the PACS answered (data: ``0xA700``)
PACS_STATUS = N_("%(failure)s (status %(status)s)")
#: a held document (``pacs_held:<refusals>:<failure>[:<status>]``)
PACS_HELD = N_("%(failure)s %(n)s times: the result is held and no longer sent")
#: why a C-STORE was refused (``ingest.store_checks.Refusal`` values)
REFUSALS = {
    "unreadable_header": N_("its header could not be read"),
    "repeated_element": N_("its header holds an element twice"),
    "no_sop_instance_uid": N_("it has no image number (SOP Instance UID)"),
    "no_sop_class_uid": N_("it has no image kind (SOP Class UID)"),
    "invalid_uid": N_("it holds an invalid number (UID)"),
    "uid_mismatch": N_("its image number differs from the one announced"),
    "class_mismatch": N_("its image kind differs from the one announced"),
    "no_study_instance_uid": N_("it names no study (Study Instance UID)"),
    "no_series_instance_uid": N_("it names no series (Series Instance UID)"),
    "cut_short": N_("it arrived incomplete (cut short while it was sent)"),
}
#: the hospital's downlink events (``telemetry/downlink.py``'s codes)
DOWNLINK = {
    "downlink_unknown_study": N_("a verdict from the hospital names a study this box does not "
                                 "have; it is kept"),
    "downlink_late": N_("a verdict from the hospital arrived late; it is kept and shown as "
                        "late"),
    "downlink_link_check": N_("the hospital tested the link; the box answered"),
    "downlink_clock": N_("the hospital saw the box's clock behind its own and sent its time"),
}
DOWNLINK_ORDER = N_("an order from the hospital was not acted on: %(reason)s")
DOWNLINK_REFUSED = N_("a message from the hospital was refused: it could not be checked as "
                      "the hospital's")
#: what a page or ``clinibox status`` says outside English for an event with no known code
RECORDED_IN_ENGLISH = N_("(recorded in English only: see the English page or the log)")


def pacs_failure(failure: str, status: str = "") -> str:
    """A PACS failure's code (``unreachable``, ``refused`` and a status, ``rejected`` and
    why …) in words."""
    words = PACS_FAILURES.get(failure)
    if words is None:
        return ""
    reasons = {codes.PACS_REJECTED: PACS_REJECTIONS,
               codes.PACS_PASSWORD_FILE: PACS_PASSWORD_FILE_REASONS,
               codes.PACS_AUTH: PACS_AUTH_REASONS}.get(failure, {})
    if status in reasons:
        return gettext("%(said)s: %(why)s", said=gettext(words), why=gettext(reasons[status]))
    if status.startswith("0x"):
        return gettext(PACS_STATUS, failure=gettext(words), status=status)
    return gettext(words)


def pacs_error(code: str | None, recorded: str) -> tuple[str, bool]:
    """A PACS destination's last error (its event's code, its recorded English line) in
    words, and whether it is the recorded line (True, only in English)."""
    if current() == ENGLISH:
        return recorded, True
    words = _pacs(codes.kind(code), code or "")
    if words:
        return words, False
    return gettext("%(said)s %(recorded)s", said=gettext("sending to the PACS failed"),
                   recorded=gettext(RECORDED_IN_ENGLISH)), False


def pacs_words(code: str) -> str:
    """A PACS failure's event code in the reader's words, in any language ("" when
    unknown)."""
    return _pacs(codes.kind(code), code)


def in_english() -> bool:
    """Whether the reader reads English (who may also be shown the recorded line)."""
    return current() == ENGLISH


def pacs_held_error(status: int | None, recorded: str) -> str:
    """A held document's refusal (its C-STORE status, the PACS's recorded words) in the
    reader's language: the PACS's own words in English."""
    code = codes.code(codes.PACS_FAILED, codes.pacs_failure(codes.PACS_REFUSED, status))
    return pacs_error(code, recorded)[0]


def _pacs(kind: str, value: str) -> str:
    """A PACS destination's event code in words ("" when unknown)."""
    if kind not in (codes.PACS_FAILED, codes.PACS_HELD):
        return ""
    if kind == codes.PACS_FAILED:
        found = codes.parts(value, 2)[1]
        return pacs_failure(found[0], found[1] if len(found) > 1 else "") if found else ""
    found = codes.parts(value, 3)[1]
    if len(found) < 2 or not found[0].isdigit():
        return ""
    failure = pacs_failure(found[1], found[2] if len(found) > 2 else "")
    return gettext(PACS_HELD, failure=failure, n=found[0]) if failure else ""


def _retention(found: list[str]) -> str:
    """A retention pass's code in words ("" when not one)."""
    if len(found) != 4 or not all(part.isdigit() for part in found):
        return ""
    images, size, full, dry = found
    if dry == "1":
        words = gettext(RETENTION_DRY, n=images)
    else:
        words = gettext(RETENTION, n=images, size=gettext(
            "%(mb)s MB", mb=formats.decimal(int(size) / 2**20)))
    return words + (gettext(RETENTION_FULL) if full == "1" else "")


def _box(value: str) -> str:
    """One of the box's own events (:data:`WORDS`, PACS, retention, downlink) in words, or ""."""
    kind = codes.kind(value)
    if kind in (codes.PACS_FAILED, codes.PACS_HELD):
        return _pacs(kind, value)
    if kind.startswith("records_"):
        return records_words.words(value)
    if kind == codes.RETENTION:
        return _retention(codes.parts(value, 4)[1])
    if value in DOWNLINK:
        return gettext(DOWNLINK[value])
    if kind.startswith("downlink_order_"):
        return gettext(DOWNLINK_ORDER, reason=model_words.reason(kind[15:]))
    if kind.startswith("downlink_"):
        return gettext(DOWNLINK_REFUSED)
    if kind not in WORDS:
        return ""
    names, words = WORDS[kind]
    found = codes.parts(value, len(names))[1]
    if len(found) < len(names) - (kind == codes.DICOM_REQUEUED):
        return ""
    values = dict(zip(names, found, strict=False))
    if kind == codes.CSTORE_REFUSED:
        values["reason"] = gettext(REFUSALS[values["reason"]]) \
            if values["reason"] in REFUSALS else gettext("its header is not one the box takes")
    said = gettext(words, **values)
    if values.get("destination"):
        said = gettext("%(said)s (PACS %(name)s)", said=said, name=values["destination"])
    return said


def level(code: str) -> str:
    """A level in words (the code itself when unknown)."""
    english = LEVELS.get(code)
    return gettext(english) if english else code


def component(code: str) -> str:
    """A component in words: ``pacs <name>`` as "PACS <name>"; the code itself when unknown."""
    if code.startswith("pacs "):
        return gettext("PACS %(name)s", name=code[5:])
    if code.startswith("records "):
        return gettext("clinic records system %(name)s", name=code[8:])
    english = COMPONENTS.get(code)
    return gettext(english) if english else code


def said(code: str) -> str:
    """A model event's code (``event:reason[:step]``) in words, or "" when it is not one."""
    event, _, rest = (code or "").partition(":")
    if event == "object":  # English keeps the recorded line: it holds the reason's detail
        status, _, instance = rest.partition(":")
        if current() == ENGLISH:
            return ""
        words = OBJECTS.get(status)
        return gettext(words, id=instance) if words and instance.isdigit() else ""
    if event not in EVENTS or not rest:
        return ""
    reason, _, step = rest.partition(":")
    what = gettext(EVENTS[event])
    if step:
        what = gettext("%(event)s: %(step)s", event=what, step=model_words.step(step))
        if reason in ("hospital", ""):
            return what
    return gettext("%(event)s (%(reason)s)", event=what, reason=model_words.reason(reason))


def message(event: Mapping[str, Any]) -> tuple[str, bool]:
    """What an event row says, and whether it is the recorded English line (True, only in
    English) rather than words in the reader's language (False)."""
    code = event.get("code") or ""
    words = said(code)
    if words:
        return words, False
    if current() == ENGLISH:  # the recorded line says more than the words
        return str(event["message"]), True
    return (_box(code) or gettext(RECORDED_IN_ENGLISH)), False
