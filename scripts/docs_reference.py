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
import dataclasses
import enum
import importlib
import importlib.util
import inspect
import json
import re
import sys
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
    return re.sub(r":(?:func|data|class|meth|attr):`~?([^`]+)`", r"`\1`", text)


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
    """A help line as a sentence: capital first, full stop last."""
    text = text.strip()
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def first_line(docstring: str | None) -> str:
    """The first paragraph of a docstring on one line, as Markdown (empty when none)."""
    return inline(inspect.cleandoc(docstring or "").split("\n\n")[0].replace("\n", " "))


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
    return "\n".join(parts)


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
                comments[(*path, match[1])] = re.sub(r"``(.+?)``", r"`\1`", " ".join(pending))
            pending = []
            if stripped.endswith("({"):
                path.append(match[1])
            continue
        if stripped.startswith("})"):
            path.pop()
    return comments


def field_rows(obj: Any, prefix: tuple[str, ...], comments: dict[tuple[str, ...], str],
               kind: str) -> list[list[str]]:
    """One row per field of an egress object, nested objects' fields as ``a.b``."""
    from firmware_app.contracts import egress as e

    rows = []
    for name, spec in obj.fields.items():
        path = (*prefix, name)
        inner = spec.spec if isinstance(spec, e.Optional) else spec
        rows.append([code(".".join(path)), describe_spec(spec),
                     comments.get((kind, *path), "")])
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
    return "\n".join(parts)


# -- the model package manifest -----------------------------------------------------------

def manifest_page() -> str:
    """reference/manifest.md: the model package manifest, its heads, stages and artifacts."""
    from firmware_app.contracts import backends, heads, manifest, stages

    demo = REPO / "models" / "clinibox-demo-lesion" / "1.0.0" / "manifest.json"
    example = json.loads(demo.read_text(encoding="utf-8"))
    parts = ["# Model package manifest reference", "", GENERATED_NOTE, "",
             f"Schema: {code(manifest.SCHEMA)} (`firmware_app/contracts/manifest.py`).", "",
             rst_to_md(manifest.__doc__), "",
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


def _short(value: Any) -> str:
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False)
        return code(text if len(text) <= 60 else text[:57] + "…")
    return code(value)


# -- tables other parts of the project own ------------------------------------------------

def _missing(title: str, module: str) -> str:
    return "\n".join([f"# {title}", "", GENERATED_NOTE, "",
                      f"`{module}` is not in this tree yet: this page fills in when it is.", ""])


def _enum_rows(enum_cls: type[enum.Enum]) -> list[list[str]]:
    return [[code(member.value), code(member.name)] for member in enum_cls]


def reasons_page() -> str:
    """reference/reasons.md: every reason code and its English wording."""
    # wired by the coordinator: firmware_app/contracts/reasons.py (ReasonCode) and
    # ``reason_table() -> list[tuple[code, English template]]`` (in contracts/reasons.py or
    # web/reasons.py) are another helper's; until they are here the page says so.
    try:
        reasons = importlib.import_module("firmware_app.contracts.reasons")
    except ImportError:
        return _missing("Reason codes", "firmware_app/contracts/reasons.py")
    wording = importlib.import_module("web.reasons")
    reason_table = getattr(reasons, "reason_table", None) or getattr(wording, "reason_table",
                                                                      None)
    templates = {str(getattr(c, "value", c)): t for c, t in reason_table()} if reason_table \
        else {}
    codes = [member.value for member in reasons.ReasonCode]
    codes += [c for c in templates if c not in codes]
    return "\n".join(["# Reason codes", "", GENERATED_NOTE, "", rst_to_md(reasons.__doc__), "",
                      table(("code", "English wording"),
                            [[code(c), templates.get(c, "")] for c in codes]), ""])


def statuses_page() -> str:
    """reference/statuses.md: every status enum and its values."""
    # wired by the coordinator: firmware_app/contracts/statuses.py is another helper's; every
    # Enum defined in it is listed.
    try:
        statuses = importlib.import_module("firmware_app.contracts.statuses")
    except ImportError:
        return _missing("Statuses", "firmware_app/contracts/statuses.py")
    parts = ["# Statuses", "", GENERATED_NOTE, "", rst_to_md(statuses.__doc__), ""]
    for name, value in vars(statuses).items():
        if (inspect.isclass(value) and issubclass(value, enum.Enum) and len(value)
                and value.__module__ == statuses.__name__):
            parts += [f"## `{name}`", "", first_line(value.__doc__), "",
                      table(("value", "name"), _enum_rows(value)), ""]
    return "\n".join(parts)


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
