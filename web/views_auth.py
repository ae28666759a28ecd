"""Log in and log out.

Failed logins slow down the address they come from (``firmware_app.storage.accounts.LoginThrottle``:
growing delays per address and per account-and-address, never a lock): while
waiting, the answer is 429 with the seconds to wait and a Retry-After header.
The same message answers a wrong name and a wrong password (the try itself:
``webcore.login``, shared with the hospital's console). Where to go after
login (``next``) must be a path on this box (``webcore.security.return_path``);
anything else is refused with 400.

The language chosen with the header's switch before logging in becomes the account's
when it has none, and the login page after a logout stays in the language the user read
(``webcore.login.begin_session``, ``end_session``).

Every login, refused login and logout is an audit row (``web/audit_trail.py``)
with the client's address; the try and its refusals' rows are ``web/login_attempt.py``,
shared with the DICOMweb service.
"""

from __future__ import annotations

import logging

from flask import Blueprint, redirect, render_template, request, url_for

from clinibox_common.i18n import N_
from firmware_app.storage.accounts import Accounts
from web import audit_trail, login_attempt
from web.security import current_account, database, sessions
from webcore import login as webcore_login
from webcore.security import return_path

log = logging.getLogger(__name__)
blueprint = Blueprint("auth", __name__)


@blueprint.route("/login", methods=["GET", "POST"])
def login():
    """The login form; on success a fresh session and a redirect to where the user was going."""
    wanted = request.args.get("next", "") if request.method == "GET" else \
        request.form.get("next", "")
    goal = return_path(wanted, "clinic.worklist",
                       N_("The address to return to after login is not a page of this box."))
    if current_account() is not None and request.method == "GET":
        return redirect(goal)
    conn = database()
    accounts = Accounts(conn)
    if request.method == "GET":
        return render_template("login.html", no_accounts=accounts.count() == 0, error=None,
                               next=wanted)
    name = request.form.get("name", "")[:webcore_login.MAX_NAME_INPUT]
    target = request.form.get("next", "")
    address = request.remote_addr or "unknown"
    outcome = login_attempt.attempt(name, request.form.get("password", ""))
    account = outcome.account
    if outcome.throttled:
        log.warning("login from %s refused for %.0f s: too many failures from there",
                    address, outcome.wait_seconds)
        page = render_template("login.html", no_accounts=accounts.count() == 0,
                               error=outcome.message(), next=target)
        return page, outcome.status, {"Retry-After": str(outcome.retry_after)}
    if account is None:
        return render_template("login.html", no_accounts=accounts.count() == 0,
                               error=outcome.message(), next=target), outcome.status
    # a new session (and CSRF token) at every login: no session fixation; the language
    # chosen before login becomes the user's when it has none
    webcore_login.begin_session(sessions().start(account), account.language,
                                lambda chosen: accounts.set_language(account.id, chosen))
    audit_trail.note("login", target=f"account:{account.name}", detail=account.role,
                     account=account.name)
    log.info("%s (%s) logged in", account.name, account.role)
    return redirect(goal)


@blueprint.route("/logout", methods=["POST"])
def logout():
    """End the session on the box, not only in the browser."""
    account = current_account()
    webcore_login.end_session(sessions().end, account.language if account is not None else None)
    if account is not None:
        audit_trail.note("logout", target=f"account:{account.name}", account=account.name)
    return redirect(url_for("auth.login"))
