"""reference/config.md: the box's, the receiver's and the converter's settings."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from docs_pages.code_docs import attribute_docs
from docs_pages.markdown import GENERATED_NOTE, code, first_line, number, rst_to_md, sentence, table


def describe_check(check: Callable[[Any], str | None] | None) -> str:
    """What a setting's check allows: a range, a list of words, or the check's docstring."""
    if check is None:
        return ""
    names = inspect.getclosurevars(check).nonlocals
    if {"lo", "hi"} <= set(names):
        return f"{number(names['lo'])} … {number(names['hi'])}"
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
    from clinibox_common.settings_loader import toml_value

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
    from firmware_app.settings.live import LiveSource
    from firmware_app.settings.pacs import PacsDestination
    from firmware_app.settings.routing import RoutingRule

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
    parts += settings_sections(box.Config, {"pacs.destinations": PacsDestination,
                                            "routing.rules": RoutingRule,
                                            "live.sources": LiveSource})
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
    from clinibox_common.settings_loader import toml_value

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
    gate_docs = attribute_docs(Gate)
    gate = [[code(f.name), _toml_default(f.default), sentence(gate_docs.get(f.name, ""))]
            for f in dataclasses.fields(Gate)]
    return ["## The workstation's converter (`convert.toml`)", "",
            "`clinibox convert --config convert.toml` (see the [command line](cli.md)).", "",
            rst_to_md(convert_config.__doc__), "",
            table(("key", "type", "default", "command line", "meaning"), rows), "",
            "`[stage]` keys: " + ", ".join(code(k) for k in convert_config.STAGE_KEYS)
            + " (" + stage_docs.get("STAGE_KEYS", "") + "; the stage's keys are those of "
            "the manifest's `stages`).", "",
            "`gate` keys (`converters/verify.py` `Gate`): " + first_line(Gate.__doc__), "",
            table(("key", "default", "meaning"), gate), "",
            "Why these defaults: [gates and floors](../model-makers/floors.md).", ""]
