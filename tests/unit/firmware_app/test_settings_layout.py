"""The box's settings keep Frigate's layout (``frigate/config/*.py``): a module per section in
``firmware_app/settings/``, named as the section, and ``box.py`` only puts them together, so no
module grows back into the one file of every section.

The documented exceptions: ``[limits]`` and ``[runtime]`` are the engine's
(``engine/settings.py``, the same numbers on the workstation); ``[logging]`` lives in ``log.py``
(``logging`` is the standard library's name); a ``[[section.key]]`` table's class lives with its
section (``PacsDestination`` in ``pacs.py``, ``RoutingRule`` in ``routing.py``, ``LiveSource``
in ``live.py``); ``checks.py`` holds the checks several sections share.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path

import pytest

from firmware_app.settings import box

SETTINGS = Path(box.__file__).parent

#: the most lines one settings module may have
MAX_LINES = 300

#: sections whose module is not ``firmware_app.settings.<section>``, and why (the docstring)
ELSEWHERE = {"limits": "engine.settings", "runtime": "engine.settings",
             "logging": "firmware_app.settings.log"}

#: modules that hold no section of their own
NO_SECTION = {"__init__", "box", "checks"}


def sections() -> list[tuple[str, type]]:
    """Every ``[section]`` of the box's configuration and its dataclass."""
    return [(spec.name, spec.default_factory) for spec in dataclasses.fields(box.Config)]


def table_classes(section: type) -> list[type]:
    """The classes of a section's ``[[section.key]]`` tables (its ``list[Class]`` keys)."""
    module = importlib.import_module(section.__module__)
    found = []
    for spec in dataclasses.fields(section):
        kind = str(spec.type)
        if kind.startswith("list[") and kind != "list[str]":
            found.append(getattr(module, kind.removeprefix("list[").removesuffix("]")))
    return found


def defined_dataclasses(module_name: str) -> set[type]:
    """The dataclasses a module defines itself (not those it imports)."""
    module = importlib.import_module(module_name)
    return {value for _, value in inspect.getmembers(module, inspect.isclass)
            if dataclasses.is_dataclass(value) and value.__module__ == module_name}


@pytest.mark.parametrize("path", sorted(SETTINGS.glob("*.py")), ids=lambda p: p.name)
def test_no_settings_module_is_over_300_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name}: {lines} lines; give its sections modules of " \
                               "their own"


def test_each_section_is_in_the_module_of_its_name():
    for name, cls in sections():
        expected = ELSEWHERE.get(name, f"firmware_app.settings.{name}")
        assert cls.__module__ == expected, f"[{name}] is {cls.__module__}.{cls.__name__}"


def test_a_sections_tables_live_with_it():
    tables = {name: table_classes(cls) for name, cls in sections()}
    assert {name: [t.__name__ for t in found] for name, found in tables.items() if found} == {
        "pacs": ["PacsDestination"], "routing": ["RoutingRule"], "live": ["LiveSource"],
        "records": ["RecordsReceiver"]}
    for name, found in tables.items():
        section = dict(sections())[name]
        assert all(t.__module__ == section.__module__ for t in found), name


def test_each_settings_module_defines_only_its_section_and_its_tables():
    owned = {cls.__module__: {cls, *table_classes(cls)} for _, cls in sections()}
    for path in sorted(SETTINGS.glob("*.py")):
        module_name = f"firmware_app.settings.{path.stem}"
        defined = defined_dataclasses(module_name)
        if path.stem == "box":
            assert defined == {box.Config}, defined
        elif path.stem in NO_SECTION:
            assert defined == set(), (path.name, defined)
        else:
            assert defined == owned.get(module_name), (path.name, defined)
