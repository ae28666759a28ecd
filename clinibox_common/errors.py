"""The one error hierarchy of clinibox and the exit statuses of its commands.

Every error a technician may meet derives from :class:`CliniboxError`, which
carries its message and the exit status a command ends with; every command
line (``clinibox``, ``clinibox central``, ``clinibox convert``) maps it to
that status with :func:`run_command`, in one place. Domain errors keep the
standard base they had (``ValueError``, ``OSError``, ``RuntimeError``) beside
it, so code that catches those still does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from clinibox_common.i18n import N_, gettext

#: the command did what was asked
EXIT_OK = 0
#: the command ran and met a failure or a refusal (a refused package, a failed check)
EXIT_FAIL = 1
#: the command was called wrongly (bad option, bad config file, unreadable input)
EXIT_USAGE = 2


class CliniboxError(Exception):
    """An error with a message a technician can act on and the exit status it ends a command with.

    Subclasses set ``exit_status`` (default :data:`EXIT_FAIL`) and ``kind``,
    the words the command line prints before the message; one raise may
    override the status with ``exit_status=``.
    """

    exit_status: int = EXIT_FAIL
    kind: str = N_("error")

    def __init__(self, *args: object, exit_status: int | None = None) -> None:
        super().__init__(*args)
        if exit_status is not None:
            self.exit_status = exit_status


def run_command(prog: str, command: Callable[[], int]) -> int:
    """Run ``command``; a CliniboxError becomes ``prog: kind: message`` on stderr and its status
    (``kind`` in the current language when the catalog has it)."""
    try:
        return command()
    except CliniboxError as exc:
        print(f"{prog}: {gettext(exc.kind)}: {exc}", file=sys.stderr)
        return exc.exit_status
