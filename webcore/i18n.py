"""Each request's language (Flask-Babel) and the catalog in the templates, for any clinibox app.

The app says how a request's language is chosen (``choose_language``: the box's
viewer asks the account, the session, ``[web] language``, the browser, then English);
``browser_language`` is the browser's part of that walk. Templates call ``_()`` /
``ngettext()`` (Jinja's i18n extension, new style: placeholders filled and escaped by
Jinja) on the same catalog as the code (``firmware_app.i18n``), and format dates and
numbers with ``fmt`` (``firmware_app.i18n.formats``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, has_request_context, request
from flask_babel import Babel, get_locale

from firmware_app import i18n
from firmware_app.i18n import formats


def browser_language() -> str | None:
    """The first language of the browser's ``Accept-Language`` (best first) that the catalog
    has, or None (``zh``, ``zh-CN``, ``zh-Hans`` mean Simplified Chinese; Traditional Chinese
    tags do not)."""
    for tag, quality in request.accept_languages:
        language = i18n.normalise(tag)
        if language and quality > 0:
            return language
    return None


def request_language() -> str | None:
    """The provider ``firmware_app.i18n`` asks: the request's language (None outside one)."""
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
