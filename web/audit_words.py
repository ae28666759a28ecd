"""The detail of a row of the box's audit trail in the reader's language.

The trail keeps each row's detail as written (``storage/audit.py``: English words and codes,
part of the hash chain, never changed). The audit page shows it as written in English; in any
other language it says each known shape in words (:data:`SHAPES`, by action), keeps only the
data in it (ids, names, a model id) as they are, and says of an unknown detail that holds
English words :data:`RECORDED_IN_ENGLISH` instead of the words.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from markupsafe import Markup

from clinibox_common.contracts.clinic_threshold import THRESHOLD_STATE_WORDS
from clinibox_common.i18n import ENGLISH, N_, current, gettext
from firmware_app.words import labels
from firmware_app.words import model_update_words as model_words

#: an unknown detail with English words in it, outside English
RECORDED_IN_ENGLISH = N_("(recorded in English only: see the English page)")
#: words in a row (two or more): a sentence, not data
_SENTENCE = re.compile(r"[A-Za-z]{2,}[ ,;:()]+[A-Za-z]{2,}")
_NUMBER = r"(\d{1,19})"
_NAME = r"(\S{1,200})"


def _frame(match: re.Match[str]) -> str:
    return gettext("frame %(n)s", n=match[1])


def _filters(text: str, first: tuple[str, ...]) -> str:
    """``status alert, day 2026-11-20, page 2`` / ``since …, account carl`` in words."""
    names = {"status": N_("list %(value)s"), "day": N_("day %(value)s"),
             "page": N_("page %(value)s"), "since": N_("from %(value)s"),
             "until": N_("until %(value)s"), "account": N_("account %(value)s"),
             "action": N_("action %(value)s")}
    said = []
    for part in text.split(", "):
        name, _, value = part.partition(" ")
        if name not in names or not value or name not in first:
            return ""
        if name == "status":
            value = labels.worklist_filter(value)
        elif name == "action":
            value = labels.action(value)
        said.append(gettext(names[name], value=value))
    return gettext(", ").join(said)


#: what each action's detail looks like (a pattern over the whole detail) and its words
SHAPES: dict[str, list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]]] = {
    "login_failed": [
        (re.compile("wrong password"), lambda m: gettext("wrong password")),
        (re.compile("unknown account name"), lambda m: gettext("unknown account name"))],
    "login_throttled": [(re.compile(rf"wait {_NUMBER} s"),
                         lambda m: gettext("wait %(seconds)s s", seconds=m[1]))],
    "login": [(re.compile(r"(\w+)"), lambda m: labels.role(m[1]))],
    "study_view": [(re.compile(rf"instance {_NUMBER}"),
                    lambda m: gettext("image %(id)s", id=m[1]))],
    "dicomweb_retrieve": [(re.compile(rf"{_NUMBER} objects"),
                           lambda m: gettext("%(n)s objects", n=m[1])),
                          (re.compile(rf"{_NUMBER} headers"),
                           lambda m: gettext("%(n)s headers", n=m[1])),
                          (re.compile(rf"{_NUMBER} frames"),
                           lambda m: gettext("%(n)s frames", n=m[1]))],
    "image_view": [(re.compile(rf"frame {_NUMBER}"), _frame),
                   (re.compile("heatmap"), lambda m: gettext("heatmap")),
                   (re.compile("key image"), lambda m: gettext("key image"))],
    "feedback": [(re.compile(rf"finding {_NUMBER}: (\w+)"), lambda m: gettext(
        "finding %(n)s: %(verdict)s", n=m[1], verdict=labels.verdict(m[2])))],
    "report_download": [(re.compile("PDF"), lambda m: "PDF")],
    "live_view": [(re.compile(rf"session {_NUMBER}"),
                   lambda m: gettext("session %(id)s", id=m[1]))],
    "live_session_started": [
        (re.compile(rf"source {_NAME} \(from a worklist study\)"),
         lambda m: gettext("source %(name)s (from a worklist study)", name=m[1])),
        (re.compile(rf"source {_NAME}"), lambda m: gettext("source %(name)s", name=m[1]))],
    "live_session_ended": [(re.compile(rf"source {_NAME}"),
                            lambda m: gettext("source %(name)s", name=m[1]))],
    "live_keep_requested": [
        (re.compile(rf"(\w+) at frame {_NUMBER}"), lambda m: gettext(
            "%(what)s at frame %(n)s", what=labels.live_kept(m[1]), n=m[2])),
        (re.compile(r"(\w+)"), lambda m: labels.live_kept(m[1]))],
    "export": [(re.compile(rf"export {_NUMBER}: {_NUMBER} file\(s\) to (.{{1,300}})"),
                lambda m: Markup(gettext(  # our words, digits and the escaped path
                    "export %(id)s: %(n)s file(s) to %(target)s", id=m[1], n=m[2],
                    target=Markup('<span translate="no">%s</span>') % m[3])))],
    "quarantine_requeued": [(re.compile(r"(\w+): .*", re.S),
                             lambda m: gettext("was %(status)s", status=labels.status(m[1])))],
    "quarantine_deleted": [(re.compile(r"(\w+): .*", re.S),
                            lambda m: gettext("was %(status)s", status=labels.status(m[1])))],
    "account_created": [(re.compile(r"role (\w+)"), lambda m: labels.role(m[1]))],
    "account_removed": [(re.compile(r"role (\w+)"), lambda m: labels.role(m[1]))],
    "password_changed": [(re.compile(rf"{_NUMBER} session\(s\) ended"), lambda m: gettext(
        "%(n)s session(s) ended", n=m[1]))],
    "model_installed": [(re.compile(rf"was {_NAME}; .*", re.S), lambda m: gettext(
        "replaced %(model)s; checked on its test images", model=m[1]))],
    "model_refused": [(re.compile(r"([a-z_]+): .*", re.S),
                       lambda m: model_words.reason(m[1]))],
    "model_rolled_back": [(re.compile(rf"from {_NAME} \((\w+)\)"), lambda m: gettext(
        "from %(model)s (%(reason)s)", model=m[1], reason=model_words.reason(m[2])))],
    "model_kept": [(re.compile(rf"trial passed after {_NUMBER} analyses"), lambda m: gettext(
        "trial passed after %(n)s analyses", n=m[1]))],
    "model_drift": [(re.compile(r"(\w+)"), lambda m: model_words.reason(m[1]))],
    "threshold_set": [(re.compile(
        rf"finding ([0-9.]+) -> ([0-9.]+) \((\w+); {_NUMBER} lesions, {_NUMBER} clear\)"),
        lambda m: gettext("finding threshold %(was)s → %(now)s (%(state)s; %(lesions)s "
                          "confirmed lesions, %(clear)s confirmed clear images)", was=m[1],
                          now=m[2], state=gettext(THRESHOLD_STATE_WORDS.get(m[3], m[3])),
                          lesions=m[4], clear=m[5]))],
    "model_rollout_received": [
        (re.compile(rf"rollout {_NUMBER}; (\w+)"), lambda m: gettext(
            "rollout %(id)s (%(reason)s)", id=m[1], reason=model_words.reason(m[2]))),
        (re.compile(rf"rollout {_NUMBER}"), lambda m: gettext("rollout %(id)s", id=m[1]))],
    "hospital_review_received": [(re.compile(r"(\w+)"),
                                  lambda m: labels.hospital_verdict(m[1], None))],
    "audit_pruned": [(re.compile(rf"{_NUMBER} row\(s\) from before (\S+) .*", re.S),
                      lambda m: gettext("%(n)s row(s) from before %(day)s", n=m[1], day=m[2]))],
}
SHAPES["model_rollback_received"] = SHAPES["model_rollout_received"]


#: what a row is about (``kind:id``, ``storage/audit.py``): its kind in words
TARGETS = {"study": N_("study"), "instance": N_("image"), "object": N_("image"),
           "account": N_("account"), "model": N_("model"), "package": N_("model package"),
           "live": N_("live source"), "live_session": N_("live session"),
           "worklist": N_("worklist"), "audit": N_("audit trail")}


#: who acts when nobody logged in does (``storage/audit.py``), and where from
ACTORS = {"system:service": N_("the box itself"),
          "system:retention": N_("the box's clean-up of old images")}
ADDRESSES = {"local": N_("this box")}


def account(text: str | None) -> str:
    """Who acted: an account's name as recorded; the box itself, or a command typed on it
    (``cli:<unix user>``), in words outside English."""
    text = text or ""
    if current() == ENGLISH:
        return text
    if text in ACTORS:
        return gettext(ACTORS[text])
    if text.startswith("cli:"):
        return gettext("command line (%(user)s)", user=text[4:])
    return text


def address(text: str | None) -> str:
    """Where from: an address as recorded; the box's own console in words outside English."""
    text = text or ""
    return gettext(ADDRESSES[text]) if text in ADDRESSES and current() != ENGLISH else text


def target(text: str | None) -> tuple[str, str]:
    """What a row is about: (its kind in words, its id as recorded); ("", the target as
    recorded) in English or for an unknown kind."""
    text = text or ""
    kind, _, name = text.partition(":")
    if current() == ENGLISH or kind not in TARGETS:
        return "", text
    return gettext(TARGETS[kind]), name


def detail(action: str, text: str | None) -> tuple[str, bool]:
    """A row's detail to show, and whether it is shown as written (data, or English in
    English: the page marks it so) rather than in words."""
    text = text or ""
    if current() == ENGLISH or not text:
        return text, True
    if action in ("worklist_view", "audit_viewed"):
        said = _filters(text, ("status", "day", "page") if action == "worklist_view" else
                        ("since", "until", "account", "action"))
        if said:
            return said, False
        if text == "all rows":
            return gettext("all rows"), False
    for pattern, words in SHAPES.get(action, ()):
        match = pattern.fullmatch(text)
        if match is not None:
            return words(match), False
    if _SENTENCE.search(text):
        return gettext(RECORDED_IN_ENGLISH), False
    return text, True
