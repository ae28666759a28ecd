"""Server-side login sessions' rules: the browser holds a random token, the store its SHA-256.

Logout, a password change, removing an account and expiry (idle and absolute) are
therefore real: the row is gone and the token is worthless, and a copy of the
database does not hold usable tokens. Each app keeps its rows in its own table (the
box's ``web_sessions``, the console's ``console_sessions``) and asks ``SessionRule``
whether a row is still good.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

#: a session's last_seen is written at most this often
TOUCH_SECONDS = 15.0


def new_token() -> str:
    """A fresh random session token for the browser's cookie (256 bits)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the store keeps of a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SessionRule:
    """Sessions end after ``idle_seconds`` without a request or ``max_seconds`` in all."""

    idle_seconds: float
    max_seconds: float

    def expired(self, created_at: float, last_seen: float, now: float) -> bool:
        """Whether a session made at ``created_at`` and last used at ``last_seen`` is over."""
        return now - last_seen > self.idle_seconds or now - created_at > self.max_seconds

    def needs_touch(self, last_seen: float, now: float) -> bool:
        """Whether a live session's last_seen is old enough to be written again."""
        return now - last_seen > TOUCH_SECONDS

    def cutoffs(self, now: float) -> tuple[float, float]:
        """(last_seen, created_at) before which a session is over: for purging in SQL."""
        return now - self.idle_seconds, now - self.max_seconds
