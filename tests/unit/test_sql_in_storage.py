"""Every SQL statement on the box's database lives in ``firmware_app/storage``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SQL_CALLS = {"execute", "executemany", "executescript"}


def _sql_calls(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in SQL_CALLS]


def test_only_storage_speaks_sql_to_the_box_database():
    storage = ROOT / "firmware_app" / "storage"
    inside = sum(len(_sql_calls(p)) for p in storage.rglob("*.py"))
    outside = {str(p.relative_to(ROOT)): lines
               for folder in ("firmware_app", "web", "webcore")
               for p in (ROOT / folder).rglob("*.py")
               if storage not in p.parents and (lines := _sql_calls(p))}
    assert inside > 50  # the scan finds SQL where it is
    assert outside == {}
