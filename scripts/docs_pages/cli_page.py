"""reference/cli.md: every command line, from the parsers themselves."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable

from docs_pages.markdown import GENERATED_NOTE, code, first_line, rst_to_md, sentence, table


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _argument_row(action: argparse.Action) -> list[str]:
    if action.option_strings:
        name = ", ".join(action.option_strings)
        if action.nargs != 0:
            metavar = action.metavar or action.dest.upper()
            name += " " + (" ".join(metavar) if isinstance(metavar, tuple) else metavar)
    else:
        name = action.metavar or action.dest
        name = " ".join(name) if isinstance(name, tuple) else name
    notes = []
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        notes.append("one of " + ", ".join(code(c) for c in action.choices))
    if action.required and action.option_strings:
        notes.append("required")
    if action.nargs in ("*", "+") or isinstance(action, argparse._AppendAction):
        notes.append("repeatable" if action.option_strings else "one or more")
    if action.nargs == "?" and not action.option_strings:
        notes.append("optional")
    if action.default not in (None, False, argparse.SUPPRESS, []) and action.nargs != 0:
        notes.append(f"default {code(action.default)}")
    helptext = action.help or ""
    if "%" in helptext:  # argparse formats help with % (``%%`` is a percent sign)
        helptext = helptext % {"default": action.default, "prog": ""}
    return [code(name), helptext, "; ".join(notes)]


def command_sections(parser: argparse.ArgumentParser, words: str, level: int,
                     helps: dict[str, str], only: Iterable[str] | None = None) -> list[str]:
    """A section per subcommand of ``parser`` (recursively; ``only`` these at the top):
    usage, help, arguments."""
    sub = _subparsers(parser)
    if sub is None:
        return []
    parts: list[str] = []
    names = list(sub.choices) if only is None else list(only)
    for name in names:
        child = sub.choices[name]
        full = f"{words} {name}"
        parts += [f"{'#' * level} `{full}`", ""]
        text = helps.get(name) or child.description or ""
        if text:
            parts += [sentence(text), ""]
        usage = child.format_usage().replace("usage: ", "", 1).strip()
        parts += ["```text", re.sub(r"\s+", " ", usage), "```", ""]
        rows = [_argument_row(a) for a in child._actions
                if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
        if rows:
            parts += [table(("argument", "what it is", "notes"), rows), ""]
        child_helps = {}
        inner = _subparsers(child)
        if inner is not None:
            child_helps = {a.dest: a.help or "" for a in inner._choices_actions}
        parts += command_sections(child, full, min(level + 1, 6), child_helps)
    return parts


def _helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    sub = _subparsers(parser)
    return {a.dest: a.help or "" for a in sub._choices_actions} if sub else {}


def cli_page() -> str:
    """reference/cli.md: every ``clinibox`` command, its subcommands, arguments and help,
    from the parsers themselves (built as ``clinibox --help`` builds them)."""
    from clinibox import central_command as central_cli
    from clinibox import table as cli_table
    from converters import cli as converter_cli
    from converters import cpu_check

    parser = cli_table.build_parser()
    helps = _helps(parser)
    parts = ["# Command line reference", "", GENERATED_NOTE, "",
             cli_table.DESCRIPTION, "",
             "Exit status: 0 done, 1 failed or refused, 2 called wrongly "
             "(`clinibox_common/errors.py`). Options may stand before or after the "
             "positional arguments.", "",
             table(("command", "what it does"),
                   [[code(f"clinibox {name}"), helps.get(name, "")] for name in
                    (*cli_table.COMMANDS, *cli_table.HANDED_ON)]), "",
             "## The box's commands", ""]
    parts += command_sections(parser, "clinibox", 3, helps, only=cli_table.COMMANDS)
    parts += ["## The hospital's receiver: `clinibox central`", "",
              rst_to_md(central_cli.__doc__), ""]
    central_parser = central_cli.build_parser()
    parts += command_sections(central_parser, "clinibox central", 3, _helps(central_parser))
    parts += ["## The workstation's converter: `clinibox convert`", "",
              "`clinibox convert` runs every step; `clinibox STEP` one of "
              + ", ".join(code(s) for s in cli_table.CONVERTER_STEPS)
              + " alone, with the same options (the `convert` extra).", ""]
    convert = converter_cli.build_parser()
    rows = [_argument_row(a) for a in convert._actions if not isinstance(a, argparse._HelpAction)]
    parts += ["```text", re.sub(r"\s+", " ", convert.format_usage().replace("usage: ", "", 1)),
              "```", "", table(("argument", "what it is", "notes"), rows), "",
              "## `clinibox cpu-check`", "", first_line(cpu_check.__doc__), ""]
    check = cpu_check.build_parser()
    rows = [_argument_row(a) for a in check._actions if not isinstance(a, argparse._HelpAction)]
    parts += ["```text", re.sub(r"\s+", " ", check.format_usage().replace("usage: ", "", 1)),
              "```", "", table(("argument", "what it is", "notes"), rows), ""]
    return "\n".join(parts)
