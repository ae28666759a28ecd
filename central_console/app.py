"""The hospital console's wiring, written out in one place: ``create_app(config)``.

    browser ──HTTPS (gunicorn, webcore.server; central_console/cli.py)──> Flask app
      webcore.security.configure: cookie flags, CSRF, security headers (CSP: nothing inline)
      session check (webcore.security.require_session), role check (here: _load_account)
      page parts: header switch, logout, login and error cards (webcore.pages)
      auth      /login /logout /language                  (central_console/views_auth.py)
      alerts    / → /alerts, /api/alerts/latest, /alerts/<id> (views_alerts.py)
      fleet     /fleet, /fleet/<clinic>/<device>, /drift, /audit, /users (views_fleet.py)
      link      /fleet/<clinic>/<device>/link-check: "test the link" (views_link.py;
                central.link_check)
      rollouts  /rollouts, /rollouts/<id>, hold/resume/rollback, drift decisions
                (views_rollouts.py; central/rollouts.py)
      reads     central_console/queries.py (bounded; one query a list)
      writes    accounts (central_console/accounts.py), reviews (central.reviews),
                rollouts (central.rollouts)
      language  zh_CN / en (webcore.i18n; the project's one catalog)

One :class:`central.store.Store` (its database layer serialises the connection) is
shared by the request threads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask, session
from werkzeug.wrappers import Response

from central import labels
from central.config import CentralConfig
from central.store import Store
from central.store_open import webhook_options
from central_console.request_context import Console, console, current_account
from webcore import errors, pages, security
from webcore import i18n as web_i18n

log = logging.getLogger("clinibox.central_console")

#: endpoints reachable without a session
PUBLIC_ENDPOINTS = frozenset({"auth.login", "auth.language", "static"})


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
    app.config["CONSOLE"] = Console(config, store or Store(config.database.url,
                                                          **webhook_options(config)))
    security.configure(app, secret=security.session_secret(state_dir / "console-session.secret"),
                       cookie_name="clinibox_console", max_hours=web.session_max_hours)
    app.before_request(_load_account)
    web_i18n.install(app, choose_language)
    pages.install(app)

    from central_console.views_alerts import blueprint as alerts
    from central_console.views_auth import blueprint as auth
    from central_console.views_fleet import blueprint as fleet
    from central_console.views_link import blueprint as link
    from central_console.views_rollouts import blueprint as rollouts

    for blueprint in (auth, alerts, fleet, link, rollouts):
        app.register_blueprint(blueprint)

    @app.context_processor
    def shared() -> dict[str, Any]:
        return {"account": current_account(), "labels": labels}

    errors.install_error_pages(app)
    return app
