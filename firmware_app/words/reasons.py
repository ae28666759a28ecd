"""The box's recorded reasons in the reader's language.

The worker records reasons as codes with parameters
(``clinibox_common/contracts/reasons.py``: the code → English template table, each
template a catalog message id). Here each is rendered in the current language:
the template translated, its parameters filled in. Nothing is parsed: a reason
recorded as text (before codes, or words the box did not write: a decoder's)
is shown as recorded in English, and said from its code in any other language
(:func:`explained`: the recorded words stay on the English pages).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from clinibox_common.contracts.reasons import (
    TEMPLATES,
    VERBATIM,
    Reason,
    ReasonCode,
    from_records,
)
from clinibox_common.i18n import ENGLISH, N_, current, gettext

#: what a reason recorded in someone else's words is, said from its code in the reader's
#: language (its recorded words are shown on the English pages only)
VERBATIM_WORDS: dict[ReasonCode, str] = {
    ReasonCode.DECODE_FAILED: N_("the file cannot be read as an image"),
    ReasonCode.UNKNOWN: N_("a reason recorded in words"),
}


def reason_text(reason: Reason) -> str:
    """One reason in the current language (a verbatim one as recorded)."""
    if reason.code in VERBATIM:
        return TEMPLATES[reason.code] % reason.params
    return gettext(TEMPLATES[reason.code], **reason.params)


def reasons_text(reasons: Iterable[Reason]) -> str:
    """Reasons in the current language, joined by "; " (in that language)."""
    return gettext("; ").join(reason_text(reason) for reason in reasons)


def recorded_text(stored: str | Sequence[object] | None) -> str:
    """A stored value (the encoded list, or ``records()``) in the current language."""
    return reasons_text(from_records(stored))


def verbatim(reasons: Iterable[Reason]) -> bool:
    """Whether the text shown holds words not in the reader's language (recorded as they
    are: a decoder's, or text recorded before codes); never in English."""
    return current() != ENGLISH and any(r.code in VERBATIM for r in reasons)


def explained(reasons: Iterable[Reason]) -> str:
    """Reasons to show in the reader's language: outside English a reason in someone else's
    words (a decoder's) is said from its code only (its recorded words are on the English
    pages and in ``--json``)."""
    reasons = list(reasons)
    if not verbatim(reasons):
        return reasons_text(reasons)
    return gettext("; ").join(
        gettext(VERBATIM_WORDS[r.code]) if r.code in VERBATIM else reason_text(r)
        for r in reasons)


def explained_text(stored: str | Sequence[object] | None) -> str:
    """A stored value for a terminal in the reader's language (:func:`explained`)."""
    return explained(from_records(stored))
