"""Every documentation page is reached from another page and leads on to one.

The site's sidebar lists every page (``tests/unit/firmware_app/test_docs_reference.py``), but a
reader
follows the pages' own links: a page no other page links to is found only by someone who
already knows it is there, and a page that links nowhere leaves its reader without a next
step. So, for every page under ``docs/`` and every page the build generates
(``scripts/docs_reference.py``'s :data:`PAGES`, built here as the hook builds them):

- **linked from another page** — except the home page ``index.md``, the site's root;
- **a link out to another page** — except the leaves: the decision records
  ``decisions/NNNN-*.md`` (a record is never rewritten, ``docs/decisions/index.md``; the
  decisions index that lists them all is the reader's way on) and the generated reference
  pages ``reference/*.md`` (look-up tables written from the code, read from the task page
  that sent the reader there; ``reference/index.md``, written by hand, must lead on).

A Chinese page ``X.zh.md`` is the English page ``X.md`` in the Chinese site: the links to
``X.md`` reach it, and its own links count as its English page's (each must still lead on).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
ROOT = "index.md"
#: pages that need no link out: the decision records, never rewritten
RECORD = re.compile(r"decisions/\d{4}-[^/]+\.md")


def _links(markdown: str) -> list[str]:
    """The relative link targets of a Markdown text (code blocks and spans, images, URLs
    with a scheme and same-page anchors left out)."""
    text = re.sub(r"^ *(```|~~~).*?^ *\1", "", markdown, flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = re.findall(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)", text)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


def _english(uri: str) -> str:
    return uri.replace(".zh.md", ".md")


def link_graph(pages: dict[str, str]) -> dict[str, set[str]]:
    """page -> the other pages it links to, by their English uri (``X.zh.md`` is ``X.md``);
    ``pages`` maps each page's uri (relative to docs/) to its Markdown."""
    graph: dict[str, set[str]] = {}
    for uri, text in pages.items():
        out = graph.setdefault(_english(uri), set())
        for target in _links(text):
            path = target.split("#", 1)[0]
            if not path.endswith(".md"):
                continue
            resolved = Path(uri).parent.joinpath(path).as_posix()
            parts: list[str] = []
            for part in resolved.split("/"):
                if part == "..":
                    parts.pop() if parts else None
                elif part not in ("", "."):
                    parts.append(part)
            linked = _english("/".join(parts))
            if linked != _english(uri):
                out.add(linked)
    return graph


def dead_ends(pages: dict[str, str],
              leaves: frozenset[str] = frozenset()) -> tuple[list[str], list[str]]:
    """(pages no other page links to, pages that link to no other page) among ``pages``;
    ``leaves`` and the decision records need no link out."""
    graph = link_graph(pages)
    reached = set().union(*graph.values())
    unlinked = sorted(uri for uri in graph if uri != ROOT and uri not in reached)
    leading_nowhere = sorted(
        uri for uri, text in pages.items()
        if not RECORD.fullmatch(_english(uri)) and _english(uri) not in leaves
        and not link_graph({uri: text})[_english(uri)])
    return unlinked, leading_nowhere


def _site_pages() -> tuple[dict[str, str], frozenset[str]]:
    """Every page of the site, docs/'s files and the hook's generated pages; and the
    generated reference pages (leaves)."""
    spec = importlib.util.spec_from_file_location("docs_reference_hook_links",
                                                  REPO / "scripts" / "docs_reference.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    pages = {str(p.relative_to(DOCS)): p.read_text(encoding="utf-8")
             for p in sorted(DOCS.rglob("*.md"))}
    pages.update({uri: build() for uri, build in hook.PAGES.items()})
    return pages, frozenset(uri for uri in hook.PAGES if uri.startswith("reference/"))


def test_every_page_is_linked_from_another_and_leads_on():
    pages, generated = _site_pages()
    assert len(pages) > 80 and "hospital/webhook.md" in pages
    assert "reference/cli.md" in generated and "changelog.md" not in generated
    unlinked, leading_nowhere = dead_ends(pages, generated)
    assert unlinked == [], "pages no other page links to"
    assert leading_nowhere == [], "pages with no link to another page"


def test_the_check_finds_an_unlinked_page_and_a_dead_end():
    pages = {
        "index.md": "[Hospital](hospital/index.md)",
        "hospital/index.md": "[Console](console.md) and `[not a link](webhook.md)`",
        "hospital/console.md": "Back [home](../index.md#top), [itself](console.md).",
        "hospital/console.zh.md": "见[控制台](#start-it)。",
        "hospital/webhook.md": "```\n[in code](console.md)\n```\n![a picture](../x.png)",
        "decisions/0001-a.md": "A record.",
        "decisions/index.md": "[0001](0001-a.md)",
    }
    unlinked, leading_nowhere = dead_ends(pages)
    assert unlinked == ["decisions/index.md", "hospital/webhook.md"]
    assert leading_nowhere == ["hospital/console.zh.md", "hospital/webhook.md"]
    assert dead_ends(pages, frozenset({"hospital/webhook.md"}))[1] == ["hospital/console.zh.md"]
    pages["hospital/console.zh.md"] = "见[接收服务](webhook.md)。"
    assert dead_ends(pages)[0] == ["decisions/index.md"]
