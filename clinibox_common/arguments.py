"""The argument parser every clinibox command line uses: options in any order.

argparse matches an optional positional (``nargs="?"``) before it has seen the
words after an option, so ``clinibox model verify --trust KEY.pub PATH`` failed
with "unrecognized arguments" while ``verify PATH --trust KEY.pub`` worked.
:class:`CommandParser` parses each command's own words intermixed (positionals
first, then options, wherever they stand), so both orders mean the same.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose options may stand before, between or after its positionals.

    A parser with subcommands parses as usual and hands the rest to the
    subcommand's parser (also a CommandParser), which parses intermixed.
    """

    _intermixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse ``args``; a command without subcommands takes options in any order."""
        if self._intermixing or self._subparsers is not None:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return super().parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

