"""The box's recorded reasons in the reader's language.

The worker writes its reasons in English into the database (quality
warnings, why an image was not assessable, outside the validated range or not
analysed); they are the record, and the hospital and the logs read them as
they are. The viewer shows them translated: each known sentence (its English
text fixed in ``firmware_app/imaging/quality.py``, ``inference/hotspot.py``,
``inference/validated_range.py``, ``models/routing.py``; the tests hold the
two sides together) is recognised here, its numbers and names kept. A reason
not recognised is None from ``translate`` and shown as recorded.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from firmware_app.i18n import ENGLISH, N_, current, gettext

#: quality warnings by code: the worker's English message (fixed sentences)
QUALITY_MESSAGES = {
    "blank": N_("image is blank, rescan suggested"),
    "too_dark": N_("image too dark, rescan suggested"),
    "saturated": N_("image saturated, check exposure"),
    "low_contrast": N_("low contrast, check window/exposure"),
    "heatmap_on_annotation": N_(
        "the heatmap's hot spot lies on burned-in text or a ruler, not on tissue: "
        "look at the marked area yourself"),
}
_FIXED = frozenset(QUALITY_MESSAGES.values())

#: reasons with numbers or names in them: pattern -> its translation with those filled in
_PATTERNS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"image too small for reliable reading \((\d+) x (\d+) pixels\)"),
     lambda m: gettext("image too small for reliable reading (%(columns)s x %(rows)s pixels)",
                       columns=m[1], rows=m[2])),
    (re.compile(r"The image is unlike the images this model was validated on \(its features "
                r"lie ([0-9.]+)× beyond the validated limit\); the model's answer cannot be "
                r"trusted for it"),
     lambda m: gettext("The image is unlike the images this model was validated on (its "
                       "features lie %(ratio)s× beyond the validated limit); the model's answer "
                       "cannot be trusted for it", ratio=m[1])),
    (re.compile(r"modality (\S+) is not one the model (\S+) accepts \((.*)\)"),
     lambda m: gettext("modality %(modality)s is not one the model %(model)s accepts "
                       "(%(accepted)s)", modality=m[1], model=m[2], accepted=m[3])),
    (re.compile(r"no routing rule matches this series \((.*)\)"),
     lambda m: gettext("no routing rule matches this series (%(series)s)", series=m[1])),
    (re.compile(r"routing rule (.+) chooses the model (\S+), which is not installed on this "
                r"box \(it runs (.*)\)"),
     lambda m: gettext("routing rule %(rule)s chooses the model %(model)s, which is not "
                       "installed on this box (it runs %(running)s)",
                       rule=m[1], model=m[2], running=m[3])),
)


def translate_one(sentence: str) -> str | None:
    """One recorded sentence in the current language, or None when it is not a known one."""
    text = sentence.strip()
    if text in _FIXED:
        return gettext(text)
    for pattern, translated in _PATTERNS:
        match = pattern.fullmatch(text)
        if match:
            return translated(match)
    return None


def translate(reason: str) -> str | None:
    """A recorded reason (sentences joined by "; ") in the current language; None when any
    part is not a known sentence (English: the reason itself)."""
    if current() == ENGLISH or not reason:
        return reason
    whole = translate_one(reason)  # one sentence may hold "; " itself
    if whole is not None:
        return whole
    parts = [translate_one(part) for part in reason.split("; ")]
    if any(part is None for part in parts):
        return None
    return gettext("; ").join(p for p in parts if p is not None)


def reason_text(reason: str) -> str:
    """The reason translated when known, else as recorded."""
    translated = translate(reason)
    return reason if translated is None else translated
