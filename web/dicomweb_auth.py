"""Who may use the box's DICOMweb service (``web/views_dicomweb.py``), checked before each
of its requests: a viewer session, or HTTP Basic with a viewer account's name and password,
throttled and audited like the login page (``web/login_attempt.py``). A client with neither
gets 401 with a Basic challenge, never the login page.

A Basic login starts a server-side session that the same name and password resume for its
life: a client asks once per object, and each request costs a lookup, not a password check
(scrypt). A new password ends it, as it ends every session of the account.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import os
import threading

from flask import Response, g, request, session

from firmware_app.storage.accounts import AccountError, normalise_name
from web import audit_trail, login_attempt
from web.security import sessions
from webcore import login as webcore_login

#: the realm of its Basic challenge
REALM = "clinibox"
#: the sessions Basic logins started, by a keyed digest of the account and password (in
#: memory only; the key is this process's own), oldest first
_BASIC_SESSIONS: dict[bytes, str] = {}
_BASIC_LOCK = threading.Lock()
_BASIC_KEPT = 256
_DIGEST_KEY = os.urandom(32)


def _challenge(status: int = 401, retry_after: int | None = None) -> Response:
    answer = Response(status=status)
    answer.headers["WWW-Authenticate"] = f'Basic realm="{REALM}", charset="UTF-8"'
    if retry_after is not None:
        answer.headers["Retry-After"] = str(retry_after)
    return answer


def _digest(name: str, password: str) -> bytes:
    """The key of a Basic login in memory: the account as the box names it and the
    password, through an HMAC with this process's own key."""
    with contextlib.suppress(AccountError):
        name = normalise_name(name)
    return hmac.new(_DIGEST_KEY, f"{name}\0{password}".encode(errors="replace"),
                    hashlib.sha256).digest()


def dicomweb_account() -> Response | None:
    """Before a DICOMweb request: a viewer session, else HTTP Basic (the login page's
    throttle and audit), else 401 with a Basic challenge. The throttle comes first: while
    an account or an address must wait, even a login resumed from memory waits."""
    token = session.get("token")
    g.account = sessions().resume(token) if isinstance(token, str) else None
    if g.account is not None:
        return None
    credentials = request.authorization
    if credentials is None or credentials.type != "basic" or not credentials.username:
        return _challenge()
    name = credentials.username[:webcore_login.MAX_NAME_INPUT]
    password = credentials.password or ""
    wait = login_attempt.throttle().wait_seconds(name, request.remote_addr or "unknown")
    if wait > 0:
        retry_after = max(1, math.ceil(wait))
        login_attempt.note_throttled(retry_after)
        return _challenge(429, retry_after)
    key = _digest(name, password)
    with _BASIC_LOCK:
        known = _BASIC_SESSIONS.get(key)
    if known is not None:
        g.account = sessions().resume(known)
        if g.account is not None:
            return None
    outcome = login_attempt.attempt(name, password)
    if outcome.throttled:
        return _challenge(429, outcome.retry_after)
    if outcome.account is None:
        return _challenge()
    g.account = outcome.account
    with _BASIC_LOCK:
        while len(_BASIC_SESSIONS) >= _BASIC_KEPT:
            _BASIC_SESSIONS.pop(next(iter(_BASIC_SESSIONS)))
        _BASIC_SESSIONS[key] = sessions().start(outcome.account)
    audit_trail.note("login", target=f"account:{outcome.account.name}",
                     detail=outcome.account.role, account=outcome.account.name)
    return None
