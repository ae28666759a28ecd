"""The console's words for stored values (states, verdicts, delivery, roles, assessments),
translated where they are shown; the stored words never change with the language."""

from __future__ import annotations

from firmware_app.contracts.downlink import VERDICT_WORDS
from firmware_app.contracts.manifest import is_demo_model
from firmware_app.contracts.statuses import AssessmentKind
from firmware_app.i18n import N_, gettext

STATES = {"new": N_("new"), "under_review": N_("under review"), "reviewed": N_("reviewed"),
          "open": N_("waiting (new or under review)"), "all": N_("all")}
#: the verdicts' words: the box's pages show the same (``contracts/downlink.VERDICT_WORDS``)
VERDICTS = VERDICT_WORDS
DELIVERY = {"confirmed": N_("confirmed by the box"), "sent": N_("sent to the box"),
            "no_key": N_("waiting: the box has not reported its downlink key"),
            "waiting": N_("waiting: the box is offline")}
ROLES = {"radiologist": N_("radiologist"), "admin": N_("administrator")}
HEALTH = {"all": N_("all"), "stale": N_("stale"), "drift": N_("drifting"), "ok": N_("healthy")}
#: the box model's assessment of an image (the viewer's words for it)
ASSESSMENTS: dict[str, str] = {
    AssessmentKind.FINDING: N_("finding"), AssessmentKind.NO_FINDING: N_("no finding"),
    AssessmentKind.NOT_ASSESSABLE: N_("not assessable"),
    AssessmentKind.OUTSIDE_VALIDATED_RANGE: N_("outside the validated range")}


def _word(table: dict[str, str], value: object) -> str:
    text = table.get(str(value))
    return gettext(text) if text else str(value or "–")


def state(value: object) -> str:
    """An alert state (or the worklist's state filter) in the reader's language."""
    return _word(STATES, value)


def verdict(value: object) -> str:
    """A hospital verdict in the reader's language."""
    return _word(VERDICTS, value)


def delivery(value: object) -> str:
    """Where a verdict stands on its way to the box."""
    return _word(DELIVERY, value)


def role(value: object) -> str:
    """A console role."""
    return _word(ROLES, value)


def health(value: object) -> str:
    """The fleet's health filter."""
    return _word(HEALTH, value)


def assessment(value: object) -> str:
    """The box model's assessment of an image in the reader's language."""
    return _word(ASSESSMENTS, value)


def is_demo(model_id: object) -> bool:
    """Whether the model is the demo's (trained on phantoms: the page must say so)."""
    return is_demo_model(str(model_id or ""))
