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
import re
import sys
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

from clinibox_common.errors import EXIT_USAGE, CliniboxError
from clinibox_common.i18n import ENGLISH, N_, current, gettext
from clinibox_common.i18n.error_words import error_words
from clinibox_common.i18n.formats import names

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
            return gettext("must be between %(lo)s and %(hi)s, got %(value)s", lo=lo, hi=hi,
                           value=value)
        return None

    return check


def one_of(*options: str):
    """A check that a value is one of ``options``."""

    def check(value: Any) -> str | None:
        if value not in options:
            return gettext("must be one of %(options)s; got %(value)s",
                           options=names(options), value=repr(value))
        return None

    return check


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (the extra that brings it is installed): for
    a setting that needs an optional package, refused at loading when it is missing."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def refused(where: str, problem: str) -> str:
    """``[section] key: problem`` (a check's words) in the reader's punctuation."""
    return gettext("%(where)s: %(problem)s", where=where, problem=problem)


def setting(check=None, doc: str = "", default: Any = dataclasses.MISSING, factory: Any = None):
    """A settings field: its check, its documentation line and its default."""
    metadata = {"check": check, "doc": doc}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


#: what a value of each declared type must be, in words (``%(where)s``: ``[section] key``)
_TYPE_WORDS = {
    "bool": N_("%(where)s: must be true or false, got %(value)s"),
    "int": N_("%(where)s: must be an integer, got %(value)s"),
    "float": N_("%(where)s: must be a number, got %(value)s"),
    "str": N_("%(where)s: must be a string, got %(value)s"),
    "list[str]": N_("%(where)s: must be a list of strings, got %(value)s"),
}


def _typed(annotation: str, value: Any) -> bool:
    """Whether ``value`` is of the declared ``annotation`` (an int is a float; a bool is
    neither)."""
    if annotation == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if annotation == "int":
        return isinstance(value, int)
    if annotation == "float":
        return isinstance(value, (int, float))
    if annotation == "str":
        return isinstance(value, str)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def coerce(section: str, name: str, annotation: str, value: Any) -> Any:
    """``value`` as the declared ``annotation``; ConfigError naming ``[section] name``."""
    where = f"[{section}] {name}"
    if annotation not in _TYPE_WORDS:
        raise ConfigError(f"{where}: unsupported type {annotation}")  # pragma: no cover
    if not _typed(annotation, value):
        raise ConfigError(gettext(_TYPE_WORDS[annotation], where=where, value=repr(value)))
    if annotation == "float":
        return float(value)
    if annotation == "list[str]":
        return list(value)
    return value


def suggest(name: str, options: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options``, or nothing."""
    close = difflib.get_close_matches(name, options, n=1)
    if not close:
        return ""
    return gettext(" (did you mean %(name)s?)", name=repr(close[0]))


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
            raise ConfigError(gettext("unknown section [%(section)s]%(hint)s",
                                      section=section_name, hint=hint))
        if not isinstance(body, dict):
            raise ConfigError(gettext("[%(section)s] must be a table", section=section_name))
        section = getattr(config, section_name)
        keys = {f.name: f for f in dataclasses.fields(section)}
        for key, raw in body.items():
            if key not in keys:
                hint = suggest(key, list(keys))
                raise ConfigError(unknown_key(section_name, key, hint))
            spec = keys[key]
            value = coerce(section_name, key, str(spec.type), raw)
            check = spec.metadata.get("check")
            problem = check(value) if check else None
            if problem:
                raise ConfigError(refused(f"[{section_name}] {key}", problem))
            setattr(section, key, value)
    return config


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; ConfigError when it cannot be read or is not TOML."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(gettext("cannot read config %(path)s: %(reason)s", path=path,
                                  reason=error_words(exc, exc.strerror))) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(not_toml(path, exc)) from exc


#: where tomllib says its error is: ``(at line 3, column 7)`` ending its message
_TOML_WHERE = re.compile(r"\(at line (\d+), column (\d+)\)$")


def not_toml(path: Path, exc: ValueError) -> str:
    """Why ``path`` is not TOML: in English the parser's own words; in another language the
    line and column it names in words (its English sentence is left to English)."""
    if current() == ENGLISH:
        return f"{path}: not valid TOML: {exc}"
    found = _TOML_WHERE.search(str(exc))
    if found:
        return gettext("%(path)s: not valid TOML: an error at line %(line)s, column "
                       "%(column)s", path=path, line=found[1], column=found[2])
    return gettext("%(path)s: not valid TOML", path=path)


def unknown_key(section: str, key: str, hint: str = "") -> str:
    """``unknown key [section] key`` and a close match's ``hint`` (:func:`suggest`)."""
    return gettext("unknown key [%(section)s] %(key)s%(hint)s", section=section, key=key,
                   hint=hint)


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
