"""The documentation site's generated pages: mkdocs hook (``hooks:`` in mkdocs.yml).

At build time (``make docs``) :func:`on_files` writes the reference pages from the code
itself, so they cannot drift from it: the box's and the receiver's settings, every
command line, the egress (MQTT) schema, the model package manifest, the reason codes,
the statuses, the DICOM outputs, the benchmark table and the repository's CHANGELOG.md.
Each page is one function of :data:`PAGES` returning Markdown, written in the package
``scripts/docs_pages/`` (one module a subject); the unit test
``tests/unit/test_docs_reference.py`` calls them one by one.

It lives outside docs/ (mkdocs would copy a .py under docs/ into the site).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for folder in (REPO, HERE):  # the project's packages, and docs_pages beside this hook
    # (mkdocs loads a hook by path, then takes back what it added to sys.path)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from docs_pages.cli_page import cli_page  # noqa: E402
from docs_pages.markdown import GENERATED_NOTE, cell, plain, site_links  # noqa: E402
from docs_pages.schema_pages import egress_page, manifest_page  # noqa: E402
from docs_pages.settings_page import config_page  # noqa: E402
from docs_pages.word_pages import dicom_outputs_page, reasons_page, statuses_page  # noqa: E402

__all__ = ["PAGES", "cell", "on_files", "plain", "site_links"]


def benchmarks_page() -> str:
    """reference/benchmarks.md: bench/results/**/*.json as a table (bench/table.py, loaded by
    path: mkdocs takes back its changes to sys.path once the hook is loaded)."""
    spec = importlib.util.spec_from_file_location("clinibox_bench_table",
                                                  REPO / "bench" / "table.py")
    assert spec is not None and spec.loader is not None
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    body = table.render(REPO / "bench" / "results")
    return "\n".join(["# Benchmark results", "", GENERATED_NOTE, "",
                      "How they are run and read: [Benchmarks](../development/benchmarks.md).",
                      "", body.strip() or "No results yet.", ""])


def changelog_page() -> str:
    """changelog.md: the repository's CHANGELOG.md, its links made to work in the site."""
    return site_links((REPO / "CHANGELOG.md").read_text(encoding="utf-8"))


#: generated page -> the function writing it
PAGES: dict[str, Callable[[], str]] = {
    "reference/config.md": config_page,
    "reference/cli.md": cli_page,
    "reference/egress.md": egress_page,
    "reference/manifest.md": manifest_page,
    "reference/reasons.md": reasons_page,
    "reference/statuses.md": statuses_page,
    "reference/dicom-outputs.md": dicom_outputs_page,
    "reference/benchmarks.md": benchmarks_page,
    "changelog.md": changelog_page,
}


@event_priority(-200)  # after mkdocs-static-i18n's (-100), which drops files made in memory
def on_files(files: Any, config: Any) -> Any:
    """mkdocs hook: add every generated page (replacing a file of the same name), in each
    language's build of the site (the i18n plugin's, mkdocs.yml) where it is used."""
    from mkdocs.structure.files import File

    i18n = config.plugins.get("i18n")
    for uri, build in PAGES.items():
        existing = files.get_file_from_path(uri)
        if existing is not None:
            files.remove(existing)
        page = File.generated(config, uri, content=build())
        files.append(page if i18n is None else _in_language(page, i18n, config))
    return files


def _in_language(page: Any, i18n: Any, config: Any) -> Any:
    """A generated page as mkdocs-static-i18n places its own: in the language being built (under
    zh/ for the Chinese site), its content the English page (it has no translation)."""
    from mkdocs_static_i18n.suffix import create_i18n_file

    content = page.content_string
    placed = create_i18n_file(page, i18n.current_language, i18n.default_language,
                              i18n.all_languages, config)
    placed.content_string = content
    return placed
