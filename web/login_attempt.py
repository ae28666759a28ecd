"""One viewer login try, as the login page and the DICOMweb service make it: the throttle of
``[web]`` (``LoginThrottle``), the try itself (``webcore.login.attempt``) and its audit rows.
A refused login names the account only when the name is one of the box's accounts (an
unknown name is often a password typed into the wrong field); tries turned away while an
address must wait are one ``login_throttled`` row a minute per address."""

from __future__ import annotations

from flask import current_app, request

from firmware_app.storage.accounts import Account, Accounts, LoginThrottle
from web import audit_trail
from web.security import database
from webcore import login as webcore_login
from webcore.login import LoginOutcome


def throttle() -> LoginThrottle:
    """The box's login throttle, with ``[web]``'s free failures and longest wait."""
    web = current_app.config["CLINIBOX"].config.web
    return LoginThrottle(database(), web.login_free_failures,
                         web.login_free_failures_per_address, web.login_max_delay_seconds)


def note_throttled(retry_after: int) -> None:
    """The audit row of a try turned away while the address must wait."""
    audit_trail.note("login_throttled", detail=f"wait {retry_after} s", account="",
                     coalesce_seconds=audit_trail.THROTTLED_COALESCE)


def attempt(name: str, password: str) -> LoginOutcome[Account]:
    """Try ``name`` and ``password`` from this request's address; a throttled or refused
    try is an audit row (a login is the caller's to record, once its session starts)."""
    accounts = Accounts(database())
    checks = throttle()
    outcome = webcore_login.attempt(
        name=name, password=password, address=request.remote_addr or "unknown",
        throttle_wait=checks.wait_seconds, record_failure=checks.record_failure,
        authenticate=accounts.authenticate)
    if outcome.throttled:
        note_throttled(outcome.retry_after)
    elif outcome.account is None:
        known = accounts.known_name(name)
        audit_trail.note("login_failed", target=f"account:{known}" if known else "",
                         detail="wrong password" if known else "unknown account name",
                         account=known)
    return outcome
