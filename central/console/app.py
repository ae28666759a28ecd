"""The hospital console's wiring, written out in one place: ``create_app(config)``.

    browser ──HTTPS (gunicorn, webcore.server; central/console/cli.py)──> Flask app
      webcore.security.configure: cookie flags, CSRF, security headers (CSP: nothing inline)
      session check (webcore.security.require_session), role check (here: _load_account)
      page parts: header switch, logout, login and error cards (webcore.pages)
      auth      /login /logout /language                  (central/console/views_auth.py)
      alerts    / → /alerts, /api/alerts/latest, /alerts/<id> (views_alerts.py)
      fleet     /fleet, /fleet/<clinic>/<device>, /drift, /audit, /users (views_fleet.py)
      link      /fleet/<clinic>/<device>/link-check: "test the link" (views_link.py;
                central.link_check)
      rollouts  /rollouts, /rollouts/<id>, hold/resume/rollback, drift decisions
                (views_rollouts.py; central/rollouts.py)
      reads     central/console/queries.py (bounded; one query a list)
      writes    accounts (central/console/accounts.py), reviews (central.reviews),
                rollouts (central.rollouts)
      language  zh_CN / en (webcore.i18n; the project's one catalog)

One :class:`central.store.Store` (its database layer serialises the connection) is
shared by the request threads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g, request, session
from werkzeug.wrappers import Response

from central.config import CentralConfig
from central.console import accounts as console_accounts
from central.console import labels
from central.console.accounts import ConsoleAccount, ConsoleAccounts, ConsoleSessions
from central.store import Store
from webcore import errors, pages, security
from webcore import i18n as web_i18n
from webcore.sessions import SessionRule

log = logging.getLogger("clinibox.central.console")

#: endpoints reachable without a session
PUBLIC_ENDPOINTS = frozenset({"auth.login", "auth.language", "static"})


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


def _load_account() -> Response | None:
    """Before each request: resume the session; turn away requests that need one."""
    return security.require_session(lambda token: console().sessions().resume(token),
                                    PUBLIC_ENDPOINTS)


def choose_language() -> str:
    """The request's language: the account's choice, the choice made before login,
    ``[web] language``, the browser's, English (``webcore.i18n.pick_language``)."""
    account = current_account()
    return web_i18n.pick_language(account.language if account is not None else None,
                                  session.get(web_i18n.SESSION_KEY), console().config.web.language)


def create_app(config: CentralConfig, store: Store | None = None) -> Flask:
    """The hospital's console over ``config``'s database (or ``store``, already open)."""
    app = Flask(__name__)
    web = config.web
    state_dir = Path(web.state_dir)
    app.config["CONSOLE"] = Console(config, store or Store(config.database.url))
    security.configure(app, secret=security.session_secret(state_dir / "console-session.secret"),
                       cookie_name="clinibox_console", max_hours=web.session_max_hours)
    app.before_request(_load_account)
    web_i18n.install(app, choose_language)
    pages.install(app)

    from central.console.views_alerts import blueprint as alerts
    from central.console.views_auth import blueprint as auth
    from central.console.views_fleet import blueprint as fleet
    from central.console.views_link import blueprint as link
    from central.console.views_rollouts import blueprint as rollouts

    for blueprint in (auth, alerts, fleet, link, rollouts):
        app.register_blueprint(blueprint)

    @app.context_processor
    def shared() -> dict[str, Any]:
        return {"account": current_account(), "labels": labels}

    errors.install_error_pages(app)
    return app
