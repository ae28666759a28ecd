"""The clinic's worklist (its appointment list) in words: where it stands and why it is down,
the same sentences on the device page, in ``clinibox status`` and in ``clinibox selftest``."""

from __future__ import annotations

from clinibox_common.i18n import N_, gettext, ngettext
from firmware_app.storage.worklist import WorklistState

#: why the worklist is down, by ``storage.worklist.DOWN_REASONS`` code
DOWN_WORDS = {
    "unreachable": N_("no connection (check its address, its port and the network)"),
    "refused": N_("it refused the box (the worklist must know the box's AE title)"),
    "failed": N_("it answered the question with an error"),
    "timeout": N_("it did not answer in time"),
    "bad_answer": N_("its answer could not be read"),
}


def down_reason(reason: str) -> str:
    """Why the worklist is down, in the reader's language (an unknown code: it failed)."""
    return gettext(DOWN_WORDS.get(reason, DOWN_WORDS["failed"]))


def answering(count: int) -> str:
    """It answers, with today's appointments."""
    return ngettext("answering: %(num)s appointment today",
                    "answering: %(num)s appointments today", count)


def not_answering(reason: str) -> str:
    """It does not answer, and why."""
    return gettext("not answering: %(why)s", why=down_reason(reason))


def state_text(state: str, reason: str, count: int) -> str:
    """Where it stands (a ``WorklistState`` code) as one phrase."""
    if state == WorklistState.OK.value:
        return answering(count)
    if state == WorklistState.DOWN.value:
        return not_answering(reason)
    return gettext("not asked yet")
