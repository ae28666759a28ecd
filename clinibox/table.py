"""``clinibox``: the command table, the parser and the entry point (the composition root, on the
top floor: it alone may import every application).

Every command is one row of :data:`COMMANDS`: its name and the module that
registers it (``add_parsers(sub, with_config)``). Only the module of the
command being run is imported, so ``clinibox status`` does not load the
provisioning, USB or self-test code; ``clinibox --help`` loads them all to
list every command. Messages for people are in the terminal's language
(``firmware_app/cli/language.py``). The hospital's receiver (``clinibox central …``) and the
workstation's converter (``clinibox convert`` and its steps) have their own
command lines, handed the rest of the words.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from clinibox_common.arguments import CommandParser
from clinibox_common.errors import EXIT_USAGE, run_command
from clinibox_common.i18n import ENGLISH, use_locale

DESCRIPTION = ("The clinibox appliance: the box's commands. At the hospital, 'clinibox central' "
               "runs the receiver; on a workstation with the convert extra, 'clinibox convert' "
               "turns a trained PyTorch model into signed model packages.")
BOX = "firmware_app.cli.commands"
#: command name -> the module that registers it
COMMANDS: dict[str, str] = {
    "serve": BOX, "web": "clinibox.viewer_command", "infer": BOX, "status": BOX, "results": BOX,
    "model": "firmware_app.cli.model", "service-failed": "firmware_app.cli.model",
    "keys": BOX,
    "outbox": "firmware_app.cli.telemetry", "identity": "firmware_app.cli.telemetry",
    "study": "firmware_app.cli.telemetry",
    "export-study": "firmware_app.cli.export", "export-disagreements": "firmware_app.cli.export",
    "audit": "firmware_app.cli.audit",
    "retention": "firmware_app.cli.retention",
    "dicom-out": "firmware_app.cli.dicom_out",
    "records": "firmware_app.cli.records",
    "usb-import": "firmware_app.cli.usb", "console-banner": "firmware_app.cli.console_banner",
    "provision": "firmware_app.ops.provision",
    "selftest": "firmware_app.ops.selftest",
    "hospital-time": "firmware_app.ops.hospital_clock",
    "user": "firmware_app.cli.users",
    "config": BOX,
    "live": "firmware_app.cli.live", "demo-video": "firmware_app.cli.live",
    "software": "firmware_app.cli.software",
    "learning": "firmware_app.learning.command",
}
CONVERTER_STEPS = ("distill", "prune", "export", "quantize", "verify", "package")
#: commands with a command line of their own: name -> what ``clinibox --help`` says of them
HANDED_ON: dict[str, str] = {
    "convert": "converter toolchain (workstation): see clinibox convert --help",
    **{step: f"converter step {step!r} alone" for step in CONVERTER_STEPS},
    "cpu-check": "a model package's golden cases on other CPU classes, emulated (workstation)",
    "central": "the hospital's receiver: see clinibox central --help",
}


def with_config(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give a command the ``--config`` option every box command takes."""
    parser.add_argument("--config", help="TOML config file (default: embedded defaults)")
    return parser


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for ``command`` (its module imported), or for every command when None."""
    parser = CommandParser(prog="clinibox", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    loaded: set[str] = set()
    for name, module in COMMANDS.items():
        if (command is None or name == command) and module not in loaded:
            importlib.import_module(module).add_parsers(sub, with_config)
            loaded.add(module)
    for name in (*COMMANDS, *HANDED_ON):
        if name not in sub.choices:  # listed, not loaded: argparse still names it in errors
            sub.add_parser(name, add_help=False, help=HANDED_ON.get(name))
    return parser


def run_converter(argv: list[str]) -> int:
    """``clinibox convert …`` / ``clinibox <step> …``: the workstation toolchain."""
    try:
        from converters import cli as converter_cli
    except ImportError as exc:
        print(f"the converter needs the convert extra (pip install 'clinibox[convert]'): {exc}",
              file=sys.stderr)
        return EXIT_USAGE
    if argv[0] == "convert":
        return converter_cli.main(argv[1:])
    if argv[0] == "cpu-check":
        from converters import cpu_check
        from firmware_app.settings.box import load

        return cpu_check.main(argv[1:], lambda: load(None).trusted_key_paths)
    return converter_cli.main(argv, prog=f"clinibox {argv[0]}")


def run_central(argv: list[str]) -> int:
    """``clinibox central …``: the hospital's receiver, enrolment and reports."""
    from clinibox import central_command

    return central_command.main(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``clinibox`` console script."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # it logs every module it copies
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("convert", "cpu-check", *CONVERTER_STEPS):
        return run_converter(argv)
    if argv and argv[0] == "central":
        return run_central(argv[1:])
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(command).parse_args(argv)
    from firmware_app.cli.language import command_language, speaks_english

    if speaks_english(args):  # services: no language set, their records English
        return run_command("clinibox", lambda: args.func(args))
    language = command_language(args)
    root = logging.getLogger()
    level = root.level
    if language != ENGLISH:  # the command says what happened in the reader's words; the
        root.setLevel(logging.ERROR)  # English log lines are the journal's
    try:
        with use_locale(language):
            return run_command("clinibox", lambda: args.func(args))
    finally:  # a caller in this process (a test, a script) keeps its own logging
        root.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
