"""The safety rules every clinibox web app shares: headers, cookies, CSRF, return paths.

* CSRF: Flask-WTF's ``CSRFProtect`` checks a token on every POST (forms and
  fetch calls), and the same-origin Referer on HTTPS.
* Cookies are Secure, HttpOnly and SameSite=Strict; the apps only speak HTTPS.
* Headers: a Content-Security-Policy that allows nothing from outside the server
  and no inline script or style, no framing, no sniffing, no caching of pages
  that show patient data.
* Where to go after login (``next``) must be a path on this server
  (``same_origin_path``, ``return_path``).
* Every request but the public ones needs a live session (``require_session``): pages
  redirect to the login, API calls and files answer 401.

``configure(app, ...)`` installs the first four on a Flask app; the app runs
``require_session`` before each request with its own store (how a session is resumed)
and its own public endpoints.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import string
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Flask, Response, abort, g, redirect, request, session, url_for
from flask_wtf.csrf import CSRFProtect

from clinibox_common.i18n import N_, gettext

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
))

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: Flask-WTF checks the Referer of HTTPS form posts
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), usb=()",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=31536000",
}

#: the longest return path (``next``) accepted
MAX_NEXT = 2048
#: what a return path may hold: printable ASCII without space or backslash
_PATH_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/?%#")


def add_security_headers(response: Response) -> Response:
    """After each request: the security headers, and no caching of anything but static files."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


def session_secret(path: Path) -> bytes:
    """The key that signs session cookies: made once (0600) and kept across restarts."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(secret)
    return secret


def same_origin_path(target: str) -> str | None:
    """``target`` when it is a path on this server (``/...``), else None.

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


#: the 400 for a return path that is not one (``return_path``), when the app gives no other
NOT_A_PAGE_HERE = N_("The address to return to after login is not a page of this site.")


def return_path(target: str, fallback_endpoint: str, refusal: str = NOT_A_PAGE_HERE) -> str:
    """Where to go after login: ``fallback_endpoint``'s URL when ``target`` is empty, ``target``
    when it is a path on this server, else 400 with ``refusal`` (N_-marked English), logged."""
    if not target:
        return url_for(fallback_endpoint)
    checked = same_origin_path(target)
    if checked is None:
        log.warning("login with a return address outside this server refused")
        abort(400, gettext(refusal))
    return checked


def require_session(resume: Callable[[str], Any | None], public_endpoints: Collection[str], *,
                    login_endpoint: str = "auth.login",
                    file_suffixes: tuple[str, ...] = ()) -> Response | None:
    """Before each request: resume the session (``g.account``), or turn the request away.

    ``resume(token)`` gives the account of a live session (else None); a dead token leaves
    the cookie. Without an account only ``public_endpoints`` answer; an unknown address is
    404; a page (a GET outside ``/api/`` whose path ends in none of ``file_suffixes``) goes
    to the login with ``next`` set to come back; anything else is 401.
    """
    token = session.get("token")
    g.account = resume(token) if isinstance(token, str) else None
    if token and g.account is None:
        session.pop("token", None)
    if g.account is not None or request.endpoint in public_endpoints:
        return None
    if request.endpoint is None:
        abort(404)
    if (request.method == "GET" and not request.path.startswith("/api/")
            and not request.path.endswith(file_suffixes)):
        return redirect(url_for(login_endpoint, next=request.full_path.rstrip("?")))
    abort(401)


def configure(app: Flask, *, secret: bytes, cookie_name: str, max_hours: float,
              max_content_length: int = 64 * 1024) -> None:
    """Set ``app``'s signing key and cookie flags, bound its requests, check CSRF on every
    POST and add the security headers to every answer.

    Sessions (and CSRF tokens) live at most ``max_hours``; requests over
    ``max_content_length`` bytes are answered 413.
    """
    app.config.update(
        SECRET_KEY=secret,
        SESSION_COOKIE_NAME=cookie_name,
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=max_hours),
        WTF_CSRF_TIME_LIMIT=int(max_hours * 3600),
        MAX_CONTENT_LENGTH=max_content_length,
        PREFERRED_URL_SCHEME="https",
    )
    CSRFProtect(app)
    app.after_request(add_security_headers)
