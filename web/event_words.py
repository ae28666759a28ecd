"""The box's event log (``events``: level, component, code, message) in the reader's language.

The log keeps each event's English line as it was written (for the technician's logs and
``journalctl``) and, where one was given, a code a program reads back. The device page and
``clinibox status`` say the level and the component in words, and an event whose code they
know in words too: the model's events (``lifecycle``, kept as ``event:reason[:step]`` by
``telemetry.messages.lifecycle_code``) from the words of ``web/model_update_words.py``, and
what happened to one object (``object:<status>:<id>``, the worker's) from :data:`OBJECTS`
(outside English: the English line names the reason itself). Any
other event is shown as recorded (English, marked so on a page).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from firmware_app.i18n import ENGLISH, N_, current, gettext
from web import model_update_words as model_words

#: the levels the log keeps
LEVELS = {"INFO": N_("notice"), "WARNING": N_("warning"), "ERROR": N_("error")}
#: the parts of the box that write to the log (a PACS destination's is ``pacs <name>``)
COMPONENTS = {
    "lifecycle": N_("model"), "models": N_("model"), "worker": N_("analysis"),
    "ingest": N_("receiving"), "usb": N_("USB import"), "quarantine": N_("quarantine"),
    "telemetry": N_("link to the hospital"), "retention": N_("clean-up of old images"),
    "audit": N_("audit trail"), "dicom-out": N_("results to the PACS"),
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


def level(code: str) -> str:
    """A level in words (the code itself when unknown)."""
    english = LEVELS.get(code)
    return gettext(english) if english else code


def component(code: str) -> str:
    """A component in words: ``pacs <name>`` as "PACS <name>"; the code itself when unknown."""
    if code.startswith("pacs "):
        return gettext("PACS %(name)s", name=code[5:])
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
    """What an event row says, and whether it is the recorded English line (True) rather
    than words in the reader's language (False)."""
    words = said(event.get("code") or "")
    return (words, False) if words else (str(event["message"]), True)
