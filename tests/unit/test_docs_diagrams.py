"""The documentation's diagrams (``scripts/docs_diagrams.py``, the mkdocs hook): each graphviz
source under ``docs/diagrams/`` becomes an SVG at build time with ``dot`` (Debian's graphviz),
the import graph is drawn from the code (every top-level package, every import between two of
them, each floor on its row, no arrow up), and every diagram a page shows is one the hook
makes."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
#: an image in Markdown whose target is a diagram
DIAGRAM = re.compile(r"!\[[^\]]+\]\(([^)\s]*diagrams/([^)\s]+\.svg))\)")


def _hook():
    spec = importlib.util.spec_from_file_location("docs_diagrams",
                                                  REPO / "scripts" / "docs_diagrams.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_source_and_the_import_graph_become_svg():
    hook = _hook()
    made = hook.diagrams()
    sources = {f"diagrams/{path.stem}.svg" for path in (DOCS / "diagrams").glob("*.dot")}
    assert {"diagrams/image-flow.svg", "diagrams/alert-flow.svg"} <= sources
    assert set(made) == sources | {hook.IMPORTS}
    for uri, svg in made.items():
        assert "<svg" in svg and "</svg>" in svg, uri
    assert "spool" in made["diagrams/image-flow.svg"]
    assert "verdict" in made["diagrams/alert-flow.svg"]


def test_the_import_graph_is_the_codes_and_points_down_the_floors():
    hook = _hook()
    packages, layers = hook.floors()
    counts = hook.import_counts(packages)
    assert ("clinibox", "web") in counts and ("firmware_app", "engine") in counts
    assert not [edge for edge in counts if edge[0] == "clinibox_common"]
    floor = {package: level for level, names in enumerate(layers) for package in names}
    up = [(a, b) for a, b in counts if a in floor and b in floor and floor[b] <= floor[a]]
    assert up == []  # layers are listed top first: an import goes to a later floor
    source = hook.imports_dot()
    for package in packages:
        assert f'"{package}"' in source, package
    for importer, imported in counts:
        assert f'"{importer}" -> "{imported}"' in source
    assert "{ rank=same; " in source


def test_every_diagram_a_page_shows_is_made_by_the_hook():
    made = set(_hook().diagrams())
    shown = [(page, target, name) for page in sorted(DOCS.rglob("*.md"))
             for target, name in DIAGRAM.findall(page.read_text(encoding="utf-8"))]
    assert {name for _page, _target, name in shown} == {Path(uri).name for uri in made}
    for page, target, name in shown:
        assert (page.parent / target).resolve() == DOCS / "diagrams" / name, (page, target)
