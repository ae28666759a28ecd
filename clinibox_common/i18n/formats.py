"""Dates, times and numbers in the current language (babel.dates, babel.numbers).

English keeps the box's ISO forms (``2026-11-23 14:05``), which clinic staff and
technicians compare with the PACS and logs; Simplified Chinese uses the
locale's own (``2026年11月23日 14:05``). Decimals use the locale's separators;
sizes keep their unit symbols (``12.3 mm``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from decimal import Decimal

from babel.dates import format_date, format_skeleton, format_time
from babel.numbers import format_decimal, format_percent

from clinibox_common.i18n.catalog import current
from clinibox_common.i18n.tags import ENGLISH

#: what stands in for a missing time or number
MISSING = "–"


def day(value: dt.date) -> str:
    """A calendar day: ``2026-11-23`` / ``2026年11月23日``."""
    language = current()
    if language == ENGLISH:
        return value.isoformat()
    return format_date(value, "long", locale=language)


def moment(epoch: float | None, with_seconds: bool = False) -> str:
    """An epoch time in the box's local time: ``2026-11-23 14:05`` / ``2026年11月23日 14:05``."""
    if epoch is None:
        return MISSING
    when = dt.datetime.fromtimestamp(epoch)
    language = current()
    if language == ENGLISH:
        return when.strftime("%Y-%m-%d %H:%M:%S" if with_seconds else "%Y-%m-%d %H:%M")
    clock = format_time(when, "medium" if with_seconds else "short", locale=language)
    return f"{format_date(when, 'long', locale=language)} {clock}"


def moment_in_list(epoch: float | None) -> str:
    """An epoch time for a list's narrow column: the clock alone today (``14:05``), the day
    and clock this year (``11-23 14:05`` / ``11月23日 14:05``), else the whole moment."""
    if epoch is None:
        return MISSING
    when, today = dt.datetime.fromtimestamp(epoch), dt.date.today()
    if when.year != today.year:
        return moment(epoch)
    language = current()
    clock = when.strftime("%H:%M") if language == ENGLISH else format_time(
        when, "short", locale=language)
    if when.date() == today:
        return clock
    on = when.strftime("%m-%d") if language == ENGLISH else format_skeleton(
        "MMMd", when, locale=language)
    return f"{on} {clock}"


def decimal(value: float | None, digits: int = 1) -> str:
    """A number with ``digits`` decimals in the locale's symbols (``–`` when missing).

    Rounded as Python's ``format`` rounds (so every language shows the same
    digits), then written by babel.numbers.
    """
    if value is None or not math.isfinite(value):
        return MISSING
    if abs(value) >= 1e15:  # beyond what a person reads as digits (and babel formats)
        return f"{value:.3g}"
    rounded = Decimal(f"{value:.{digits}f}")
    pattern = "0." + "0" * digits if digits > 0 else "0"
    return format_decimal(rounded, format=pattern, locale=current())


def percent(probability: float | None) -> str:
    """A probability as a whole percentage: ``87 %`` (English, as before) / ``87%``.

    Never rounded up to a certainty or down to none: 0.9995 is ``> 99 %``, 0.003 ``< 1 %``
    (the box's pages and the hospital's console show the same)."""
    if probability is None:
        return MISSING
    whole = round(100 * probability)
    mark = ""
    if whole >= 100 and probability < 1:
        whole, mark = 99, ">"
    elif whole <= 0 < probability:
        whole, mark = 1, "<"
    language = current()
    if language == ENGLISH:
        return f"{mark} {whole} %" if mark else f"{whole} %"
    return mark + format_percent(Decimal(whole) / 100, format="#,##0%", locale=language)


def signed_percent(value: float) -> str:
    """A change in per cent with its sign, whole: ``+25 %`` (``+25%`` in Chinese), ``−8 %``,
    ``±0 %`` (a lesion's growth since an earlier study, on the box's pages and the
    hospital's console alike)."""
    sign = "+" if value >= 0.5 else ("−" if value <= -0.5 else "±")
    whole = decimal(abs(value), 0)
    return f"{sign}{whole} %" if current() == ENGLISH else f"{sign}{whole}%"


def _ideographic(text: str) -> bool:
    """True when ``text`` is written in CJK ideographs (a Chinese, Japanese or Korean name)."""
    return any("\u3400" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" for ch in text)


def person_name(value: str | None) -> str:
    """A DICOM Person Name (PN) as a reader writes it: ``王芳`` for ``王^芳``,
    ``DOE, JOHN A`` for ``DOE^JOHN^A`` (family name first, as on a hospital's list).

    Of the PN's component groups (alphabetic ``=`` ideographic ``=`` phonetic), a Chinese
    reader gets the ideographic one when there is one, an English reader the alphabetic
    one; each falls back to the other. The prefix and suffix (``^^^Dr^``) go around the
    name. A value that is not a PN (no ``^``) is shown as it is.
    """
    text = (value or "").strip()
    if not text:
        return ""
    groups = text.split("=")
    alphabetic, ideographic = groups[0], groups[1] if len(groups) > 1 else ""
    preferred = [ideographic, alphabetic] if current() != ENGLISH else [alphabetic, ideographic]
    chosen = next((group for group in preferred if group.strip("^ ")), "")
    parts = [part.strip() for part in chosen.split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    if _ideographic(family + given):
        name = family + given + middle
    elif family and (given or middle):
        name = f"{family}, {' '.join(p for p in (given, middle) if p)}"
    else:
        name = family or " ".join(p for p in (given, middle) if p)
    return " ".join(p for p in (prefix, name, suffix) if p)


def names(values: Iterable[object]) -> str:
    """Names listed for a person (config keys, options, fields): ``a, b`` in English, as the
    box has always written them, ``a、b`` in Chinese (its list mark)."""
    items = [str(value) for value in values]
    return ", ".join(items) if current() == ENGLISH else "、".join(items)
