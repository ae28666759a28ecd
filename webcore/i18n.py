"""Each request's language (Flask-Babel) and the catalog in the templates, for any clinibox app.

Both apps choose a request's language in the same order (``pick_language``: the
account's choice, the choice made with the header's switch before logging in, the app's
``[web] language``, the browser's, English); each app says where its account and setting
are (``choose_language`` passed to ``install``). The header's switch is ``switch_language``
(``POST /language`` in each app). Templates call ``_()`` /
``ngettext()`` (Jinja's i18n extension, new style: placeholders filled and escaped by
Jinja) on the same catalog as the code (``clinibox_common.i18n``), and format dates and
numbers with ``fmt`` (``clinibox_common.i18n.formats``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, abort, has_request_context, redirect, request, session, url_for
from flask_babel import Babel, get_locale
from werkzeug.wrappers import Response

from clinibox_common import i18n
from clinibox_common.i18n import formats
from webcore.security import same_origin_path

#: the session key of a language chosen before logging in
SESSION_KEY = "language"


def browser_language() -> str | None:
    """The first language of the browser's ``Accept-Language`` (best first) that the catalog
    has, or None (``zh``, ``zh-CN``, ``zh-Hans`` mean Simplified Chinese; Traditional Chinese
    tags do not)."""
    for tag, quality in request.accept_languages:
        language = i18n.normalise(tag)
        if language and quality > 0:
            return language
    return None


def pick_language(account_language: str | None, session_choice: object,
                  configured: str | None) -> str:
    """A request's language: the account's own choice, else the one made with the switch
    before logging in (``session_choice``), else the app's setting (``configured``), else the
    browser's (``browser_language``), else English."""
    if account_language is not None and account_language in i18n.LANGUAGES:
        return account_language
    chosen = i18n.normalise(session_choice)
    if chosen:
        return chosen
    return configured or browser_language() or i18n.ENGLISH


def switch_language(keep_for_account: Callable[[str], None] | None,
                    fallback_endpoint: str) -> Response:
    """The header's language switch (a form POST): keep the chosen language in the session
    (``SESSION_KEY``) and, for a logged-in user, with the account (``keep_for_account``), then
    go back to the page the switch was on (a path on this server, else ``fallback_endpoint``).
    An unknown language is 400."""
    chosen = request.form.get("language", "")
    if chosen not in i18n.LANGUAGES:
        abort(400)
    if keep_for_account is not None:
        keep_for_account(chosen)
    session[SESSION_KEY] = chosen
    back = same_origin_path(request.form.get("next", ""))
    return redirect(back or url_for(fallback_endpoint))


def request_language() -> str | None:
    """The provider ``clinibox_common.i18n`` asks: the request's language (None outside one)."""
    if not has_request_context():
        return None
    return i18n.normalise(get_locale())


def _template_values() -> dict[str, Any]:
    language = i18n.current()
    return {"language": language, "html_lang": i18n.html_lang(language),
            "languages": i18n.LANGUAGE_NAMES, "fmt": formats}


def install(app: Flask, choose_language: Callable[[], str]) -> None:
    """Choose each request's language with ``choose_language`` (Flask-Babel) and give templates
    the catalog, ``language``, ``html_lang``, ``languages`` and ``fmt``."""
    Babel(app, locale_selector=choose_language,
          default_translation_directories=str(i18n.TRANSLATIONS_DIR))
    app.jinja_env.install_gettext_callables(
        gettext=lambda message: i18n.translations(i18n.current()).gettext(message),
        ngettext=lambda singular, plural, n: i18n.translations(i18n.current()).ngettext(
            singular, plural, n),
        newstyle=True)
    app.context_processor(_template_values)
    i18n.set_provider(request_language)
