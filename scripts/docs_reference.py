"""The documentation site's generated pages: mkdocs hook (``hooks:`` in mkdocs.yml).

At build time (``make docs``) :func:`on_files` writes the reference pages from the code
itself, so they cannot drift from it: the box's and the receiver's settings, every
command line, the egress (MQTT) schema, the model package manifest, the reason codes,
the statuses, the DICOM outputs, the benchmark table and the repository's CHANGELOG.md.
Each page is one function of :data:`PAGES` returning Markdown; the unit test
``tests/unit/test_docs_reference.py`` calls them one by one.

It lives outside docs/ (mkdocs would copy a .py under docs/ into the site).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import importlib
import importlib.util
import inspect
import json
import re
import sys
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # mkdocs loads a hook by path; the project's packages by name
    sys.path.insert(0, str(REPO))

GENERATED_NOTE = ("*Generated from the code when the site is built "
                  "(`scripts/docs_reference.py`): do not edit.*")


# -- small Markdown helpers ---------------------------------------------------------------

def cell(text: Any) -> str:
    """``text`` made safe for one Markdown table cell (``<`` outside code is not HTML)."""
    parts = str(text).replace("|", "\\|").replace("\n", " ").strip().split("`")
    return "`".join(part if i % 2 else part.replace("<", "&lt;") for i, part in enumerate(parts))


def table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """A Markdown table."""
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def code(text: Any) -> str:
    """``text`` as inline code (backticks inside it allowed)."""
    text = str(text)
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def inline(text: str) -> str:
    """reST inline markup as Markdown: ````x```` and ``:func:`x``` become ```x```."""
    text = re.sub(r"``(.+?)``", r"`\1`", text, flags=re.S)
    return re.sub(r":(?:func|data|class|meth|attr|mod):`~?([^`]+)`", r"`\1`", text)


def rst_to_md(docstring: str | None) -> str:
    """A module or class docstring (reST-ish) as Markdown: inline code as Markdown's, and a
    paragraph ending in ``::`` opens a code block of the indented lines after it."""
    out: list[str] = []
    in_block = False

    def close() -> None:
        while out and not out[-1].strip():
            out.pop()
        out.extend(["```", ""])

    for line in inline(inspect.cleandoc(docstring or "")).splitlines():
        if in_block:
            if line.strip() and not line.startswith((" ", "\t")):
                close()
                in_block = False
            else:
                if line.strip() or out[-1] != "```text":
                    out.append(line[4:] if line.startswith("    ") else line)
                continue
        if line.rstrip().endswith("::"):
            out.extend([line.rstrip()[:-1], "", "```text"])
            in_block = True
            continue
        out.append(line)
    if in_block:
        close()
    return "\n".join(out).strip()


def sentence(text: str) -> str:
    """A help line as a sentence: capital first, full stop last (empty stays empty)."""
    text = text.strip()
    if not text:
        return ""
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def first_line(docstring: str | None) -> str:
    """The first paragraph of a docstring on one line, as Markdown (empty when none)."""
    return inline(inspect.cleandoc(docstring or "").split("\n\n")[0].replace("\n", " "))


# -- what the code says about its names ---------------------------------------------------

def _assigned(node: ast.stmt) -> list[str]:
    """The plain names a class or module statement assigns (none for anything else)."""
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    if isinstance(node, ast.Assign):
        return [target.id for target in node.targets if isinstance(target, ast.Name)]
    return []


def attribute_docs(owner: Any) -> dict[str, str]:
    """Each name a class or module assigns, with its documentation as Sphinx reads it: the
    ``#:`` comment lines right above it, else the string right below it (empty: none)."""
    source = textwrap.dedent(inspect.getsource(owner))
    lines = source.splitlines()
    tree = ast.parse(source)
    body = tree.body if inspect.ismodule(owner) else tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for i, node in enumerate(body):
        names = _assigned(node)
        if not names:
            continue
        comment: list[str] = []
        above = node.lineno - 2
        while above >= 0 and lines[above].strip().startswith("#:"):
            comment.insert(0, lines[above].strip()[2:].strip())
            above -= 1
        text = " ".join(comment)
        after = body[i + 1] if i + 1 < len(body) else None
        if (not text and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            text = " ".join(inspect.cleandoc(after.value.value).split())
        for name in names:
            docs[name] = inline(text)
    return docs


def group_comments(owner: type) -> dict[str, str]:
    """Each name a class assigns, with the plain ``#`` comment that opens its group (the
    comment lines last seen above it; empty: none)."""
    docs: dict[str, str] = {}
    group: list[str] = []
    in_comment = False
    for line in textwrap.dedent(inspect.getsource(owner)).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#") and not stripped.startswith("#:"):
            group = (group if in_comment else []) + [stripped.lstrip("#").strip()]
            in_comment = True
            continue
        in_comment = False
        match = re.match(r"(\w+)\s*(?::[^=]*)?=", stripped)
        if match and line.startswith("    ") and not line.startswith("     "):
            docs[match[1]] = inline(" ".join(group))
    return docs


def bullet_meanings(docstring: str | None) -> dict[str, str]:
    """A docstring's list of words and meanings (``* ``word`` – meaning``, a bullet running
    on over its indented lines), by word."""
    found: dict[str, str] = {}
    text = inspect.cleandoc(docstring or "")
    for match in re.finditer(r"^\* ``([^`]+)``(?:\s*[–:-]\s*(.+?))?[.;]?\s*(?=^\S|\Z)", text,
                             flags=re.M | re.S):
        meaning = " ".join((match[2] or "").split()).rstrip(";,.")
        found[match[1]] = inline(meaning[:1].upper() + meaning[1:] + ".") if meaning else ""
    return found


# -- settings -----------------------------------------------------------------------------

def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value)) if abs(value) >= 1000 else repr(value)
    return str(value)


def describe_check(check: Callable[[Any], str | None] | None) -> str:
    """What a setting's check allows: a range, a list of words, or the check's docstring."""
    if check is None:
        return ""
    names = inspect.getclosurevars(check).nonlocals
    if {"lo", "hi"} <= set(names):
        return f"{_number(names['lo'])} … {_number(names['hi'])}"
    if "options" in names:
        return "one of " + ", ".join(code(o) if o else '`""`' for o in names["options"])
    return first_line(check.__doc__) or f"checked by `{check.__name__}`"


def _default(spec: dataclasses.Field) -> Any:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return None


def _type_name(spec: dataclasses.Field) -> str:
    name = str(spec.type)
    return {"str": "string", "int": "integer", "float": "number", "bool": "true/false",
            "list[str]": "list of strings"}.get(name, name)


def settings_rows(section: Any) -> list[list[str]]:
    """One row per key of a settings section dataclass: key, type, default, allowed, meaning."""
    from firmware_app.settings.loader import toml_value

    rows = []
    for spec in dataclasses.fields(section):
        default = _default(spec)
        tables = str(spec.type).startswith("list[") and str(spec.type) != "list[str]"
        shown = "(none)" if tables else toml_value(default)
        rows.append([code(spec.name), _type_name(spec), code(shown),
                     describe_check(spec.metadata.get("check")), spec.metadata.get("doc", "")])
    return rows


def settings_sections(root_cls: type, tables: dict[str, type]) -> list[str]:
    """A section per ``[section]`` of ``root_cls`` and per ``[[table]]`` of ``tables``."""
    header = ("key", "type", "default", "allowed", "meaning")
    parts = []
    for section in dataclasses.fields(root_cls):
        cls = section.default_factory if section.default_factory is not dataclasses.MISSING \
            else section.type
        parts += [f"### `[{section.name}]`", "", first_line(cls.__doc__), "",
                  table(header, settings_rows(cls)), ""]
        for name, item_cls in tables.items():
            if name.startswith(section.name + "."):
                parts += [f"#### `[[{name}]]`", "", first_line(item_cls.__doc__), "",
                          table(header, settings_rows(item_cls)), ""]
    return parts


def config_page() -> str:
    """reference/config.md: every section and key of the box's and the receiver's settings."""
    from central import config as central_config
    from firmware_app.settings import box

    parts = [
        "# Configuration reference", "", GENERATED_NOTE, "",
        "Every key is optional: a file holds only what it changes. Unknown keys and values "
        "outside *allowed* are refused with a message naming the key. "
        "`clinibox config` prints the box's example file with every default, and "
        "`clinibox config --check FILE` checks one; `clinibox central config` does the same "
        "for the hospital's receiver.", "",
        "## The box (`clinibox serve --config FILE`, or `$CLINIBOX_CONFIG`)", "",
        rst_to_md(box.__doc__), "",
    ]
    parts += settings_sections(box.Config, {"pacs.destinations": box.PacsDestination,
                                            "routing.rules": box.RoutingRule})
    parts += ["## The hospital's receiver (`clinibox central … --config FILE`)", "",
              rst_to_md(central_config.__doc__), ""]
    parts += settings_sections(central_config.CentralConfig, {})
    return "\n".join([*parts, *converter_settings()])


def _toml_type(annotation: str) -> str:
    """A converter setting's Python annotation as the TOML type it is written in."""
    bare = annotation.removesuffix(" | None")
    names = {"str": "string", "int": "integer", "float": "number", "bool": "true/false",
             "Path": "path", "list[str]": "list of strings",
             "tuple[int, int, int]": "C,H,W (three integers, or a string)"}
    if bare in names:
        return names[bare]
    if bare.startswith("list[dict"):
        return "list of tables"
    if bare.startswith("dict["):
        return "table"
    return bare


def _toml_default(value: Any) -> str:
    from firmware_app.settings.loader import toml_value

    if value is None:
        return "(none)"
    if value == {}:
        return "(empty table)"
    return code(toml_value(list(value) if isinstance(value, tuple) else value))


def converter_settings() -> list[str]:
    """The converter's settings (``convert.toml``, ``converters/config.py``): every key, its
    type, default, command-line option and meaning (its ``#:`` comment, else the option's
    help); the ``[stage]`` and ``gate`` keys."""
    from converters import cli as converter_cli
    from converters import config as convert_config
    from converters.verify import Gate

    options: dict[str, argparse.Action] = {}
    for action in converter_cli.build_parser()._actions:
        if action.option_strings and action.dest not in options:
            options[action.dest] = action
    docs = attribute_docs(convert_config.ConvertConfig)
    rows = []
    for spec in dataclasses.fields(convert_config.ConvertConfig):
        action = options.get(spec.name)
        meaning = sentence(docs.get(spec.name) or (action.help if action and action.help
                                                   else ""))
        rows.append([code(spec.name), _toml_type(str(spec.type)), _toml_default(_default(spec)),
                     ", ".join(code(o) for o in action.option_strings) if action
                     else "file only", meaning])
    stage_docs = attribute_docs(convert_config)
    gate = [[code(f.name), _toml_default(f.default)] for f in dataclasses.fields(Gate)]
    return ["## The workstation's converter (`convert.toml`)", "",
            "`clinibox convert --config convert.toml` (see the [command line](cli.md)).", "",
            rst_to_md(convert_config.__doc__), "",
            table(("key", "type", "default", "command line", "meaning"), rows), "",
            "`[stage]` keys: " + ", ".join(code(k) for k in convert_config.STAGE_KEYS)
            + " (" + stage_docs.get("STAGE_KEYS", "") + "; the stage's keys are those of "
            "the manifest's `stages`).", "",
            "`gate` keys (`converters/verify.py` `Gate`): " + first_line(Gate.__doc__), "",
            table(("key", "default"), gate), ""]


# -- command lines ------------------------------------------------------------------------

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
    from central import cli as central_cli
    from converters import cli as converter_cli
    from converters import cpu_check
    from firmware_app.cli import table as cli_table

    parser = cli_table.build_parser()
    helps = _helps(parser)
    parts = ["# Command line reference", "", GENERATED_NOTE, "",
             cli_table.DESCRIPTION, "",
             "Exit status: 0 done, 1 failed or refused, 2 called wrongly "
             "(`firmware_app/errors.py`). Options may stand before or after the "
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


# -- the egress schema (MQTT) -------------------------------------------------------------

def describe_spec(spec: Any) -> str:
    """One egress field's allowed values, in words."""
    from firmware_app.contracts import egress as e

    if isinstance(spec, e.Optional):
        return "optional; " + describe_spec(spec.spec)
    if isinstance(spec, e.Int):
        if spec.lo == spec.hi:
            return f"integer, always {spec.lo}"
        return f"integer {spec.lo} … {spec.hi}"
    if isinstance(spec, e.Num):
        return f"number {_number(spec.lo)} … {_number(spec.hi)}"
    if isinstance(spec, e.OneOf):
        return "one of " + ", ".join(code(v) for v in spec.values)
    if isinstance(spec, e.Label):
        return f"a finding label of the running model ({code(e.LABEL.pattern)})"
    if isinstance(spec, e.Pattern):
        return f"{spec.what}: {code(spec.regex.pattern)}"
    if isinstance(spec, e.Counts):
        return f"list of exactly {spec.length} counts"
    if isinstance(spec, e.CountsBy):
        return "counts by key; keys from " + ", ".join(code(k) for k in spec.keys)
    if isinstance(spec, e.Obj):
        return "object: " + ", ".join(code(name) for name in spec.fields)
    return type(spec).__name__  # pragma: no cover - a new spec type: shown by its name


def field_comments(source: str) -> dict[tuple[str, ...], str]:
    """The ``#:`` comments of SCHEMAS in egress.py's source, by field path (kind, field …)."""
    comments: dict[tuple[str, ...], str] = {}
    start = source.index("SCHEMAS:")
    path: list[str] = []
    pending: list[str] = []
    for line in source[start:].splitlines()[1:]:
        stripped = line.strip()
        if not stripped:
            continue
        if not line.startswith(" "):
            break
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r'"(\w+)":', stripped)
        if match:
            if pending:
                comments[(*path, match[1])] = inline(" ".join(pending))
            pending = []
            if stripped.endswith("({"):
                path.append(match[1])
            continue
        if stripped.startswith("})"):
            path.pop()
    return comments


def field_rows(obj: Any, prefix: tuple[str, ...], comments: dict[tuple[str, ...], str],
               kind: str) -> list[list[str]]:
    """One row per field of an egress object, nested objects' fields as ``a.b``; a nested
    field without a comment of its own (an object's keys made from a table, such as
    ``feedback``'s verdicts) is its object's comment and its name."""
    from firmware_app.contracts import egress as e

    rows = []
    parent = comments.get((kind, *prefix), "") if prefix else ""
    for name, spec in obj.fields.items():
        path = (*prefix, name)
        inner = spec.spec if isinstance(spec, e.Optional) else spec
        meaning = comments.get((kind, *path)) or (f"{parent}: {code(name)}" if parent else "")
        rows.append([code(".".join(path)), describe_spec(spec), meaning])
        if isinstance(inner, e.Obj):
            rows += field_rows(inner, path, comments, kind)
    return rows


def egress_page() -> str:
    """reference/egress.md: every message kind the box may send and every field of it."""
    from firmware_app.contracts import egress, topics

    comments = field_comments(Path(egress.__file__).read_text(encoding="utf-8"))
    parts = ["# Egress (MQTT) message reference", "", GENERATED_NOTE, "",
             rst_to_md(egress.__doc__), "",
             f"Schema version: **{egress.SCHEMA_VERSION}**. Kinds, in the order the outbox "
             "drains them (lower priority first):", "",
             table(("kind", "priority"), [[code(k), egress.PRIORITY[k]]
                                          for k in sorted(egress.KINDS,
                                                          key=egress.PRIORITY.__getitem__)]),
             "", "## Topics", "", rst_to_md(topics.__doc__), ""]
    for kind in egress.KINDS:
        parts += [f"## `{kind}`", "",
                  "Every field is required unless marked optional; any other field is "
                  "refused.", "",
                  table(("field", "allowed", "meaning"),
                        field_rows(egress.SCHEMAS[kind], (), comments, kind)), ""]
    return "\n".join([*parts, *envelope_section()])


def envelope_section() -> list[str]:
    """The envelope around every message: its wire format and the header fields that leave
    the box in the clear (``firmware_app/contracts/envelope.py``)."""
    from firmware_app.contracts import egress, envelope

    header = json.loads(envelope.Header("clinic", "device", egress.KINDS[0], 1).to_bytes())
    docs = {**attribute_docs(envelope.Header), "v": attribute_docs(envelope).get("VERSION", "")}
    allowed = {"clinic": egress.Pattern(egress.IDENTITY, "clinic id"),
               "device": egress.Pattern(egress.IDENTITY, "device id"),
               "kind": egress.OneOf(egress.KINDS), "seq": egress.Int(1, envelope.MAX_SEQ),
               "v": egress.Int(envelope.VERSION, envelope.VERSION)}
    rows = [[code(name), describe_spec(allowed[name]) if name in allowed else "",
             docs.get(name, "")] for name in header]
    return ["## The envelope", "", rst_to_md(envelope.__doc__), "",
            "### Header fields (signed, not encrypted)", "",
            "The header is canonical JSON (keys sorted, no spaces); a header with any other "
            "field, or not in canonical form, is refused.", "",
            table(("field", "allowed", "meaning"), rows), ""]


# -- the model package manifest -----------------------------------------------------------

def manifest_page() -> str:
    """reference/manifest.md: the model package manifest, its heads, stages and artifacts."""
    from firmware_app.contracts import backends, heads, manifest, stages

    demo = REPO / "models" / "clinibox-demo-lesion" / "1.0.0" / "manifest.json"
    example = json.loads(demo.read_text(encoding="utf-8"))
    parts = ["# Model package manifest reference", "", GENERATED_NOTE, "",
             f"Schema: {code(manifest.SCHEMA)} (`firmware_app/contracts/manifest.py`).", "",
             rst_to_md(manifest.__doc__), "",
             *manifest_keys_section(manifest),
             "## Artifact formats and runtime backends", "",
             rst_to_md(backends.__doc__), "",
             table(("backend", "runs formats", "install", "resident MB"),
                   [[code(b.key), ", ".join(code(f) for f in b.formats), b.install,
                     b.resident_mb] for b in backends.BACKENDS.values()]), "",
             "Precisions: " + ", ".join(code(p) for p in backends.PRECISIONS) + ".", "",
             "## Heads and the validated range", "",
             "Head kinds: " + ", ".join(code(k) for k in heads.HEAD_KINDS)
             + "; activations: " + ", ".join(code(a) for a in heads.ACTIVATIONS) + ".", "",
             rst_to_md(heads.__doc__), "",
             "## Second stages", "", rst_to_md(stages.__doc__), "",
             f"## The demo package's manifest (`{demo.relative_to(REPO)}`)", "",
             "Its top-level keys, as an example of a complete manifest:", "",
             table(("key", "JSON type", "value (short)"),
                   [[code(k), type(v).__name__.replace("dict", "object")
                     .replace("str", "string").replace("list", "array"),
                     _short(v)] for k, v in example.items()]), ""]
    return "\n".join(parts)


def manifest_keys_section(manifest: Any) -> list[str]:
    """Every manifest key the code describes (``contracts/manifest.py`` ``KEYS``), with its
    meaning; objects whose keys are not listed one by one (``OPEN_KEYS``) say so."""
    keys: dict[str, str] = getattr(manifest, "KEYS", {})
    if not keys:
        return []
    open_keys = getattr(manifest, "OPEN_KEYS", frozenset())
    docs = attribute_docs(manifest)
    rows = [[code(key), sentence(inline(meaning)) + (" Its keys are not listed one by one here."
                                                      if key in open_keys else "")]
            for key, meaning in keys.items()]
    return ["## Every key", "", sentence(docs.get("KEYS", "")), "",
            table(("key", "meaning"), rows), ""]


def _short(value: Any) -> str:
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False)
        return code(text if len(text) <= 60 else text[:57] + "…")
    return code(value)


# -- tables other parts of the project own ------------------------------------------------

def _missing(title: str, module: str) -> str:
    return "\n".join([f"# {title}", "", GENERATED_NOTE, "",
                      f"`{module}` is not in this tree yet: this page fills in when it is.", ""])


def in_languages(english: str) -> tuple[str, str]:
    """A catalog message in English and in Chinese (the zh_CN catalog; the English where
    it has no translation yet)."""
    from firmware_app.i18n import CHINESE, gettext, use_locale

    with use_locale(CHINESE):
        return english, gettext(english)


def label_table(enum_cls: type[enum.Enum]) -> tuple[str, dict[Any, str]] | None:
    """The table of ``web/labels.py`` keyed by ``enum_cls``'s members (its name and the
    table), or None where the viewer shows no label for them."""
    from web import labels

    for name, value in vars(labels).items():
        if isinstance(value, dict) and any(isinstance(key, enum_cls) for key in value):
            return name, value
    return None


def enum_section(enum_cls: type[enum.Enum], heading: str) -> list[str]:
    """One enumeration: each member's value, name, meaning (its docstring) and, where the
    viewer shows it, its label in English and Chinese."""
    docs = attribute_docs(enum_cls)
    labelled = label_table(enum_cls)
    parts = [heading, "", first_line(enum_cls.__doc__), ""]
    if labelled is None:
        rows = [[code(m.value), code(m.name), docs.get(m.name, "")] for m in enum_cls]
        return [*parts, table(("value", "name", "meaning"), rows), ""]
    name, labels = labelled
    rows = [[code(m.value), code(m.name), docs.get(m.name, ""),
             *(in_languages(labels[m]) if m in labels else ("", ""))] for m in enum_cls]
    parts += [table(("value", "name", "meaning", "label (English)", "label (中文)"), rows), "",
              f"Labels: `web/labels.py` {code(name)}."]
    others = [key for key in labels if not isinstance(key, enum_cls)]
    if others:
        parts[-1] += " The same table labels words that are not members: " + "; ".join(
            f"{code(key)} ({' / '.join(in_languages(labels[key]))})" for key in others) + "."
    return [*parts, ""]


def words_section(heading: str, intro: str, words: Iterable[str],
                  meanings: dict[str, str], header: tuple[str, str] = ("word", "meaning")
                  ) -> list[str]:
    """A section listing fixed words (from the code) with their meanings."""
    return [heading, "", intro, "",
            table(header, [[code(word), meanings.get(word, "")] for word in words]), ""]


def statuses_page() -> str:
    """reference/statuses.md: every status enum and its values, what each means and how a
    person sees it; the worklist's levels; the hospital's health words and audit verdicts."""
    # wired by the coordinator: firmware_app/contracts/statuses.py is another helper's; every
    # Enum defined in it is listed.
    try:
        statuses = importlib.import_module("firmware_app.contracts.statuses")
    except ImportError:
        return _missing("Statuses", "firmware_app/contracts/statuses.py")
    from central import audit_witness, report
    from firmware_app.storage import studies
    from web import labels

    parts = ["# Statuses", "", GENERATED_NOTE, "", rst_to_md(statuses.__doc__), ""]
    for name, value in vars(statuses).items():
        if (inspect.isclass(value) and issubclass(value, enum.Enum) and len(value)
                and value.__module__ == statuses.__name__):
            parts += enum_section(value, f"## `{name}`")
    label_docs = attribute_docs(labels)
    parts += ["## Worklist levels", "",
              sentence(label_docs.get("LEVELS", "") + " (`web/labels.py` `LEVELS`)") + " "
              + sentence(first_line(studies.study_level.__doc__)), "",
              table(("level", "label (English)", "label (中文)"),
                    [[code(word), *in_languages(english)]
                     for word, english in labels.LEVELS.items()]), ""]
    health = bullet_meanings(report.__doc__)
    parts += words_section(
        "## The hospital's health words", "`clinibox central report` gives each device one "
        "health word, from worst to best (`central/report.py` `HEALTH_ORDER`).",
        report.HEALTH_ORDER, health, ("health", "meaning"))
    verdicts = bullet_meanings(audit_witness.__doc__)
    alarm_docs = attribute_docs(audit_witness)
    parts += words_section(
        "## Audit-head verdicts", first_line(audit_witness.__doc__) + " Each head a box's "
        "heartbeat reports gets one verdict against the head witnessed before it "
        "(`central/audit_witness.py` `VERDICTS`); "
        + alarm_docs.get("ALARMS", "").rstrip(".").lower() + ": "
        + ", ".join(code(word) for word in audit_witness.ALARMS) + ".",
        audit_witness.VERDICTS, verdicts, ("verdict", "meaning"))
    return "\n".join(parts)


def reasons_page() -> str:
    """reference/reasons.md: every reason code, its group and its wording in English and
    Chinese; the C-STORE refusal codes and the event log's codes, each with its meaning."""
    # firmware_app/contracts/reasons.py (ReasonCode, TEMPLATES, reason_table) is another
    # helper's; until it is here the page says so.
    try:
        reasons = importlib.import_module("firmware_app.contracts.reasons")
    except ImportError:
        return _missing("Reason codes", "firmware_app/contracts/reasons.py")
    wording = importlib.import_module("web.reasons")
    reason_table = getattr(reasons, "reason_table", None) or getattr(wording, "reason_table",
                                                                      None)
    templates = {str(getattr(c, "value", c)): t for c, t in reason_table()} if reason_table \
        else {}
    groups = group_comments(reasons.ReasonCode)
    verbatim = {str(c.value) for c in getattr(reasons, "VERBATIM", ())}
    names = {member.value: member.name for member in reasons.ReasonCode}
    codes = [*names, *(c for c in templates if c not in names)]
    rows = []
    for word in codes:
        english = templates.get(word, "")
        chinese = english if word in verbatim or not english else in_languages(english)[1]
        rows.append([code(word), groups.get(names.get(word, ""), ""), english, chinese])
    docs = attribute_docs(reasons)
    parts = ["# Reason codes", "", GENERATED_NOTE, "", rst_to_md(reasons.__doc__), "",
             sentence(docs.get("TEMPLATES", "")) + " The Chinese wording is the zh_CN "
             "catalog's.", "",
             table(("code", "group", "English wording", "Chinese wording (中文)"), rows), ""]
    if verbatim:
        parts += [sentence(docs.get("VERBATIM", "")) + " These are "
                  + ", ".join(code(c) for c in sorted(verbatim)) + ".", ""]
    return "\n".join([*parts, *refusals_section(), *event_codes_section()])


def refusals_section() -> list[str]:
    """The C-STORE refusal codes (``firmware_app/ingest/store_checks.py`` ``Refusal``): code,
    the DICOM status answered, meaning."""
    from firmware_app.ingest import store_checks

    docs = attribute_docs(store_checks.Refusal)
    constants = attribute_docs(store_checks)
    status_names = {value: name for name, value in vars(store_checks).items()
                    if name.isupper() and isinstance(value, int) and name in constants
                    and value >= 0xA000}
    rows = []
    for member in store_checks.Refusal:
        status = status_names.get(member.status, "").lower().replace("_", " ")
        rows.append([code(member.value), f"0x{member.status:04X} ({status})",
                     docs.get(member.name, "")])
    return ["## C-STORE refusals", "",
            sentence(first_line(store_checks.Refusal.__doc__)) + " "
            + first_line(store_checks.__doc__), "",
            table(("code", "C-STORE status", "meaning"), rows), ""]


def event_codes_section() -> list[str]:
    """The codes of the box's event log (``events.code``), from the modules that count them
    (``firmware_app/ingest/landing.py``: every ``*_EVENT`` word)."""
    from firmware_app.ingest import landing
    from firmware_app.storage import db

    docs = attribute_docs(landing)
    rows = [[code(value), sentence(docs.get(name, ""))]
            for name, value in vars(landing).items()
            if name.endswith("_EVENT") and isinstance(value, str)]
    writes = first_line(db.record_event.__doc__)
    return ["## Event codes", "",
            "The box's event log, as `record_event` (`firmware_app/storage/db.py`) writes "
            "it: " + writes[:1].lower() + writes[1:], "", table(("code", "meaning"), rows), ""]


def dicom_outputs_page() -> str:
    """reference/dicom-outputs.md: the one table of DICOM outputs the box sends."""
    # wired by the coordinator: firmware_app/contracts/dicom_outputs.py (DICOM_OUTPUTS) is
    # another helper's; a dict or sequence of dataclass rows is rendered column by column.
    try:
        outputs = importlib.import_module("firmware_app.contracts.dicom_outputs")
    except ImportError:
        return _missing("DICOM outputs", "firmware_app/contracts/dicom_outputs.py")
    rows_in = outputs.DICOM_OUTPUTS
    items = list(rows_in.values()) if isinstance(rows_in, dict) else list(rows_in)
    parts = ["# DICOM outputs", "", GENERATED_NOTE, "", rst_to_md(outputs.__doc__), ""]
    if items and dataclasses.is_dataclass(items[0]):
        names = [f.name for f in dataclasses.fields(items[0])]
        rows = [[_plain(getattr(item, n)) for n in names] for item in items]
        parts += [table(names, rows), ""]
    else:
        parts += [table(("output",), [[_plain(item)] for item in items]), ""]
    return "\n".join(parts)


def _plain(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (tuple, list, frozenset, set)):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def benchmarks_page() -> str:
    """reference/benchmarks.md: bench/results/**/*.json as a table (bench/table.py)."""
    script = REPO / "bench" / "table.py"
    results = REPO / "bench" / "results"
    head = ["# Benchmark results", "", GENERATED_NOTE, "",
            "How they are run and read: [Benchmarks](../development/benchmarks.md).", ""]
    if not script.is_file():
        return "\n".join([*head, "No results yet (`bench/table.py` is not in this tree).", ""])
    spec = importlib.util.spec_from_file_location("clinibox_bench_table", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    body = module.render(results)
    return "\n".join([*head, body.strip() or "No results yet.", ""])


def changelog_page() -> str:
    """changelog.md: the repository's CHANGELOG.md, its links made to work in the site."""
    source = REPO / "CHANGELOG.md"
    if not source.is_file():
        return "# Changelog\n\nNo changelog yet.\n"
    return site_links(source.read_text(encoding="utf-8"))


def site_links(text: str) -> str:
    """Relative links of a repository-root Markdown file, for the site's root: ``docs/x.md``
    becomes ``x.md``; a link to another file of the repository becomes its path in code."""
    def fix(match: re.Match[str]) -> str:
        label, target = match[1], match[2]
        if re.match(r"[a-z]+:|#", target):
            return match[0]
        if target.startswith("docs/"):
            return f"[{label}]({target[len('docs/'):]})"
        return f"{label} ({code(target)})"

    return re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", fix, text)


#: generated page -> the function writing it
PAGES: dict[str, Callable[[], str]] = {
    "reference/config.md": config_page,
    "reference/cli.md": cli_page,
    "reference/egress.md": egress_page,
    "reference/manifest.md": manifest_page,
    "reference/reasons.md": reasons_page,
    "reference/statuses.md": statuses_page,
    "reference/dicom-outputs.md": dicom_outputs_page,
    "reference/benchmarks.md": benchmarks_page,
    "changelog.md": changelog_page,
}


def on_files(files: Any, config: Any) -> Any:
    """mkdocs hook: add every generated page (replacing a file of the same name)."""
    from mkdocs.structure.files import File

    for uri, build in PAGES.items():
        existing = files.get_file_from_path(uri)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, uri, content=build()))
    return files
