"""The settings loader shared by the box, the hospital's receiver and the converter.

A configuration is a dataclass of section dataclasses whose fields are made
with :func:`setting` (a default, a line of documentation and a check). The
loader reads TOML, refuses unknown sections and keys (suggesting a close
match), coerces each value to its declared type, runs its check, and renders
the defaults back as a commented example file. ``settings/box.py`` (the box),
``central/config.py`` (the receiver) and ``converters/config.py`` (the
converter, for reading ``convert.toml``) all use it.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

from firmware_app.errors import EXIT_USAGE, CliniboxError
from firmware_app.i18n import N_

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

T = TypeVar("T")


class ConfigError(CliniboxError, ValueError):
    """A configuration file or value that the box refuses, with the key named."""

    kind = N_("config error")
    exit_status = EXIT_USAGE


def in_range(lo: float, hi: float):
    """A check that a number lies in [lo, hi]."""

    def check(value: Any) -> str | None:
        if not lo <= value <= hi:
            return f"must be between {lo} and {hi}, got {value}"
        return None

    return check


def one_of(*options: str):
    """A check that a value is one of ``options``."""

    def check(value: Any) -> str | None:
        if value not in options:
            return f"must be one of {', '.join(options)}; got {value!r}"
        return None

    return check


def setting(check=None, doc: str = "", default: Any = dataclasses.MISSING, factory: Any = None):
    """A settings field: its check, its documentation line and its default."""
    metadata = {"check": check, "doc": doc}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def coerce(section: str, name: str, annotation: str, value: Any) -> Any:
    """``value`` as the declared ``annotation``; ConfigError naming ``[section] name``."""
    where = f"[{section}] {name}"
    if annotation == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false, got {value!r}")
        return value
    if annotation == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: must be an integer, got {value!r}")
        return value
    if annotation == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: must be a number, got {value!r}")
        return float(value)
    if annotation == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string, got {value!r}")
        return value
    if annotation == "list[str]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: must be a list of strings, got {value!r}")
        return list(value)
    raise ConfigError(f"{where}: unsupported type {annotation}")  # pragma: no cover


def suggest(name: str, options: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options``, or nothing."""
    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_sections(data: dict[str, Any], root_cls: type[T]) -> T:
    """Build ``root_cls`` (a dataclass of section dataclasses) from parsed TOML.

    Unknown sections and keys are refused with the key named (and a close
    match suggested); each value is coerced to its type and checked. The box's
    config and the hospital's (``central.config``) are both read with it.
    """
    config = root_cls()
    sections = {f.name: f for f in dataclasses.fields(root_cls)}
    for section_name, body in data.items():
        if section_name not in sections:
            hint = suggest(section_name, list(sections))
            raise ConfigError(f"unknown section [{section_name}]{hint}")
        if not isinstance(body, dict):
            raise ConfigError(f"[{section_name}] must be a table")
        section = getattr(config, section_name)
        keys = {f.name: f for f in dataclasses.fields(section)}
        for key, raw in body.items():
            if key not in keys:
                hint = suggest(key, list(keys))
                raise ConfigError(f"unknown key [{section_name}] {key}{hint}")
            spec = keys[key]
            value = coerce(section_name, key, str(spec.type), raw)
            check = spec.metadata.get("check")
            problem = check(value) if check else None
            if problem:
                raise ConfigError(f"[{section_name}] {key}: {problem}")
            setattr(section, key, value)
    return config


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; ConfigError when it cannot be read or is not TOML."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def describe_sections(root: Any, title: str) -> str:
    """Render a config object's values as a commented TOML example."""
    lines = [title, ""]
    for section in dataclasses.fields(root):
        obj = getattr(root, section.name)
        lines.append(f"[{section.name}]")
        for spec in dataclasses.fields(obj):
            lines.append(f"# {spec.metadata.get('doc', '')}")
            lines.append(f"{spec.name} = {toml_value(getattr(obj, spec.name))}")
        lines.append("")
    return "\n".join(lines)


def toml_value(value: Any) -> str:
    """A config value written as TOML (booleans, numbers, strings, lists of them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
