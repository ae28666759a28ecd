"""The console's words for stored values (states, verdicts, delivery, roles, assessments,
classes, events, audit actions), translated where they are shown; the stored words never
change with the language.

The words the box's own pages show come from the contracts both sides import, so a
verdict or a class reads the same on the box and in the console: verdicts with their
months (``contracts/downlink.verdict_words``), classes (``contracts/class_words``),
assessments (``contracts/assessment_words``), the whole image's probability and a lesion's
model confidence with their percentages (``contracts/probability_words``:
:data:`whole_image`, :data:`probability`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from central.audit_witness import ALARMS
from clinibox_common.contracts import probability_words
from clinibox_common.contracts.assessment_words import ASSESSMENT_WORDS
from clinibox_common.contracts.class_words import class_words
from clinibox_common.contracts.clinic_threshold import ThresholdState
from clinibox_common.contracts.downlink import verdict_words
from clinibox_common.contracts.manifest import is_demo_model
from clinibox_common.i18n import ENGLISH, N_, current, formats, gettext, ngettext

STATES = {"new": N_("new"), "under_review": N_("under review"), "reviewed": N_("reviewed"),
          "open": N_("waiting (new or under review)"), "all": N_("all")}
#: where a verdict stands on its way to the box (``queries.delivery``)
DELIVERY = {
    "confirmed": N_("confirmed by the box"),
    "sent": N_("sent to the box"),
    "unconfirmed": N_("sent, not yet confirmed by the box"),
    "queued": N_("queued: goes out with the next send"),
    "no_key": N_("cannot be delivered yet: the box's software is too old or it has not "
                 "connected; tell the clinic by phone"),
    "waiting": N_("waiting: the box is out of contact")}
ROLES = {"radiologist": N_("radiologist"), "admin": N_("administrator")}
HEALTH = {"all": N_("all"), "stale": N_("out of contact"), "drift": N_("drifting"),
          "queue": N_("queue backlog"), "disk": N_("disk nearly full"), "ok": N_("healthy")}
#: a box's state as it reported it (``contracts/egress.STATES``); a heartbeat means online;
#: an ``offline`` that is the restart loading a model just installed or gone back to
#: (``box_story.restart``) is said as such
BOX_STATES = {"online": N_("online"), "heartbeat": N_("online"), "offline": N_("offline"),
              "stale": N_("out of contact"),
              "restart_install": N_("restarting to install a model"),
              "restart_rollback": N_("restarting to go back to the earlier model")}
#: the hospital's verdict on a box's audit-trail head (``central/audit_witness.VERDICTS``)
AUDIT_VERDICTS = {"first": N_("first report"),
                  "extends": N_("continues the trail the hospital saw"),
                  "rewritten": N_("rewritten since the last report"),
                  "rewound": N_("shorter than the hospital saw"),
                  "gap": N_("a report is missing before it"),
                  "pruned_early": N_("rows the hospital saw were deleted before keep_days "
                                     "ended")}
#: what the receiver made of a message (``central/receiver.OUTCOMES``): a dead letter's reason
OUTCOMES = {"stored": N_("stored"), "duplicate": N_("already received"),
            "bad-topic": N_("unknown topic"), "malformed": N_("unreadable message"),
            "unknown-device": N_("box not enrolled"), "revoked": N_("enrolment revoked"),
            "topic-mismatch": N_("sent under another box's name"),
            "bad-signature": N_("bad signature"),
            "undecryptable": N_("cannot be decrypted with the hospital's key"),
            "schema": N_("fields not as agreed"), "too-old": N_("arrived too late"),
            "from-the-future": N_("dated in the future"),
            "internal-error": N_("the receiver failed on it"),
            "too-big": N_("too large to be a message")}
#: an alert's priority on the worklist (``queries.priority``), in the worklist's order
PRIORITIES = {"overdue": N_("urgent: waiting too long"), "high": N_("high"),
              "normal": N_("routine")}
#: what happened to a box (``contracts/egress.EVENTS``)
EVENTS = {"model_installed": N_("new model installed"),
          "model_refused": N_("model package refused"),
          "model_rolled_back": N_("model rolled back"),
          "runtime_fallback": N_("inference runtime fell back"),
          "service_failed": N_("service failure"),
          "model_unavailable": N_("model unavailable"),
          "model_kept": N_("new model kept after its trial"),
          "model_drift": N_("model drifting: a person decides whether to roll it back"),
          "rollout": N_("model rollout")}
#: why it happened (``contracts/egress.EVENT_REASONS``)
EVENT_REASONS = {"technician": N_("by a technician"), "signature": N_("bad signature"),
                 "tampered": N_("package tampered with"), "invalid": N_("invalid package"),
                 "older_version": N_("older than the installed version"),
                 "golden_cases_failed": N_("golden cases failed"),
                 "load_failed": N_("load failed"), "worker_crashed": N_("worker crashed"),
                 "worker_errors": N_("worker errors"), "unit_failed": N_("system service failed"),
                 "not_installed": N_("not installed"), "hospital": N_("by the hospital"),
                 "trial_passed": N_("trial passed"),
                 "disagreement": N_("clinicians disagreed with too many of its findings"),
                 "score_drift": N_("its confidences on the box drifted too far"),
                 "no_space": N_("not enough disk space"),
                 "transfer": N_("the download stalls; the box keeps asking"),
                 "replaced": N_("replaced by a newer rollout"),
                 "stale": N_("arrived too late"),
                 # a release of the box's software, refused or taken back by the box
                 "needs_bundle": N_("needs the full offline bundle (its components differ)"),
                 "database_change": N_("changes the database: install it from the offline "
                                       "bundle after a backup"),
                 "config_refused": N_("the new version refuses the box's settings"),
                 "build_failed": N_("the new version could not be installed"),
                 "service_failed": N_("its services did not start on the box"),
                 "selftest_failed": N_("its self-test failed where the version before "
                                       "passed: the box went back by itself"),
                 "boot_interrupted": N_("the box went down during the trial and went back")}
#: the console's audit actions (``console_audit.action``)
ACTIONS = {"login": N_("login"), "login_failed": N_("login failed"),
           "login_throttled": N_("login throttled"), "logout": N_("logout"),
           "alert_opened": N_("review started"), "alert_reviewed": N_("verdict given"),
           "account_added": N_("account added"), "password_changed": N_("password changed"),
           "account_removed": N_("account removed"), "rollout_started": N_("rollout started"),
           "rollout_paused": N_("rollout held"), "rollout_resumed": N_("rollout resumed"),
           "rollback_sent": N_("rollback sent"),
           "drift_decision": N_("decision on a drifting box")}
#: A model rollout's words, in one table (``central/rollouts.py``): the rollout's states and
#: why it stopped, each box's steps, and the reasons the hospital's side gives; a box's own
#: reasons (``contracts/egress.EVENT_REASONS``) are :data:`EVENT_REASONS`'.
ROLLOUT_WORDS = {
    # the rollout's state
    "active": N_("in progress"), "paused": N_("on hold"), "done": N_("finished"),
    "rolled_back": N_("rolled back"),
    # why it was paused or stopped
    "canary_failed": N_("a canary box failed"), "failure": N_("a box failed"),
    "held": N_("held by a person"), "by_person": N_("by a person"),
    # each box's step
    "waiting": N_("waiting for its wave"), "sent": N_("offer sent"),
    "offered": N_("offer received"), "downloading": N_("downloading"),
    "downloaded": N_("downloaded"), "verified": N_("package verified"),
    "golden_passed": N_("golden cases passed"), "on_trial": N_("installed, on trial"),
    "kept": N_("installed and kept"), "refused": N_("refused the package"),
    "golden_failed": N_("golden cases failed"),
    "timed_out": N_("no answer in time"), "revoked": N_("enrolment revoked"),
    # a box's step after a rollback order (the target's ``rollback_seq``)
    "rollback_sent": N_("rollback ordered")}
#: the fixed details of audit rows (others are shown as written)
DETAILS = {"wrong password": N_("wrong password"),
           "unknown account name": N_("unknown account name")}
#: who did it when not a console account (``clinibox central user`` writes ``cli``)
ACTORS = {"cli": N_("server command line")}


def _word(table: dict[str, str], value: object) -> str:
    text = table.get(str(value))
    return gettext(text) if text else str(value or "–")


def state(value: object) -> str:
    """An alert state (or the worklist's state filter) in the reader's language."""
    return _word(STATES, value)


def verdict(value: object, months: int | None = None) -> str:
    """A hospital verdict in the reader's language, a follow-up with its months (the box's
    pages say the same: ``contracts/downlink.verdict_words``)."""
    return verdict_words(str(value), months) if value else "–"


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
    return _word(ASSESSMENT_WORDS, value)


def finding(value: object) -> str:
    """A model's class (``lesion``, ``nodule`` …) in the words of the box's viewer."""
    return class_words(str(value)) if value else "–"


def box_state(value: object, stale: bool, restart: object = None) -> str:
    """A box's state: ``out of contact`` when it has been silent too long, whatever it
    last reported; a restart for a model (``restart``: ``install`` or ``rollback``,
    ``box_story.restart``) as such; else what it reported (a heartbeat is ``online``)."""
    if stale:
        return _word(BOX_STATES, "stale")
    return _word(BOX_STATES, f"restart_{restart}" if restart else value)


def priority(value: object) -> str:
    """An alert's priority on the worklist in words ("" for a reviewed alert: none)."""
    return _word(PRIORITIES, value) if value else ""


def audit_head(row: object, verdict: object) -> str:
    """A box's audit-trail head as the hospital witnessed it: "row 52, continues the trail
    the hospital saw" ("–" before the box reported one)."""
    if row is None:
        return "–"
    if not verdict:
        return gettext("row %(row)s", row=row)
    return gettext("row %(row)s, %(verdict)s", row=row, verdict=_word(AUDIT_VERDICTS, verdict))


def audit_verdict(value: object) -> str:
    """The hospital's verdict on a box's audit-trail head, in words."""
    return _word(AUDIT_VERDICTS, value)


def outcome(value: object) -> str:
    """What the receiver made of a message (``central/receiver.OUTCOMES``, a dead letter's
    reason) in words."""
    return _word(OUTCOMES, value)


def is_audit_alarm(verdict: object) -> bool:
    """Whether an audit head's verdict is one a person must look at."""
    return str(verdict) in ALARMS


def age(seconds: float) -> str:
    """A duration in rough words (the box's own: ``12 s``, ``5 min``, ``3 h``, ``2 days``)."""
    if seconds < 90:
        return gettext("%(n)s s", n=max(0, round(seconds)))
    if seconds < 5400:
        return gettext("%(n)s min", n=round(seconds / 60))
    if seconds < 172800:
        return gettext("%(n)s h", n=round(seconds / 3600))
    return ngettext("%(num)d day", "%(num)d days", round(seconds / 86400))


def as_of(epoch: object, now: float | None = None) -> str:
    """How old a figure the box reported is: "as of 3 min ago" ("" when unknown)."""
    if not isinstance(epoch, (int, float)) or isinstance(epoch, bool):
        return ""
    now = time.time() if now is None else now
    return gettext("as of %(age)s ago", age=age(max(0.0, now - float(epoch))))


def ago(epoch: object, now: float | None = None) -> str:
    """How old a figure is, short, for a list: "3 min ago" ("" when unknown)."""
    if not isinstance(epoch, (int, float)) or isinstance(epoch, bool):
        return ""
    now = time.time() if now is None else now
    return gettext("%(age)s ago", age=age(max(0.0, now - float(epoch))))


def event(value: object, reason: object = None, step: object = None) -> str:
    """A box's event with its reason in words: "model rolled back (load failed)"; a
    rollout's event with the box's step: "model rollout: downloading"."""
    if not value:
        return "–"
    words = _word(EVENTS, value).replace("_", " ")
    if step and str(step) in ROLLOUT_WORDS:
        words = gettext("%(event)s: %(step)s", event=words, step=_word(ROLLOUT_WORDS, step))
        if reason == "hospital":  # every step of the hospital's rollout is the hospital's
            return words
    if reason:  # the reader's brackets: "（…）" in Chinese
        words = gettext("%(event)s (%(reason)s)", event=words,
                        reason=_word(EVENT_REASONS, reason).replace("_", " "))
    return words


def rollout_state(value: object, reason: object = None) -> str:
    """A rollout's state with why it is so: "on hold (a canary box failed)"."""
    words = _word(ROLLOUT_WORDS, value)
    if reason and str(reason) in ROLLOUT_WORDS:
        words = gettext("%(event)s (%(reason)s)", event=words, reason=_word(ROLLOUT_WORDS,
                                                                             reason))
    return words


def rollout_step(value: object, rollback_seq: object = None) -> str:
    """Where a box stands in a rollout, in words ("rollback ordered" once one was sent and
    the box has not reported it yet)."""
    if rollback_seq is not None and str(value) != "rolled_back":
        return _word(ROLLOUT_WORDS, "rollback_sent")
    return _word(ROLLOUT_WORDS, value)


def rollout_reason(value: object) -> str:
    """Why a box refused or left a rollout, in words ("" when none)."""
    if not value:
        return ""
    text = str(value)
    return _word(ROLLOUT_WORDS if text in ROLLOUT_WORDS else EVENT_REASONS, text)


def rollout_where(step: object, reason: object = None, rollback_seq: object = None) -> str:
    """A box's step with its reason where that says more: "refused the package (bad
    signature)"."""
    words, why = rollout_step(step, rollback_seq), rollout_reason(reason)
    return gettext("%(event)s (%(reason)s)", event=words, reason=why) \
        if why and why != words else words


def rollout_unseen(target: Mapping[str, Any]) -> str:
    """What a box that says it installed a rollout's package waits for while its status does
    not show it runs it (``rollouts.seen``); "" when nothing."""
    if target.get("step") not in ("on_trial", "kept") or target.get("seen"):
        return ""
    package, running = target.get("package"), target.get("running")
    if not running:
        return gettext("waiting until the box reports it runs %(package)s", package=package)
    if running == package:
        return gettext("waiting: the box reports %(package)s, but not this package's manifest",
                       package=package)
    return gettext("waiting until the box reports it runs %(package)s (it reports "
                   "%(running)s)", package=package, running=running)


def rollout_steps(counts: Mapping[str, int]) -> list[str]:
    """A rollout's boxes counted by step, in words and in the steps' order: "installed, on
    trial: 2"."""
    order = list(ROLLOUT_WORDS)
    ranked = sorted(counts.items(), key=lambda item: order.index(item[0])
                    if item[0] in order else len(order))
    return [gettext("%(step)s: %(n)s", n=n, step=rollout_step(step)) for step, n in ranked if n]


def action(value: object) -> str:
    """An audit action of the console in words."""
    return _word(ACTIONS, value).replace("_", " ")


def actor(value: object) -> str:
    """Who did it: the account's name, or "server command line" for ``cli``."""
    return _word(ACTORS, value)


#: an audit row's detail of no known shape that holds English words, outside English
RECORDED_IN_ENGLISH = N_("(recorded in English only: see the English page)")
#: words in a row (two or more): a sentence, not data (an id, a name)
_SENTENCE = re.compile(r"[A-Za-z]{2,}[ ,;:()]+[A-Za-z]{2,}")


def detail(action_word: object, value: object) -> str:
    """An audit row's detail in words: a verdict, a role or a fixed reason, else as written
    when it is data (a number, a name) or the page is in English, else
    :data:`RECORDED_IN_ENGLISH`."""
    said = _detail(action_word, value)
    if said == str(value or "") and current() != ENGLISH and _SENTENCE.search(said):
        return gettext(RECORDED_IN_ENGLISH)
    return said


def _detail(action_word: object, value: object) -> str:
    text = str(value or "")
    if not text:
        return ""
    if action_word == "alert_reviewed":  # "follow_up:6" (central/reviews.py), or just "refer"
        word, _, months = text.partition(":")
        return verdict(word, int(months) if months.isdigit() and len(months) < 4 else None)
    if action_word in ("login", "account_added") and text in ROLES:
        return role(text)
    if action_word == "login_throttled" and text.startswith("wait ") and text.endswith(" s"):
        return gettext("wait %(seconds)s s", seconds=text[5:-2])
    if action_word in ("rollout_started", "rollback_sent", "drift_decision"):
        return rollout_detail(str(action_word), text)
    return gettext(DETAILS[text]) if text in DETAILS else text


#: what a person decided for a drifting box (``drift_decision`` rows: "hold_rollout:3")
DRIFT_DECISIONS = {"hold_rollout": N_("held rollout %(id)s"),
                   "rollback_box": N_("rolled the box back from rollout %(id)s")}
#: the buttons of a drift proposal (``queries.drift_proposal``)
DRIFT_ACTIONS = {"hold_rollout": N_("Hold the rollout"),
                 "rollback_box": N_("Roll this box back")}
_STARTED = re.compile(r"(\S{1,200}) to (\d{1,9}) boxes")
_ROLLBACK = re.compile(r"rollout (\d{1,19}): (\S{1,200})")


def drift_action(value: object) -> str:
    """A drift proposal's button in words."""
    return _word(DRIFT_ACTIONS, value)


def rollout_detail(action_word: str, text: str) -> str:
    """The detail of a rollout's audit row in words (``central/rollouts.py`` writes
    "name@version to 3 boxes" and "rollout 3: name@version"); else as written."""
    if action_word == "drift_decision":
        word, _, rollout_id = text.partition(":")
        if word in DRIFT_DECISIONS and rollout_id.isdigit():
            return gettext(DRIFT_DECISIONS[word], id=rollout_id)
    elif (started := _STARTED.fullmatch(text)) is not None:
        return gettext("%(package)s to %(n)s boxes", package=started[1], n=started[2])
    elif (back := _ROLLBACK.fullmatch(text)) is not None:
        return gettext("rollout %(id)s: %(package)s", id=back[1], package=back[2])
    return text


def target_alert(target: object) -> int | None:
    """The alert an audit row is about (``alert:42``), or None."""
    text = str(target or "")
    if text.startswith("alert:") and text[6:].isdigit() and len(text) < 26:
        return int(text[6:])
    return None


def target_name(target: object) -> str:
    """An audit row's target as a reader names it: the account's name for ``account:x``."""
    text = str(target or "")
    return text.removeprefix("account:")


def target_box(target: object) -> tuple[str, str] | None:
    """The box an audit row is about (``box:CLINIC/DEVICE``) as (clinic, device), or None."""
    text = str(target or "")
    clinic, slash, device = text.removeprefix("box:").partition("/")
    if not text.startswith("box:") or not slash or not clinic or not device or "/" in device:
        return None
    return clinic, device


def target_rollout(target: object) -> int | None:
    """The rollout an audit row is about (``rollout:2``), or None."""
    text = str(target or "")
    if text.startswith("rollout:") and text[8:].isdigit() and len(text) < 28:
        return int(text[8:])
    return None


def box_words(clinic: object, device: object) -> str:
    """A box named in words: "box box-1 of clinic qingshan-1"."""
    return gettext("box %(device)s of clinic %(clinic)s", device=device, clinic=clinic)


def disk(used_pct: float | None) -> str:
    """A disk's use (stored in percent, 0–100) in the format of the scores: ``60 %`` / ``60%``."""
    return formats.percent(None if used_pct is None else float(used_pct) / 100)


#: a probability (0 … 1) as the box's pages write it: ``87%``, ``>99%``
probability = probability_words.percent
#: the whole image's probability in the study page's sentence: "Whole image: >99%, the
#: most suspicious of 3 images analysed"
whole_image = probability_words.whole_image

#: whether the model is the demo's (trained on phantoms: the page must say so)
is_demo = is_demo_model


def any_demo(rows: Iterable[Mapping[str, Any]]) -> bool:
    """Whether any row's ``model`` is the demo's (the table then says what "demo" means)."""
    return any(is_demo(row.get("model")) for row in rows)


def runtime(name: object, fallback: object) -> str:
    """The runtime a box's model runs on, and whether it is a fallback ("–" when unknown)."""
    if not name:
        return "–"
    if fallback:
        return gettext("%(runtime)s (a fallback: the first choice failed its golden cases)",
                       runtime=name)
    return str(name)


def finding_threshold(box: Mapping[str, Any]) -> str:
    """The finding threshold a box uses, and where it comes from ("–" when it reports none:
    an older box, or one that runs no model)."""
    finding, package = box.get("finding_threshold"), box.get("package_threshold")
    state = box.get("threshold_state")
    if not isinstance(finding, (int, float)) or not isinstance(package, (int, float)):
        return "–"
    lesions, clear = int(box.get("threshold_lesions") or 0), int(box.get("threshold_clear") or 0)
    if state in (ThresholdState.CALIBRATED, ThresholdState.BOUNDED):
        words = gettext("%(finding)s, this clinic's own: set from %(lesions)s confirmed lesions "
                        "and %(clear)s confirmed clear images (the package's: %(package)s)",
                        finding=f"{finding:.3f}", lesions=lesions, clear=clear,
                        package=f"{package:.3f}")
        if state == ThresholdState.BOUNDED:
            words += gettext("; held at a bound (the package's own threshold, the most it may "
                             "move, the alert threshold or the package's sensitivity floor)")
        return words
    if state == ThresholdState.TOO_FEW_CASES:
        return gettext("%(package)s, the package's: too few confirmed cases for the clinic's "
                       "own so far (%(lesions)s lesions, %(clear)s clear images)",
                       package=f"{package:.3f}", lesions=lesions, clear=clear)
    return gettext("%(package)s, the package's", package=f"{package:.3f}")
