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

from clinibox_common.contracts.software_release import is_release
from clinibox_common.i18n import N_, gettext, ngettext

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
    "disagreement": N_("clinicians disagreed with too many of its findings"),
    "score_drift": N_("its confidences on this box drifted too far"),
    # a release of the box's software (``contracts/software_release.EVENT_REASONS``)
    "needs_bundle": N_("it needs the full offline bundle (its components differ)"),
    "database_change": N_("it changes the database: install it from the offline bundle "
                          "after a backup"),
    "config_refused": N_("the new version refuses this box's settings"),
    "build_failed": N_("the new version could not be installed"),
    "service_failed": N_("its services did not start"),
    "selftest_failed": N_("its self-test failed where the version before passed"),
    "boot_interrupted": N_("the box went down during the trial"),
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
#: a rollout of a release of the box's own software (``contracts/software_release.py``)
SOFTWARE_ROLLOUT = N_("software update %(rollout)s")
#: the steps said otherwise for a release of the box's software
SOFTWARE_STEPS = {"rolled_back": N_("tried and taken back by itself")}

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
    """"rollout 12", "rollback order (rollout 12)" or "software update 12"."""
    template = KINDS.get(order["kind"])
    if order["kind"] == "rollout" and is_release(str(order.get("name", ""))):
        template = SOFTWARE_ROLLOUT
    if template is None:
        return f"{order['kind']} {order['rollout']}"
    return gettext(template, rollout=order["rollout"])


def outcome(order: Mapping[str, Any]) -> str:
    """The step an order reached, with its reason when it has one: "refused (…)"."""
    said = (gettext(SOFTWARE_STEPS[order["step"]])
            if is_release(str(order.get("name", ""))) and order["step"] in SOFTWARE_STEPS
            else step(order["step"]))
    if not order.get("reason"):
        return said
    return gettext("%(step)s (%(reason)s)", step=said, reason=reason(order["reason"]))


def order_line(order: Mapping[str, Any]) -> str:
    """One order in a line: "rollout 12, lesion@2.0.0: downloading"."""
    return gettext("%(kind)s, %(model)s: %(outcome)s", kind=kind(order),
                   model=order["model_id"], outcome=outcome(order))


#: a download whose figures are older than this is said to have no news (seconds)
PROGRESS_STALE_SECONDS = 30.0


def _size(count: float) -> str:
    return gettext("%(mb)s MB", mb=f"{count / 1e6:.1f}")


def duration(seconds: float) -> str:
    """"45 s", "12 min", "1 h 5 min"."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return gettext("%(s)s s", s=seconds)
    minutes = round(seconds / 60)
    if minutes < 60:
        return gettext("%(min)s min", min=minutes)
    return gettext("%(h)s h %(min)s min", h=minutes // 60, min=minutes % 60)


def progress(download: Mapping[str, Any], now: float) -> str:
    """A download in a line: "2.3 MB of 4.7 MB (48.9 %), 27 KB/s, about 1 min left"."""
    line = gettext("%(received)s of %(total)s (%(percent)s %%)",
                   received=_size(download["received_bytes"]),
                   total=_size(download["total_bytes"]), percent=download["percent"])
    if download["rate_bps"] > 0:
        line = gettext("%(line)s, %(rate)s KB/s", line=line,
                       rate=f"{download['rate_bps'] / 1000:.1f}")
    if download["seconds_left"] is not None:
        line = gettext("%(line)s, about %(left)s left", line=line,
                       left=duration(download["seconds_left"]))
    if now - download["at"] > PROGRESS_STALE_SECONDS:
        line = gettext("%(line)s; nothing new for %(ago)s", line=line,
                       ago=duration(now - download["at"]))
    return line


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
