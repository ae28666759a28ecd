"""Log in and log out.

Failed logins slow down the address they come from (``firmware_app.storage.accounts.LoginThrottle``:
growing delays per address and per account-and-address, never a lock): while
waiting, the answer is 429 with the seconds to wait and a Retry-After header.
The same message answers a wrong name and a wrong password. Where to go after
login (``next``) must be a path on this box; anything else is refused with 400.

The language chosen with the header's switch before logging in becomes the account's
when it has none (``web/i18n.py``), and the login page after a logout stays in the
language the user read.

Every login, refused login and logout is an audit row (``web/audit_trail.py``)
with the client's address. A refused login names the account only when the
name is one of the box's accounts: an unknown name is not kept, since it is
often a password typed into the wrong field. Tries turned away while an address
must wait are one ``login_throttled`` row a minute per address.
"""

from __future__ import annotations

import logging
import math
import string
from urllib.parse import unquote, urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from firmware_app.i18n import gettext, ngettext, normalise
from firmware_app.storage.accounts import AccountError, Accounts, LoginThrottle, normalise_name
from web import audit_trail
from web.i18n import SESSION_KEY
from web.security import current_account, database, sessions

log = logging.getLogger(__name__)
blueprint = Blueprint("auth", __name__)

#: what a return path may hold: printable ASCII without space or backslash
_PATH_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/?%#")
MAX_NEXT = 2048


def same_origin_path(target: str) -> str | None:
    """``target`` when it is a path on this box (``/...``), else None.

    Refused: anything with a scheme or host, a leading ``//``, control characters,
    whitespace (a ``%09`` arrives here as a real tab, and browsers drop tabs and
    newlines inside URLs, so ``/<tab>/evil.com`` would become ``//evil.com``),
    backslashes (browsers read them as ``/``), non-ASCII, and the same tricks once
    percent-decoded (``/%2F%2Fevil.com``).
    """
    if not target or len(target) > MAX_NEXT or not set(target) <= _PATH_CHARACTERS:
        return None
    decoded = unquote(target)
    for form in (target, decoded):
        parts = urlsplit(form)
        if (not form.startswith("/") or form.startswith("//") or parts.scheme
                or parts.netloc or any(c in form for c in "\\\t\r\n ")
                or any(ord(c) < 0x20 or ord(c) >= 0x7F for c in form)):
            return None
    return target


def _next_or_refuse(target: str | None) -> str:
    """Where to go after login: the worklist when ``target`` is empty; 400 when it is not
    a path on this box."""
    if not target:
        return url_for("clinic.worklist")
    checked = same_origin_path(target)
    if checked is None:
        log.warning("login with a return address outside the box refused")
        abort(400, gettext("The address to return to after login is not a page of this box."))
    return checked


@blueprint.route("/login", methods=["GET", "POST"])
def login():
    """The login form; on success a fresh session and a redirect to where the user was going."""
    wanted = request.args.get("next", "") if request.method == "GET" else \
        request.form.get("next", "")
    goal = _next_or_refuse(wanted)
    if current_account() is not None and request.method == "GET":
        return redirect(goal)
    conn = database()
    accounts = Accounts(conn)
    no_accounts = accounts.count() == 0
    if request.method == "GET":
        return render_template("login.html", no_accounts=no_accounts, error=None,
                               next=wanted)
    name = request.form.get("name", "")[:64]
    password = request.form.get("password", "")
    target = request.form.get("next", "")
    address = request.remote_addr or "unknown"
    web = current_app.config["CLINIBOX"].config.web
    throttle = LoginThrottle(conn, web.login_free_failures, web.login_free_failures_per_address,
                             web.login_max_delay_seconds)
    wait = throttle.wait_seconds(name, address)
    if wait > 0:
        log.warning("login from %s refused for %.0f s: too many failures from there",
                    address, wait)
        audit_trail.note("login_throttled", detail=f"wait {math.ceil(wait)} s", account="",
                         coalesce_seconds=audit_trail.THROTTLED_COALESCE)
        error = ngettext("Too many failed attempts. Wait %(num)d second and try again.",
                         "Too many failed attempts. Wait %(num)d seconds and try again.",
                         math.ceil(wait))
        page = render_template("login.html", no_accounts=no_accounts, error=error, next=target)
        return page, 429, {"Retry-After": str(math.ceil(wait))}
    account = accounts.authenticate(name, password)
    if account is None:
        throttle.record_failure(name, address)
        known = _known_name(accounts, name)
        audit_trail.note("login_failed", target=f"account:{known}" if known else "",
                         detail="wrong password" if known else "unknown account name",
                         account=known)
        return render_template("login.html", no_accounts=no_accounts,
                               error=gettext("Wrong name or password."), next=target), 401
    chosen = normalise(session.get(SESSION_KEY))
    session.clear()  # a new session (and CSRF token) at every login: no session fixation
    session["token"] = sessions().start(account)
    if chosen and not account.language:  # the language chosen before login becomes the user's
        accounts.set_language(account.id, chosen)
    if chosen:
        session[SESSION_KEY] = chosen
    session.permanent = True
    audit_trail.note("login", target=f"account:{account.name}", detail=account.role,
                     account=account.name)
    log.info("%s (%s) logged in", account.name, account.role)
    return redirect(goal)


def _known_name(accounts: Accounts, name: str) -> str:
    """The account ``name`` names, or "" when it names none (then it is not recorded)."""
    try:
        normal = normalise_name(name)
    except AccountError:
        return ""
    return normal if any(a.name == normal for a in accounts.all()) else ""


@blueprint.route("/logout", methods=["POST"])
def logout():
    """End the session on the box, not only in the browser."""
    token = session.get("token")
    account = current_account()
    if isinstance(token, str):
        sessions().end(token)
    if account is not None:
        audit_trail.note("logout", target=f"account:{account.name}", account=account.name)
    language = (account.language if account is not None else "") or session.get(SESSION_KEY)
    session.clear()
    if language:  # the login page stays in the language the user read
        session[SESSION_KEY] = language
    return redirect(url_for("auth.login"))
