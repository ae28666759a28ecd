"""Log in and log out.

Failed logins are limited per account name and per client address in a
sliding minute (``[web] login_failures_per_minute``): over the limit the
answer is 429 with the seconds to wait, and the limit lifts by itself, so a
real user is never locked out for good. The same message answers a wrong
name and a wrong password.
"""

from __future__ import annotations

import logging
import math

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for

from web.accounts import Accounts, LoginThrottle
from web.security import current_account, database, sessions

log = logging.getLogger(__name__)
blueprint = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only a path on this box: never an absolute or protocol-relative URL."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return url_for("clinic.worklist")


@blueprint.route("/login", methods=["GET", "POST"])
def login():
    """The login form; on success a fresh session and a redirect to where the user was going."""
    if current_account() is not None and request.method == "GET":
        return redirect(_safe_next(request.args.get("next")))
    conn = database()
    accounts = Accounts(conn)
    no_accounts = accounts.count() == 0
    if request.method == "GET":
        return render_template("login.html", no_accounts=no_accounts, error=None,
                               next=request.args.get("next", ""))
    name = request.form.get("name", "")[:64]
    password = request.form.get("password", "")
    target = request.form.get("next", "")
    address = request.remote_addr or "unknown"
    web = current_app.config["CLINIBOX"].config.web
    throttle = LoginThrottle(conn, web.login_failures_per_minute)
    wait = throttle.wait_seconds(name, address)
    if wait > 0:
        log.warning("login refused for a while: too many failures (name or address)")
        error = (f"Too many failed attempts. Wait {math.ceil(wait)} seconds and try again.")
        return render_template("login.html", no_accounts=no_accounts, error=error,
                               next=target), 429
    account = accounts.authenticate(name, password)
    if account is None:
        throttle.record_failure(name, address)
        return render_template("login.html", no_accounts=no_accounts,
                               error="Wrong name or password.", next=target), 401
    session.clear()  # a new session (and CSRF token) at every login: no session fixation
    session["token"] = sessions().start(account)
    session.permanent = True
    log.info("%s (%s) logged in", account.name, account.role)
    return redirect(_safe_next(target))


@blueprint.route("/logout", methods=["POST"])
def logout():
    """End the session on the box, not only in the browser."""
    token = session.get("token")
    if isinstance(token, str):
        sessions().end(token)
    session.clear()
    return redirect(url_for("auth.login"))
