"""The base of the box's stable words as enumerations (statuses, reason codes).

A member is a ``str`` (``class X(Word)``: Python 3.10 has no ``StrEnum``) equal to the word
the box stores, and its ``str()`` and ``format()`` give that word itself, so a member may go
wherever the word went: an SQL parameter, a JSON value or key, a CSV cell, a template.
"""

from __future__ import annotations

from enum import Enum


class Word(str, Enum):
    """A stable word of the box: its ``str()`` and ``format()`` are the word."""

    def __str__(self) -> str:
        return str(self.value)

    __format__ = str.__format__
