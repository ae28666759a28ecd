"""Text in a terminal's columns: a Chinese character takes two, a Latin letter one."""

from __future__ import annotations

import unicodedata


def display_width(text: str) -> int:
    """How many terminal columns ``text`` takes (wide and full-width characters count two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text
               if not unicodedata.combining(ch))


def ljust(text: str, width: int) -> str:
    """``text`` padded with spaces on the right to ``width`` terminal columns."""
    return text + " " * max(0, width - display_width(text))


def rjust(text: str, width: int) -> str:
    """``text`` padded with spaces on the left to ``width`` terminal columns."""
    return " " * max(0, width - display_width(text)) + text
