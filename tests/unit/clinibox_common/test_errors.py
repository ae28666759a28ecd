"""The one error hierarchy: every domain error is a CliniboxError, mapped once to an exit status."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import pytest

from clinibox_common import errors
from clinibox_common.contracts.manifest import PackageError
from clinibox_common.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE, CliniboxError, run_command
from clinibox_common.settings_loader import ConfigError
from firmware_app.storage.spool import SpoolFull
from tests.packages import PACKAGES

ROOT = Path(__file__).resolve().parents[3]
BUILTIN_EXCEPTIONS = {
    name for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}


def _exception_classes() -> dict[str, tuple[str, list[str]]]:
    """Every class in the project's packages: name -> (file, base names)."""
    found: dict[str, tuple[str, list[str]]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    bases = [b.id if isinstance(b, ast.Name) else ast.unparse(b).split(".")[-1]
                             for b in node.bases]
                    found[node.name] = (str(path.relative_to(ROOT)), bases)
    return found


@pytest.mark.slow
def test_every_domain_error_derives_from_clinibox_error():
    classes = _exception_classes()
    derived = {"CliniboxError"}
    changed = True
    while changed:  # close over subclasses of subclasses, across modules
        changed = False
        for name, (_, bases) in classes.items():
            if name not in derived and any(b in derived for b in bases):
                derived.add(name)
                changed = True
    exceptions = {name for name, (_, bases) in classes.items()
                  if any(b in BUILTIN_EXCEPTIONS or b in derived for b in bases)}
    outside = sorted(f"{classes[n][0]}: {n}" for n in exceptions - derived)
    assert len(exceptions) > 25
    assert outside == []


def test_exit_statuses_are_defined_once():
    copies = [str(p.relative_to(ROOT)) for package in PACKAGES
              for p in (ROOT / package).rglob("*.py")
              if "= 0, 1, 2" in p.read_text(encoding="utf-8")
              or "EXIT_OK = " in p.read_text(encoding="utf-8")]
    assert copies == ["clinibox_common/errors.py"]
    assert (EXIT_OK, EXIT_FAIL, EXIT_USAGE) == (0, 1, 2)


@pytest.mark.parametrize("error, status, words", [
    (ConfigError("[dicom] port: must be between 1 and 65535, got 0"), EXIT_USAGE, "config error"),
    (PackageError("artifact model.onnx was altered", "tampered"), EXIT_FAIL,
     "model package refused"),
    (CliniboxError("no such alert: 7"), EXIT_FAIL, "error"),
    (CliniboxError("bad bundle", exit_status=EXIT_USAGE), EXIT_USAGE, "error"),
])
def test_run_command_prints_one_line_and_returns_the_errors_status(capsys, error, status, words):
    def command() -> int:
        raise error

    assert run_command("clinibox", command) == status
    assert capsys.readouterr().err == f"clinibox: {words}: {error}\n"


def test_domain_errors_keep_their_standard_bases():
    assert issubclass(ConfigError, ValueError) and issubclass(PackageError, ValueError)
    full = SpoolFull(28, "no space left")
    assert isinstance(full, OSError) and isinstance(full, CliniboxError)
    assert full.errno == 28
    assert errors.run_command("x", lambda: EXIT_OK) == EXIT_OK
