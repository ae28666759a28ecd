"""The box's wait for a model and the hospital's model rollouts, in the reader's language.

One table of words for the reason codes (``model_waiting.reason``, a rollout order's
``reason``: ``contracts/egress.EVENT_REASONS`` and the downlink's ``replaced``/``stale``)
and one for the steps of a rollout (``contracts/egress.ROLLOUT_STEPS``); the viewer's
worklist, study and device pages and ``clinibox status`` all say them through here.
A code the table does not know is shown as it is, its underscores as blanks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from firmware_app.i18n import N_, gettext, ngettext

#: why the box has no model it may run, or why the hospital's order ended as it did
REASONS = {
    "not_installed": N_("no model package is installed"),
    "signature": N_("the package's signature is not from a trusted key"),
    "tampered": N_("the package's files were changed or damaged"),
    "golden_cases_failed": N_("the package failed its check on known test images"),
    "load_failed": N_("the model could not be loaded"),
    "older_version": N_("the package is older than the version this box may run"),
    "invalid": N_("the package is not one this box may run"),
    "no_space": N_("not enough free disk space for the package"),
    "replaced": N_("replaced by a newer order from the hospital"),
    "stale": N_("the order arrived too late"),
    "transfer": N_("the download stalls; the box keeps asking"),
    "worker_crashed": N_("the analysis crashed"),
    "worker_errors": N_("the analysis kept failing"),
    "unit_failed": N_("a service of the box stopped with an error"),
    "hospital": N_("ordered by the hospital"),
    "technician": N_("by a technician"),
    "trial_passed": N_("the trial went well"),
}
#: where the box stands in a hospital rollout (``contracts/egress.ROLLOUT_STEPS``)
STEPS = {
    "offered": N_("received, not started yet"),
    "downloading": N_("downloading"),
    "downloaded": N_("downloaded"),
    "verified": N_("signature and files checked"),
    "golden_passed": N_("passed its check on known test images"),
    "golden_failed": N_("failed its check on known test images, not installed"),
    "on_trial": N_("installed, on trial"),
    "kept": N_("installed and kept"),
    "rolled_back": N_("rolled back to the previous model"),
    "refused": N_("refused"),
}
#: what kind of order it is (``model_offers.kind``)
KINDS = {"rollout": N_("rollout %(rollout)s"),
         "rollback": N_("rollback order (rollout %(rollout)s)")}

#: The worklist's banner while the box waits for a model (for clinic staff).
WAITING_BANNER = N_("This box has no model it may use yet. Images are received and kept; "
                    "they will be analysed as soon as the hospital sends a model. "
                    "Do not send them again.")


def _word(table: Mapping[str, str], code: str | None) -> str:
    english = table.get(code or "")
    return gettext(english) if english else (code or "").replace("_", " ")


def reason(code: str | None) -> str:
    """A reason code in words ("" for none)."""
    return _word(REASONS, code) if code else ""


def step(code: str | None) -> str:
    """A rollout step in words."""
    return _word(STEPS, code)


def kind(order: Mapping[str, Any]) -> str:
    """"rollout 12" or "rollback order (rollout 12)"."""
    template = KINDS.get(order["kind"])
    if template is None:
        return f"{order['kind']} {order['rollout']}"
    return gettext(template, rollout=order["rollout"])


def outcome(order: Mapping[str, Any]) -> str:
    """The step an order reached, with its reason when it has one: "refused (…)"."""
    said = step(order["step"])
    if not order.get("reason"):
        return said
    return gettext("%(step)s (%(reason)s)", step=said, reason=reason(order["reason"]))


def order_line(order: Mapping[str, Any]) -> str:
    """One order in a line: "rollout 12, lesion@2.0.0: downloading"."""
    return gettext("%(kind)s, %(model)s: %(outcome)s", kind=kind(order),
                   model=order["model_id"], outcome=outcome(order))


def waiting_banner() -> str:
    """What clinic staff read while the box waits for a model."""
    return gettext(WAITING_BANNER)


def held_images(count: int) -> str:
    """"N images received and held until a model is installed"."""
    return ngettext("%(num)s image received and held until a model is installed",
                    "%(num)s images received and held until a model is installed", count)


def study_waiting(count: int) -> str:
    """The study page's note: images of the study that wait for a model."""
    return ngettext("%(num)s image of this study is waiting for a model: it will be analysed "
                    "as soon as the hospital sends one. Do not send it again.",
                    "%(num)s images of this study are waiting for a model: they will be "
                    "analysed as soon as the hospital sends one. Do not send them again.",
                    count)
