"""The project's top-level packages, read from the one place that lists them: the import
contracts' ``root_packages`` in ``pyproject.toml`` (a test holds setuptools' list to it)."""

from __future__ import annotations

from pathlib import Path

import tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
_DATA = tomllib.loads(PYPROJECT.read_text())
#: every top-level package, top floor first
PACKAGES: tuple[str, ...] = tuple(_DATA["tool"]["importlinter"]["root_packages"])
#: what the clinibox wheel carries: all but the demo model's training (workstation only)
WHEEL_PACKAGES: tuple[str, ...] = tuple(p for p in PACKAGES if p != "demo")
#: the packages setuptools puts in the wheel (``[tool.setuptools.packages.find] include``)
SETUPTOOLS_INCLUDE: tuple[str, ...] = tuple(
    _DATA["tool"]["setuptools"]["packages"]["find"]["include"])
