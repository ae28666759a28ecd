"""The viewer's safety rules, in one place: who may see what, and the headers on every answer.

* Every route except the login page, the language switch and static files needs a live session
  (``firmware_app.storage.accounts.Sessions``: server-side, idle and absolute expiry); pages
  redirect to the login, image and JSON routes answer 401 (``webcore.security.require_session``,
  shared with the hospital's console).
* Device pages and quarantine actions are for technicians (403 otherwise).
* The DICOMweb service (``/dicomweb``, ``web/views_dicomweb.py``) takes a viewer session or
  HTTP Basic with an account's name and password, throttled and audited like the login
  page; a client without either gets 401 with a Basic challenge, never the login page. A
  Basic login starts a server-side session that the same name and password resume for its
  life (a client asks once per object: one password check, not one each); a new password
  ends it, as it ends every session of the account.
* CSRF, cookie flags, the security headers and safe return paths are the ones every
  clinibox web app shares (``webcore.security``, installed by ``web/app.py``).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, abort, current_app, g, request

from firmware_app.storage import db
from firmware_app.storage.accounts import Account, Sessions
from webcore.security import require_session

F = TypeVar("F", bound=Callable[..., Any])

#: Endpoints reachable without a session.
PUBLIC_ENDPOINTS = frozenset({"auth.login", "language.choose", "static"})


def database() -> sqlite3.Connection:
    """This request's connection to the box database (opened on first use)."""
    if "db" not in g:
        g.db = db.connect(current_app.config["CLINIBOX"].config.database_path)
    return g.db


def close_database(_exc: BaseException | None = None) -> None:
    """Close the request's connection, if one was opened."""
    conn = g.pop("db", None)
    if conn is not None:
        conn.close()


def sessions() -> Sessions:
    """The session store with the configured expiry."""
    web = current_app.config["CLINIBOX"].config.web
    return Sessions(database(), web.session_idle_minutes * 60, web.session_max_hours * 3600)


def current_account() -> Account | None:
    """The logged-in account of this request, if any."""
    return g.get("account")


#: where the DICOMweb service answers
DICOMWEB_PREFIX = "/dicomweb/"


def load_account() -> Response | None:
    """Before each request: resume the session; turn away requests that need one (images and
    reports, like API calls, get 401 rather than the login page; DICOMweb asks for its own:
    ``web/dicomweb_auth.py``)."""
    if request.path.startswith(DICOMWEB_PREFIX):
        return None  # the service's own check (web/dicomweb_auth.py) runs before each of its
    return require_session(lambda token: sessions().resume(token), PUBLIC_ENDPOINTS,
                           file_suffixes=(".png", ".pdf"))


def technician_only(view: F) -> F:
    """Allow the view to technicians only (403 for clinicians)."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        account = current_account()
        if account is None or not account.is_technician:
            abort(403)
        return view(*args, **kwargs)

    return guarded  # type: ignore[return-value]


def install(app: Flask) -> None:
    """Register the session check and the per-request database on ``app`` (after
    ``webcore.security.configure``: CSRF is checked before the session is resumed)."""
    app.before_request(load_account)
    app.teardown_appcontext(close_database)
