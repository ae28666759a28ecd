"""The viewer's language for each request (Flask-Babel), and the catalog in its templates.

The language of a request is the first that names one of the box's two
(``clinibox_common.i18n``: ``zh_CN``, ``en``):

1. the logged-in account's own choice (the switch in the page header,
   ``accounts.language``);
2. the choice made with that switch before logging in (kept in the session
   cookie, and given to the account at login when it has none);
3. ``[web] language`` (the clinic's setting for every browser);
4. the browser's ``Accept-Language``, best first (``zh``, ``zh-CN``,
   ``zh-Hans`` mean Simplified Chinese; Traditional Chinese tags do not);
5. English.

Flask-Babel, the templates' ``_()`` / ``ngettext()`` on the same catalog as the code
and ``fmt`` (``clinibox_common.i18n.formats``) are the ones every clinibox web app shares
(``webcore.i18n``), and so is the order above (``pick_language``, also the hospital
console's); the viewer says where its account and its setting are.
"""

from __future__ import annotations

from flask import Flask, current_app, session

import webcore.i18n
from web.security import current_account


def choose_language() -> str:
    """This request's language (the order in the module's docstring: ``webcore.i18n``'s)."""
    account = current_account()
    return webcore.i18n.pick_language(account.language if account is not None else None,
                                      session.get(webcore.i18n.SESSION_KEY),
                                      current_app.config["CLINIBOX"].config.web.language)


def install(app: Flask) -> None:
    """Choose each request's language (``choose_language``) and give templates the catalog."""
    webcore.i18n.install(app, choose_language)
