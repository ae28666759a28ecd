"""Dates, times and numbers in the current language (babel.dates, babel.numbers).

English keeps the box's ISO forms (``2026-11-23 14:05``), which clinic staff and
technicians compare with the PACS and logs; Simplified Chinese uses the
locale's own (``2026年11月23日 14:05``). Decimals use the locale's separators;
sizes keep their unit symbols (``12.3 mm``).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from babel.dates import format_date, format_time
from babel.numbers import format_decimal, format_percent

from firmware_app.i18n.catalog import current
from firmware_app.i18n.tags import ENGLISH

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


def decimal(value: float | None, digits: int = 1) -> str:
    """A number with ``digits`` decimals in the locale's symbols (``–`` when missing).

    Rounded as Python's ``format`` rounds (so every language shows the same
    digits), then written by babel.numbers.
    """
    if value is None:
        return MISSING
    rounded = Decimal(f"{value:.{digits}f}")
    pattern = "0." + "0" * digits if digits > 0 else "0"
    return format_decimal(rounded, format=pattern, locale=current())


def percent(probability: float | None) -> str:
    """A probability as a whole percentage: ``87 %`` (English, as before) / ``87%``."""
    if probability is None:
        return MISSING
    whole = round(100 * probability)
    language = current()
    if language == ENGLISH:
        return f"{whole} %"
    return format_percent(Decimal(whole) / 100, format="#,##0%", locale=language)
