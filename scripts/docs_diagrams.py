"""The documentation site's diagrams: mkdocs hook (``hooks:`` in mkdocs.yml).

At build time (``make docs``) :func:`on_files` renders each graphviz source
``docs/diagrams/NAME.dot`` to ``diagrams/NAME.svg`` with ``dot -Tsvg`` (Debian's ``graphviz``:
no network, no script in the page), and draws ``diagrams/imports.svg``, the top-level packages
(the floors) and their imports, from the code itself with grimp, so it cannot drift from it.
The pages link the SVGs as images; the ``.dot`` sources are left out of the site.

It lives outside docs/ (mkdocs would copy a .py under docs/ into the site).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import tomllib
from mkdocs.plugins import event_priority

REPO = Path(__file__).resolve().parents[1]
SOURCES = REPO / "docs" / "diagrams"
PYPROJECT = REPO / "pyproject.toml"
DOT = "dot"
#: the generated import graph's place in the site
IMPORTS = "diagrams/imports.svg"


def render(source: str) -> str:
    """A graphviz source as SVG text (``dot -Tsvg``)."""
    done = subprocess.run([DOT, "-Tsvg"], input=source.encode(), capture_output=True,
                          check=False, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"dot failed: {done.stderr.decode(errors='replace')}")
    return done.stdout.decode()


def floors() -> tuple[list[str], list[list[str]]]:
    """The top-level packages (top floor first) and the floors of the first layers contract
    in pyproject.toml (``a | b``: siblings on one floor)."""
    data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]
    layers = next(c for c in data["contracts"] if c["type"] == "layers" and "containers" not in c)
    return list(data["root_packages"]), [[p.strip() for p in floor.split("|")]
                                          for floor in layers["layers"]]


def import_counts(packages: list[str]) -> dict[tuple[str, str], int]:
    """(importer, imported) top-level package -> how many of the importer's modules import
    the other package directly (grimp's graph of the code)."""
    import grimp

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    graph = grimp.build_graph(*packages, cache_dir=None)
    counts: dict[tuple[str, str], int] = {}
    for importer in packages:
        for module in graph.find_descendants(importer) | {importer}:
            targets = {m.split(".")[0] for m in graph.find_modules_directly_imported_by(module)}
            for imported in targets - {importer}:
                if imported in packages:
                    counts[importer, imported] = counts.get((importer, imported), 0) + 1
    return counts


def imports_dot() -> str:
    """The top-level packages and their imports as a graphviz source: each floor of the
    layers contract on one rank, top floor at the top; an arrow from importer to imported,
    labelled with how many of the importer's modules import it."""
    packages, layers = floors()
    counts = import_counts(packages)
    lines = ["digraph imports {",
             '  graph [rankdir=TB, fontname="sans-serif", ranksep=0.7, nodesep=0.15,'
             ' bgcolor="transparent"];',
             '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", color="#3f6aa8",'
             ' fontname="sans-serif", fontsize=18];',
             '  edge [color="#777777", fontname="sans-serif", fontsize=14, fontcolor="#555555"];']
    placed = {p for floor in layers for p in floor}
    for floor in layers:
        lines.append("  { rank=same; " + " ".join(f'"{p}";' for p in floor) + " }")
    for package in packages:
        if package not in placed:  # outside the floors (the phantoms, the demo's training)
            lines.append(f'  "{package}" [fillcolor="#f4f4f4", color="#999999"];')
    for (importer, imported), count in sorted(counts.items()):
        lines.append(f'  "{importer}" -> "{imported}" [label="{count}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def diagrams() -> dict[str, str]:
    """Every diagram of the site: its place (``diagrams/NAME.svg``) -> its SVG."""
    made = {f"diagrams/{source.stem}.svg": render(source.read_text(encoding="utf-8"))
            for source in sorted(SOURCES.glob("*.dot"))}
    made[IMPORTS] = render(imports_dot())
    return made


@event_priority(-200)  # after mkdocs-static-i18n's (-100), which drops files made in memory
def on_files(files: Any, config: Any) -> Any:
    """mkdocs hook: add every diagram as an SVG file of the site, and leave the .dot sources
    out of it."""
    from mkdocs.structure.files import File

    for file in list(files):
        if file.src_uri.startswith("diagrams/") and file.src_uri.endswith(".dot"):
            files.remove(file)
    for uri, svg in diagrams().items():
        existing = files.get_file_from_path(uri)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, uri, content=svg))
    return files
