"""``clinibox central``: the hospital's command line, assembled from the receiver's commands
(``central/cli.py``), the rollouts' (``central/rollout_cli.py``) and the console's
(``central_console/cli.py``) and federated fine-tuning's (``federated_command.py``), each
registering its own."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from central import cli as receiver_cli
from central import config as config_module
from central import rollout_cli
from central_console import cli as console_cli
from clinibox import federated_command
from clinibox_common.arguments import CommandParser
from clinibox_common.errors import EXIT_OK, EXIT_USAGE, run_command

#: the commands that run as services: their logs stay English whatever the terminal speaks
SERVICE_COMMANDS = frozenset({"serve", "web", "superlink"})


def build_parser(prog: str = "clinibox central") -> argparse.ArgumentParser:
    """The argument parser of ``clinibox central``."""
    parser = CommandParser(prog=prog, description="The hospital's receiver.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", help="central config file (TOML); defaults if omitted")
        p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
        p.set_defaults(func=func)
        return p

    receiver_cli.add_commands(command)
    rollout_cli.add_rollout_commands(command)
    console_cli.add_commands(command)
    federated_command.add_commands(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``clinibox central`` with ``argv`` (without the ``central`` word); return the status."""
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse: --help (0) or bad usage (2)
        return EXIT_OK if exc.code in (0, None) else EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from clinibox_common import i18n

    # services keep their logs English; a command for a person speaks the terminal's language
    language = i18n.ENGLISH if args.command in SERVICE_COMMANDS or getattr(args, "json", False) \
        else i18n.from_environment() or i18n.ENGLISH
    root = logging.getLogger()
    level = root.level
    if language != i18n.ENGLISH and not args.verbose:  # the command says what happened in
        root.setLevel(logging.ERROR)  # the reader's words; the English log lines are the journal's
    try:
        with i18n.use_locale(language):
            return run_command("clinibox central",
                               lambda: args.func(args, config_module.load(args.config)))
    finally:  # a caller in this process (a test, a script) keeps its own logging
        root.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
