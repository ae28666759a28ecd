"""What every console page reads of the request it answers: the running console (config and
store), the logged-in account, the client's address, the audit note, and the admin-only guard.
``app.py`` builds the application on it; the ``views_*`` modules use it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import abort, current_app, g, request

from central.config import CentralConfig
from central.store import Store
from central_console import accounts as console_accounts
from central_console.accounts import ConsoleAccount, ConsoleAccounts, ConsoleSessions
from webcore.sessions import SessionRule

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Console:
    """What the routes share: the hospital's config and its store."""

    config: CentralConfig
    store: Store

    def sessions(self) -> ConsoleSessions:
        """The session store with the configured expiry."""
        web = self.config.web
        return ConsoleSessions(self.store.database,
                               SessionRule(idle_seconds=web.session_idle_minutes * 60,
                                           max_seconds=web.session_max_hours * 3600))

    def accounts(self) -> ConsoleAccounts:
        """The console's accounts."""
        return ConsoleAccounts(self.store.database)


def console() -> Console:
    """The running console (config and store)."""
    return current_app.config["CONSOLE"]


def current_account() -> ConsoleAccount | None:
    """The logged-in account of this request, if any."""
    return g.get("account")


def client_address() -> str:
    """The client's address for the audit trail and the login throttle."""
    return request.remote_addr or "unknown"


def note(action: str, target: str = "", detail: str = "") -> None:
    """A ``console_audit`` row for the current account and address."""
    account = current_account()
    console_accounts.audit(console().store.database, account.name if account else "",
                           client_address(), action, target, detail)



def admin_only(view: F) -> F:
    """Allow the view to admin accounts only (403 otherwise)."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        account = current_account()
        if account is None or not account.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return guarded  # type: ignore[return-value]
