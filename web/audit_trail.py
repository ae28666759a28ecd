"""The viewer's side of the access audit trail: who (the session's account), from where (the
client's address), what.

The viewer is served by gunicorn directly (``web/server.py``, no proxy in front,
``forwarded_allow_ips`` empty), so ``request.remote_addr`` is the address of the
computer that connected; a ``X-Forwarded-For`` header is never believed.

Every view a client can repeat at will is coalesced (the same account, action,
target and address within the ``*_COALESCE`` seconds below adds no row), so a
reloading browser cannot fill the disk with rows. Refused logins are not
coalesced (each is recorded): the login throttle (``storage.accounts.LoginThrottle``)
bounds their rate per address, and turned-away tries are one row a minute.
"""

from __future__ import annotations

from flask import request

from firmware_app.storage import audit, db
from web.security import current_account, database

#: how long a repeat of the same view is folded into the row before it (seconds)
WORKLIST_VIEW_COALESCE = 300.0
STUDY_VIEW_COALESCE = 60.0
IMAGE_VIEW_COALESCE = 600.0
AUDIT_VIEW_COALESCE = 300.0
#: the printable report and its PDF (a reload, a print preview, a viewer that asks again)
REPORT_VIEW_COALESCE = 60.0
THROTTLED_COALESCE = 60.0


def client_address() -> str:
    """The address of the computer that sent this request ("unknown" if the server gave none)."""
    return request.remote_addr or "unknown"


def note(action: str, target: str = "", detail: str = "", *, account: str | None = None,
         coalesce_seconds: float = 0.0) -> None:
    """Record ``action`` on ``target`` by this request's account (or ``account``) from its
    address, in its own transaction."""
    if account is None:
        who = current_account()
        account = who.name if who is not None else ""
    audit.record(database(), action, account=account, address=client_address(), target=target,
                 detail=detail, coalesce_seconds=coalesce_seconds)


def note_each(action: str, targets: list[str], detail: str = "", *,
              coalesce_seconds: float = 0.0) -> None:
    """Record ``action`` once for each of ``targets`` by this request's account from its
    address, all in one transaction (a search that listed many studies)."""
    who = current_account()
    conn = database()
    with db.transaction(conn):
        for target in targets:
            audit.record(conn, action, account=who.name if who is not None else "",
                         address=client_address(), target=target, detail=detail,
                         coalesce_seconds=coalesce_seconds)
