"""The language of a ``clinibox`` command's messages for people.

In order: ``--json`` output is English (a contract, like its keys); commands that
run as services or write files (``serve``, ``web``, ``service-failed``,
``usb-import``, ``config``) stay English, so logs, events and the records the
box keeps read the same everywhere, and so does ``console-banner``, the appliance's
screen, as the Linux console has no Chinese font (``config --check FILE``, a
technician's check of the file, speaks the reader's language); otherwise the
terminal's language (``LC_ALL``, ``LC_MESSAGES``, ``LANG``: ``zh_CN.UTF-8`` gives
Chinese, ``en_US.UTF-8`` English), and where it names neither (``C``, ``C.UTF-8``,
unset) the clinic's ``[web] language``; else English. ``--help`` and
argparse's own messages stay English.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from clinibox_common import i18n
from clinibox_common.errors import CliniboxError
from firmware_app.settings import box as config_module

#: commands whose output is not for a person at a terminal (or is a file): always English
#: (``config --check FILE`` excepted: it tells a person what is wrong in the file)
ENGLISH_COMMANDS = frozenset({"serve", "web", "service-failed", "usb-import", "config", "live",
                              "console-banner"})


def speaks_english(args: argparse.Namespace) -> bool:
    """Whether ``args``'s command is one of ENGLISH_COMMANDS (``config --check`` is not: a
    technician reads its refusals)."""
    if args.command == "config" and getattr(args, "check", None):
        return False
    return args.command in ENGLISH_COMMANDS


def command_language(args: argparse.Namespace, environ: Mapping[str, str] | None = None
                     ) -> str:
    """The language ``args``'s command speaks in (the rules of the module's docstring)."""
    if getattr(args, "json", False) or speaks_english(args):
        return i18n.ENGLISH
    chosen = i18n.from_environment(environ)
    if chosen:
        return chosen
    try:
        configured = config_module.load(getattr(args, "config", None)).web.language
    except (CliniboxError, OSError, ValueError):
        return i18n.ENGLISH  # the command itself reports a bad config
    return i18n.normalise(configured) or i18n.ENGLISH
