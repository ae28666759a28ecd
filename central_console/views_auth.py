"""Log in, log out, and the language switch of the console (the viewer's rules, its code).

Failed logins slow down the address they come from (``webcore.throttle`` over
``console_login_failures``): while waiting, 429 with the seconds to wait and a
Retry-After header. The same message answers a wrong name and a wrong password; a
new session (and CSRF token) at every login. Every login, refused login and logout
is a ``console_audit`` row; a refused login names the account only when it exists.
"""

from __future__ import annotations

import logging
from functools import partial

from flask import Blueprint, redirect, render_template, request, url_for

from central_console.accounts import ConsoleThrottle, audit
from central_console.request_context import client_address, console, current_account, note
from webcore import login
from webcore.i18n import switch_language
from webcore.security import return_path
from webcore.throttle import ThrottlePolicy

log = logging.getLogger("clinibox.central_console")
blueprint = Blueprint("auth", __name__)


@blueprint.route("/login", methods=["GET", "POST"], endpoint="login")
def login_page():
    """The login form; on success a fresh session and a redirect to where the user was going."""
    wanted = request.values.get("next", "")
    goal = return_path(wanted, "alerts.worklist")
    if current_account() is not None and request.method == "GET":
        return redirect(goal)
    state = console()
    accounts = state.accounts()
    if request.method == "GET":
        return render_template("login.html", no_accounts=accounts.count() == 0, error=None,
                               next=wanted)
    address = client_address()
    web = state.config.web
    throttle = ConsoleThrottle(state.store.database, ThrottlePolicy(
        web.login_free_failures, web.login_free_failures_per_address,
        float(web.login_max_delay_seconds)))
    name = request.form.get("name", "")[:login.MAX_NAME_INPUT]
    outcome = login.attempt(name=name, password=request.form.get("password", ""),
                            address=address, throttle_wait=throttle.wait_seconds,
                            record_failure=throttle.record_failure,
                            authenticate=accounts.authenticate)
    account = outcome.account
    if account is None:
        if outcome.throttled:
            note("login_throttled", detail=f"wait {outcome.retry_after} s")
        else:
            known = accounts.known(name)
            note("login_failed", f"account:{known}" if known else "",
                 "wrong password" if known else "unknown account name")
        page = render_template("login.html", no_accounts=accounts.count() == 0,
                               error=outcome.message(), next=wanted)
        headers = {"Retry-After": str(outcome.retry_after)} if outcome.throttled else {}
        return page, outcome.status, headers
    login.begin_session(state.sessions().start(account), account.language,
                        partial(accounts.set_language, account.id))
    audit(state.store.database, account.name, address, "login", f"account:{account.name}",
          account.role)
    log.info("%s (%s) logged in to the console", account.name, account.role)
    return redirect(goal)


@blueprint.route("/logout", methods=["POST"])
def logout():
    """End the session on the server, not only in the browser."""
    account = current_account()
    login.end_session(console().sessions().end,
                      account.language if account is not None else None)
    if account is not None:
        note("logout", f"account:{account.name}")
    return redirect(url_for("auth.login"))


@blueprint.route("/language", methods=["POST"])
def language():
    """Keep the chosen language (the account's, or the session's before login) and go back."""
    account = current_account()
    return switch_language(None if account is None else
                           partial(console().accounts().set_language, account.id),
                           "alerts.worklist")
