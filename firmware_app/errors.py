"""The one error hierarchy of clinibox and the exit statuses of its commands.

Every error a technician may meet derives from :class:`CliniboxError`, which
carries its message and the exit status a command ends with; the command line
maps it to that status in one place (``firmware_app/cli/commands.py``). Domain
errors keep the standard base they had (``ValueError``, ``OSError``) beside it,
so code that catches those still does.
"""

from __future__ import annotations

#: the command did what was asked
EXIT_OK = 0
#: the command ran and found or met a failure (a refused package, a failed check)
EXIT_FAIL = 1
#: the command was called wrongly (bad option, bad config file, missing file)
EXIT_USAGE = 2


class CliniboxError(Exception):
    """An error with a message a technician can act on and the exit status it ends a command with.

    Subclasses set ``exit_status`` (default :data:`EXIT_FAIL`) and ``kind``, the
    words the command line prints before the message.
    """

    exit_status: int = EXIT_FAIL
    kind: str = "error"

    @property
    def message(self) -> str:
        """The error's message as the command line prints it."""
        return str(self)


class UsageError(CliniboxError):
    """A command called wrongly: bad options, a missing or unreadable input."""

    exit_status = EXIT_USAGE
    kind = "usage error"
