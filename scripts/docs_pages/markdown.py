"""Markdown for the generated pages: table cells, tables, code, docstrings, links."""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Iterable
from typing import Any

GENERATED_NOTE = ("*Generated from the code when the site is built "
                  "(`scripts/docs_reference.py`): do not edit.*")


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
    return re.sub(r":(?:func|data|class|meth|attr|mod):`~?([^`]+)`", r"`\1`", text)


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
    """A help line as a sentence: capital first, full stop last (empty stays empty)."""
    text = text.strip()
    if not text:
        return ""
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def first_line(docstring: str | None) -> str:
    """The first paragraph of a docstring on one line, as Markdown (empty when none)."""
    return inline(inspect.cleandoc(docstring or "").split("\n\n")[0].replace("\n", " "))


def number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value)) if abs(value) >= 1000 else repr(value)
    return str(value)


def plain(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (tuple, list, frozenset, set)):
        return ", ".join(plain(v) for v in value)
    return str(value)


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
