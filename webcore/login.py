"""One login try, as every clinibox web app runs it: throttle first, then one password check.

The app keeps its store and hands ``attempt`` three callables (the box's viewer:
``LoginThrottle.wait_seconds``, ``LoginThrottle.record_failure`` and
``Accounts.authenticate``). While the address must wait, the password is not even
checked and the answer is 429 with the seconds to wait (a Retry-After header); a
refused login is counted and answered 401 with the same message for a wrong name and
a wrong password. What to audit (and whether the name is a real account's, so it may
be recorded) stays with the app; ``begin_session`` gives it a fresh session cookie (the
language chosen before login kept, and given to an account without one) and
``end_session`` ends it (the login page after a logout stays in the language the user read).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from flask import session

from clinibox_common.i18n import gettext, ngettext, normalise
from webcore.i18n import SESSION_KEY

T = TypeVar("T")

#: the longest name a login form's field is read to
MAX_NAME_INPUT = 64


@dataclass(frozen=True)
class LoginOutcome(Generic[T]):
    """What a login try came to: the account (None when refused) and, when the address must
    wait, the seconds to wait (> 0: throttled, the password was not checked)."""

    account: T | None
    wait_seconds: float = 0.0

    @property
    def throttled(self) -> bool:
        """Whether the try was turned away unchecked (429)."""
        return self.wait_seconds > 0

    @property
    def status(self) -> int:
        """The HTTP status of a refused try (429 throttled, 401 wrong), 200 for a login."""
        if self.throttled:
            return 429
        return 401 if self.account is None else 200

    @property
    def retry_after(self) -> int:
        """Whole seconds to wait (for the message and the Retry-After header)."""
        return math.ceil(self.wait_seconds)

    def message(self) -> str | None:
        """What the login page says about a refused try, in the request's language."""
        if self.throttled:
            return ngettext("Too many failed attempts. Wait %(num)d second and try again.",
                            "Too many failed attempts. Wait %(num)d seconds and try again.",
                            self.retry_after)
        return gettext("Wrong name or password.") if self.account is None else None


def attempt(*, name: str, password: str, address: str,
            throttle_wait: Callable[[str, str], float],
            record_failure: Callable[[str, str], None],
            authenticate: Callable[[str, str], T | None]) -> LoginOutcome[T]:
    """Try ``name`` / ``password`` from ``address``: turned away while ``throttle_wait(name,
    address)`` > 0, else ``authenticate(name, password)``; a refusal is counted with
    ``record_failure(name, address)``."""
    wait = throttle_wait(name, address)
    if wait > 0:
        return LoginOutcome(None, wait)
    account = authenticate(name, password)
    if account is None:
        record_failure(name, address)
    return LoginOutcome(account)


def begin_session(token: str, account_language: str | None,
                  keep_language: Callable[[str], object]) -> None:
    """A new session cookie (and CSRF token) at every login, so no session fixation: holds the
    server-side session's ``token`` and lasts the configured hours. The language chosen with
    the header's switch before logging in stays in it, and becomes the account's
    (``keep_language(language)``) when it has none (``account_language`` empty)."""
    chosen = normalise(session.get(SESSION_KEY))
    if chosen and not account_language:
        keep_language(chosen)
    session.clear()
    session["token"] = token
    if chosen:
        session[SESSION_KEY] = chosen
    session.permanent = True


def end_session(end: Callable[[str], object], account_language: str | None) -> None:
    """End the session on the server (``end(token)``), not only in the browser; the login page
    afterwards stays in the language the user read (the account's, else the one chosen
    before login)."""
    token = session.get("token")
    if isinstance(token, str):
        end(token)
    language = account_language or session.get(SESSION_KEY)
    session.clear()
    if language:
        session[SESSION_KEY] = language
