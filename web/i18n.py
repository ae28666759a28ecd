"""The viewer's language for each request (Flask-Babel), and the catalog in its templates.

The language of a request is the first that names one of the box's two
(``firmware_app.i18n``: ``zh_CN``, ``en``):

1. the logged-in account's own choice (the switch in the page header,
   ``accounts.language``);
2. the choice made with that switch before logging in (kept in the session
   cookie, and given to the account at login when it has none);
3. ``[web] language`` (the clinic's setting for every browser);
4. the browser's ``Accept-Language``, best first (``zh``, ``zh-CN``,
   ``zh-Hans`` mean Simplified Chinese; Traditional Chinese tags do not);
5. English.

Templates call ``_()`` / ``ngettext()`` (Jinja's i18n extension, new style:
placeholders filled and escaped by Jinja) on the same catalog as the code
(``firmware_app.i18n``), and format dates and numbers with ``fmt``
(``firmware_app.i18n.formats``).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, has_request_context, request, session
from flask_babel import Babel, get_locale

from firmware_app import i18n
from firmware_app.i18n import formats
from web.security import current_account

#: the session key of a choice made before logging in
SESSION_KEY = "language"


def choose_language() -> str:
    """This request's language (the order in the module's docstring)."""
    account = current_account()
    if account is not None and account.language in i18n.LANGUAGES:
        return account.language
    chosen = i18n.normalise(session.get(SESSION_KEY))
    if chosen:
        return chosen
    configured = current_app.config["CLINIBOX"].config.web.language
    if configured:
        return configured
    for tag, quality in request.accept_languages:
        language = i18n.normalise(tag)
        if language and quality > 0:
            return language
    return i18n.ENGLISH


def request_language() -> str | None:
    """The provider ``firmware_app.i18n`` asks: the request's language (None outside one)."""
    if not has_request_context():
        return None
    return i18n.normalise(get_locale())


def _template_values() -> dict[str, Any]:
    language = i18n.current()
    return {"language": language, "html_lang": i18n.html_lang(language),
            "languages": i18n.LANGUAGE_NAMES, "fmt": formats}


def install(app: Flask) -> None:
    """Choose each request's language with Flask-Babel and give templates the catalog."""
    Babel(app, locale_selector=choose_language,
          default_translation_directories=str(i18n.TRANSLATIONS_DIR))
    app.jinja_env.install_gettext_callables(
        gettext=lambda message: i18n.translations(i18n.current()).gettext(message),
        ngettext=lambda singular, plural, n: i18n.translations(i18n.current()).ngettext(
            singular, plural, n),
        newstyle=True)
    app.context_processor(_template_values)
    i18n.set_provider(request_language)
