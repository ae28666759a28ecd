"""The last update of the box's own software in the reader's language.

``clinibox software apply`` (root) keeps how an update ended in
``/var/lib/clinibox-software/outcome.json``, with codes (``ops/software_update.py``); the
device page and ``clinibox software status`` say it with these words, never the code or the
updater's English detail.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clinibox_common.i18n import N_, formats, gettext

#: where root's updater keeps its state (fixed, as ``/opt/clinibox`` is)
STATE_DIR = Path("/var/lib/clinibox-software")

OUTCOMES = {
    "kept": N_("version %(release)s installed, its self-test passed, and kept"),
    "reverted": N_("version %(release)s was tried and taken back by itself: %(reason)s; "
                   "the box runs %(running)s again"),
    "refused": N_("update %(release)s refused: %(reason)s; the box still runs %(running)s"),
}
REASONS = {
    "service_failed": N_("its services did not start"),
    "selftest_failed": N_("its self-test failed where the version before passed"),
    "boot_interrupted": N_("the box went down during the trial"),
    "not_a_release": N_("the file is not a software update of clinibox"),
    "signature": N_("it is not signed by a key this box trusts"),
    "tampered": N_("its files are not the ones that were signed"),
    "not_newer": N_("it is not newer than the version the box runs"),
    "needs_bundle": N_("it needs the full offline bundle (its components differ)"),
    "database_change": N_("it changes the database: install it from the offline bundle "
                          "after a backup"),
    "config_refused": N_("the new version refuses this box's settings"),
    "no_space": N_("too little free disk space"),
    "not_installed": N_("this box was not installed with install.sh"),
    "build_failed": N_("the new version could not be installed"),
}


def read_outcome(state_dir: Path | None = None) -> dict[str, Any] | None:
    """The last update's outcome as kept (in ``state_dir``, else :data:`STATE_DIR`), or None
    (none yet, or unreadable)."""
    folder = STATE_DIR if state_dir is None else state_dir
    try:
        document = json.loads((folder / "outcome.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def outcome_sentence(outcome: dict[str, Any]) -> str:
    """How the last update ended, in words (its time said apart)."""
    template = OUTCOMES.get(str(outcome.get("outcome")))
    if template is None:
        return gettext(N_("an update ended in a way this version does not know"))
    reason = REASONS.get(str(outcome.get("reason")))
    return gettext(template, release=str(outcome.get("release") or "–"),
                   running=str(outcome.get("running") or "–"),
                   reason=gettext(reason) if reason else gettext(N_("no reason given")))


def outcome_time(outcome: dict[str, Any]) -> str:
    """When the last update ended, in the reader's format ("" when not known)."""
    at = outcome.get("at")
    return formats.moment(float(at)) if isinstance(at, (int, float)) else ""
