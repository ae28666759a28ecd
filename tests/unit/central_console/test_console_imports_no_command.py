"""The console's pages share the hospital's logic, never its command line (issue 57).

A page that imports a command's module (``central/cli.py``, ``central/rollout_cli.py``) takes
a rule from where nobody looks for it; the rule belongs where both call it (a group's boxes:
``central.rollouts.group_boxes``).
"""

from __future__ import annotations

import ast
from pathlib import Path

from central import rollout_cli, rollouts
from central_console import views_rollouts

CONSOLE = Path(__file__).resolve().parents[3] / "central_console"
#: the hospital's command-line modules
COMMANDS = {"central.cli", "central.rollout_cli"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_console_module_imports_a_command():
    modules = sorted(CONSOLE.rglob("*.py"))
    assert modules, CONSOLE
    offending = {path.name: sorted(_imports(path) & COMMANDS) for path in modules}
    assert {name: found for name, found in offending.items() if found} == {}


def test_a_groups_boxes_come_from_the_rollouts_for_page_and_command():
    assert not hasattr(rollout_cli, "group_boxes") and not hasattr(views_rollouts, "group_boxes")
    assert rollouts.group_boxes.__module__ == "central.rollouts"
