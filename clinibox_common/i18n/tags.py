"""Language tags as browsers, terminals and the config write them, reduced to the box's two.

``normalise`` maps a BCP 47 tag (``zh-CN``, ``zh-Hans``), a POSIX locale name
(``zh_CN.UTF-8``) or a Babel locale (``zh_Hans_CN``) to ``"zh_CN"`` or
``"en"``, and anything else to None (the caller tries its next source).
Traditional Chinese (``zh-TW``, ``zh-HK``, ``zh-Hant``) is not Simplified
Chinese: it gives None, so a browser that also accepts ``zh`` or ``en``
gets those.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

CHINESE, ENGLISH = "zh_CN", "en"
#: regions and scripts whose Chinese is Traditional: not offered Simplified Chinese by name
_TRADITIONAL = frozenset({"hant", "tw", "hk", "mo"})
#: the POSIX variables that name the language of messages, strongest first
ENVIRONMENT_VARIABLES = ("LC_ALL", "LC_MESSAGES", "LANG")


def normalise(tag: object) -> str | None:
    """``"zh_CN"``, ``"en"`` or None for a language tag, locale name or Babel locale."""
    if tag is None:
        return None
    text = str(tag).strip().split(".", 1)[0].split("@", 1)[0]
    parts = [p.lower() for p in text.replace("-", "_").split("_") if p]
    if not parts:
        return None
    if parts[0] == "zh":
        return None if _TRADITIONAL.intersection(parts[1:]) else CHINESE
    if parts[0] == "en":
        return ENGLISH
    return None


def from_environment(environ: Mapping[str, str] | None = None) -> str | None:
    """The language the POSIX environment asks for (``LC_ALL`` > ``LC_MESSAGES`` > ``LANG``).

    The first variable that is set decides, as for every program; ``C`` and
    ``POSIX`` (and languages the box does not speak) name none: None.
    """
    environ = os.environ if environ is None else environ
    for name in ENVIRONMENT_VARIABLES:
        value = environ.get(name, "")
        if value:
            return normalise(value)
    return None


def html_lang(language: str) -> str:
    """The HTML ``lang`` attribute of a box language: ``zh-CN`` or ``en``."""
    return "zh-CN" if language == CHINESE else "en"
