"""The failed-login throttle's policy: growing delays, never a lock (no database here).

Anti-automation without lockout (OWASP ASVS 4.0 2.2.1): after ``free_per_account``
failures for one account name from one address within ``window_seconds``, every
further try from there must wait 2, 4, 8 … seconds after the last failure (at most
``max_delay``); one address gets ``free_per_address`` failures over all names before
its own delays start. Nothing is counted per account alone, so an attacker elsewhere
on the LAN slows only itself: the real user's right password from their own
computer always goes through. Tries refused while waiting are not counted, so the
delays bound the guessing rate (about ``window / max_delay`` guesses an hour once
the cap is reached). Successful logins do not clear failures (else an attacker could
reset its address's count by logging into an account of its own).

Each app counts failures in its own table (the box's ``login_failures``, the
console's ``console_login_failures``): for a try, the count and the time of the last
failure within the window, per (``throttle_key(name)``, address) and per address, go
to ``ThrottlePolicy.wait_seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: names are stored in the failures table cut to this length
THROTTLE_KEY_LENGTH = 256


def throttle_key(name: str) -> str:
    """The name as the failures table keeps it: stripped, lower-cased, cut to a bound."""
    return name.strip().lower()[:THROTTLE_KEY_LENGTH]


@dataclass(frozen=True)
class ThrottlePolicy:
    """How many failures are free and how long later tries wait (the module's docstring)."""

    free_per_account: int
    free_per_address: int
    max_delay: float
    window_seconds: float = 3600.0

    def __post_init__(self) -> None:
        """Refuse a policy that would never let anyone in or never slow anyone down."""
        if (min(self.free_per_account, self.free_per_address) < 1 or self.max_delay <= 0
                or self.window_seconds <= 0):
            raise ValueError("the login throttle needs free failures >= 1 and positive times")

    def delay(self, count: int, last: float | None, free: int, now: float) -> float:
        """Seconds still to wait after ``count`` failures in the window, the last at ``last``,
        when ``free`` of them cost nothing (0.0: go ahead)."""
        if count < free or last is None:
            return 0.0
        delay = min(2.0 ** (count - free + 1), float(self.max_delay))
        return max(last + delay - now, 0.0)

    def wait_seconds(self, account_failures: tuple[int, float | None],
                     address_failures: tuple[int, float | None], now: float) -> float:
        """0.0 when a try is allowed now, else the seconds until one is; each argument is
        (failures in the window, time of the last) for (name, address) and for address."""
        return max(self.delay(*account_failures, self.free_per_account, now),
                   self.delay(*address_failures, self.free_per_address, now))

    def since(self, now: float) -> float:
        """The start of the window that counts at ``now``: older failures are forgotten."""
        return now - self.window_seconds
