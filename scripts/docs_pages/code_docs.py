"""What the code says about its names, read from its source as Sphinx reads it."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from typing import Any

from docs_pages.markdown import inline


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
