"""The box's languages: English (the source strings) and Simplified Chinese (``zh_CN``).

One gettext catalog (``translations/zh_CN/LC_MESSAGES/messages.po``, compiled
to ``messages.mo`` beside it) holds every sentence a person reads: the viewer
(through Flask-Babel, ``web/i18n.py``), the PDF report, the self-test table
and the messages of the ``clinibox`` commands. Code marks a sentence with
``_()`` (translated now, in the current language) or ``N_()`` (only marked,
for a constant translated where it is shown); ``make translations`` extracts
the marks (``babel.cfg``) and updates the catalog.

The current language is, in order: a ``use_locale`` block around the call,
the provider the viewer installs (the request's language), the process
default (the command line sets it from the environment or ``[web] language``),
English. This package is the bottom layer: it imports nothing of clinibox.
"""

from clinibox_common.i18n.catalog import (
    CHINESE,
    DOMAIN,
    ENGLISH,
    LANGUAGE_NAMES,
    LANGUAGES,
    N_,
    TRANSLATIONS_DIR,
    current,
    default,
    gettext,
    ngettext,
    set_default,
    set_provider,
    translations,
    use_locale,
)
from clinibox_common.i18n.tags import from_environment, html_lang, normalise

_ = gettext

__all__ = [
    "CHINESE",
    "DOMAIN",
    "ENGLISH",
    "LANGUAGES",
    "LANGUAGE_NAMES",
    "N_",
    "TRANSLATIONS_DIR",
    "_",
    "current",
    "default",
    "from_environment",
    "gettext",
    "html_lang",
    "ngettext",
    "normalise",
    "set_default",
    "set_provider",
    "translations",
    "use_locale",
]
