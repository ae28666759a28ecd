"""The message catalog and the current language: ``gettext``, ``ngettext``, ``use_locale``.

Messages use Python's named ``%(name)s`` placeholders, as Jinja's
``_('… %(n)s', n=…)`` does, so one catalog serves code and templates;
placeholders are filled only when values are given.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import gettext as gettext_module
from collections.abc import Callable, Iterator
from pathlib import Path

from babel import support

from clinibox_common.i18n.tags import CHINESE, ENGLISH, normalise

#: the folder of ``<language>/LC_MESSAGES/messages.{po,mo}``
TRANSLATIONS_DIR = Path(__file__).resolve().parent / "translations"
DOMAIN = "messages"
LANGUAGES = (ENGLISH, CHINESE)
#: each language's name in itself, for the switch in the viewer's header
LANGUAGE_NAMES = {CHINESE: "中文", ENGLISH: "English"}

_default = ENGLISH
_provider: Callable[[], object] | None = None
_override: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "clinibox_language", default=None)


def N_(message: str) -> str:  # the name gettext tools look for
    """Mark ``message`` for the catalog without translating it (translate it where shown)."""
    return message


def set_default(language: object) -> None:
    """The language of this process when nothing else chooses (English if not one we speak)."""
    global _default
    _default = normalise(language) or ENGLISH


def default() -> str:
    """The process's default language."""
    return _default


def set_provider(provider: Callable[[], object] | None) -> None:
    """Install the function that names the language of the work in hand (the viewer's
    request), or None; it returns None when it has nothing to say."""
    global _provider
    _provider = provider


def current() -> str:
    """The language now: a ``use_locale`` block, else the provider's, else the default."""
    chosen = _override.get()
    if chosen:
        return chosen
    if _provider is not None:
        provided = normalise(_provider())
        if provided:
            return provided
    return _default


@contextlib.contextmanager
def use_locale(language: object) -> Iterator[str]:
    """Within the block, messages are in ``language`` (English if not one we speak)."""
    token = _override.set(normalise(language) or ENGLISH)
    try:
        yield _override.get() or ENGLISH
    finally:
        _override.reset(token)


@functools.cache
def translations(language: str) -> gettext_module.NullTranslations:
    """The compiled catalog of ``language`` (English: the source strings themselves)."""
    if language == ENGLISH:
        return support.NullTranslations()
    return support.Translations.load(str(TRANSLATIONS_DIR), [language], DOMAIN)


def gettext(message: str, /, **values: object) -> str:
    """``message`` in the current language, its ``%(name)s`` placeholders filled from
    ``values`` (when given)."""
    text = translations(current()).gettext(message)
    return text % values if values else text


def ngettext(singular: str, plural: str, n: int, /, **values: object) -> str:
    """The singular or plural form for ``n`` in the current language; ``%(num)s`` is ``n``."""
    text = translations(current()).ngettext(singular, plural, n)
    return text % {"num": n, **values}
