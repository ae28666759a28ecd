"""The documentation site's generated pages name everything they are generated from, and the
front pages' links resolve.

The hook (``scripts/docs_reference.py``) writes the reference pages from the code at build
time; a generator that silently dropped rows would still build, so each page is built here
and checked against the code it reads: every settings key, every command and option, every
egress kind and field, every manifest key, reason code, status and DICOM output; and each
with what it means wherever the code says it (a ``#:`` comment, a docstring, a label in
English and Chinese).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
README_MAX_LINES = 150


def _hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference_hook",
                                                  REPO / "scripts" / "docs_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hook() -> ModuleType:
    """The mkdocs hook, loaded by path as mkdocs loads it."""
    return _hook()


def _section(page: str, heading: str) -> str:
    """The text of ``page`` from the heading line ``heading`` to the next heading."""
    lines = page.splitlines()
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")),
               len(lines))
    return "\n".join(lines[start:end])


def _table_keys(text: str) -> set[str]:
    """The first column's code words of every table row in ``text``."""
    return set(re.findall(r"^\| `([^`]+)` \|", text, flags=re.M))


def test_the_config_page_names_every_key_of_every_section(hook):
    from central.config import CentralConfig
    from firmware_app.settings import box
    from firmware_app.settings.pacs import PacsDestination
    from firmware_app.settings.routing import RoutingRule

    page = hook.config_page()
    box_part, central_part = page.split("## The hospital's receiver", 1)
    for root, part in ((box.Config, box_part), (CentralConfig, central_part)):
        for section in dataclasses.fields(root):
            text = _section(part, f"### `[{section.name}]`")
            keys = {spec.name for spec in dataclasses.fields(section.default_factory())}
            assert _table_keys(text) == keys, section.name
    for name, cls in (("pacs.destinations", PacsDestination),
                      ("routing.rules", RoutingRule)):
        text = _section(box_part, f"#### `[[{name}]]`")
        assert _table_keys(text) == {spec.name for spec in dataclasses.fields(cls)}


def test_the_config_page_shows_defaults_limits_and_help(hook):
    page = hook.config_page()
    port = next(line for line in _section(page, "### `[dicom]`").splitlines()
                if line.startswith("| `port` |"))
    assert "`11112`" in port and "1 … 65535" in port and "TCP port" in port
    receiver = next(line for line in page.splitlines() if line.startswith("| `receiver` |"))
    assert "one of `auto`, `native`, `pynetdicom`" in receiver
    ae_title = next(line for line in page.splitlines() if line.startswith("| `ae_title` |"))
    assert "printable ASCII" in ae_title  # a custom check shows its docstring
    assert "empty means &lt;state_dir>/import" in page  # not taken for an HTML tag


def test_the_cli_page_names_every_command_and_option(hook):
    import argparse

    from clinibox import central_command as central_cli
    from clinibox import table

    page = hook.cli_page()
    for name in (*table.COMMANDS, *table.HANDED_ON):
        assert f"| `clinibox {name}` |" in page, name
    parser = table.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in table.COMMANDS:
        text = _section(page, f"### `clinibox {name}`")
        for action in sub.choices[name]._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in text, (name, option)
    central = central_cli.build_parser()
    sub = next(a for a in central._actions if isinstance(a, argparse._SubParsersAction))
    for name, child in sub.choices.items():
        text = _section(page, f"### `clinibox central {name}`")
        for action in child._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in text, (name, option)
    assert "--target-sensitivity" in _section(page, "## The workstation's converter: "
                                                    "`clinibox convert`")
    assert "--cpu" in _section(page, "## `clinibox cpu-check`")


def test_the_egress_page_names_every_kind_and_field(hook):
    from clinibox_common.contracts import egress

    page = hook.egress_page()

    def paths(obj, prefix=()):
        for name, spec in obj.fields.items():
            yield ".".join((*prefix, name))
            inner = spec.spec if isinstance(spec, egress.Optional) else spec
            if isinstance(inner, egress.Obj):
                yield from paths(inner, (*prefix, name))
            elif isinstance(inner, egress.ListOf):  # a list's objects' fields: ``a[].b``
                yield from paths(inner.spec, (*prefix, f"{name}[]"))

    for kind in egress.KINDS:
        text = _section(page, f"## `{kind}`")
        assert _table_keys(text) == set(paths(egress.SCHEMAS[kind])), kind
    size = next(line for line in _section(page, "## `alert`").splitlines()
                if line.startswith("| `lesions[].size_mm` |"))
    assert "optional" in size and "longest diameter" in size  # its #: comment, in the list
    audit_at = next(line for line in _section(page, "## `status`").splitlines()
                    if line.startswith("| `audit.at` |"))
    assert "optional" in audit_at and "epoch seconds" in audit_at  # its #: comment


def test_the_manifest_page_names_every_key_format_and_head(hook):
    from clinibox_common.contracts import backends, heads, manifest

    page = hook.manifest_page()
    demo = json.loads((REPO / "models" / "clinibox-demo-lesion" / "1.0.0" / "manifest.json")
                      .read_text(encoding="utf-8"))
    assert set(demo) <= _table_keys(page)
    assert manifest.SCHEMA in page
    for word in (*backends.ARTIFACT_FORMATS, *backends.PRECISIONS, *backends.BACKENDS,
                 *heads.HEAD_KINDS):
        assert f"`{word}`" in page, word
    assert "```text\n" in page and '"heads": [' in page  # the docstrings' examples as code


def test_the_reasons_page_names_every_code_or_says_it_is_not_here(hook):
    page = hook.reasons_page()
    try:
        reasons = importlib.import_module("clinibox_common.contracts.reasons")
    except ImportError:
        assert "not in this tree yet" in page
        return
    assert {member.value for member in reasons.ReasonCode} <= _table_keys(page)


def test_the_statuses_page_names_every_enum_and_value(hook):
    import enum

    page = hook.statuses_page()
    try:
        statuses = importlib.import_module("clinibox_common.contracts.statuses")
    except ImportError:
        assert "not in this tree yet" in page
        return
    enums = [value for value in vars(statuses).values()
             if isinstance(value, type) and issubclass(value, enum.Enum) and len(value)
             and value.__module__ == statuses.__name__]
    assert enums
    for enum_cls in enums:
        text = _section(page, f"## `{enum_cls.__name__}`")
        assert _table_keys(text) == {member.value for member in enum_cls}, enum_cls


def test_the_dicom_outputs_page_names_every_output(hook):
    page = hook.dicom_outputs_page()
    try:
        outputs = importlib.import_module("clinibox_common.contracts.dicom_outputs")
    except ImportError:
        assert "not in this tree yet" in page
        return
    table = outputs.DICOM_OUTPUTS
    rows = list(table.values()) if isinstance(table, dict) else list(table)
    assert rows
    for row in rows:
        assert f"| {hook.plain(dataclasses.astuple(row)[0])} |" in page


def test_the_benchmarks_page_is_bench_tables_render(hook):
    page = hook.benchmarks_page()
    script = REPO / "bench" / "table.py"
    if not script.is_file():
        assert "No results yet" in page
        return
    spec = importlib.util.spec_from_file_location("bench_table_for_test", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render(REPO / "bench" / "results").strip() in page


def test_the_changelog_is_published_with_links_that_work_in_the_site(hook):
    text = ("See [ADR 1](docs/decisions/0001-x.md), [the Makefile](Makefile), "
            "[a site](https://example.org/) and [here](#top).")
    assert hook.site_links(text) == ("See [ADR 1](decisions/0001-x.md), the Makefile "
                                     "(`Makefile`), [a site](https://example.org/) and "
                                     "[here](#top).")
    page = hook.changelog_page()
    changelog = REPO / "CHANGELOG.md"
    if changelog.is_file():
        first = changelog.read_text(encoding="utf-8").splitlines()[0]
        assert page.splitlines()[0] == hook.site_links(first)
    else:
        assert page.startswith("# Changelog")


def test_the_hook_adds_every_generated_page_to_the_build(hook):
    from mkdocs.config import load_config
    from mkdocs.structure.files import get_files

    config = load_config(str(REPO / "mkdocs.yml"))  # loads the hook as mkdocs.yml names it
    files = config.plugins.on_files(get_files(config), config=config)
    for uri in hook.PAGES:
        generated = files.get_file_from_path(uri)
        assert generated is not None, uri
        assert generated.content_string.startswith("# "), uri
    assert [Path(path).resolve() for path in config["hooks"]] == [
        (REPO / "scripts" / name).resolve() for name in ("docs_reference.py",
                                                          "docs_diagrams.py")]


# -- the front pages ----------------------------------------------------------------------

def _links(markdown: str) -> list[str]:
    """The relative link targets of a Markdown text (code blocks and spans left out)."""
    text = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = re.findall(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)", text)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


def test_the_readme_is_a_front_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES
    assert "not for clinical use" in readme
    for command in ("make run", "make test", "make test-fast", "make docs"):
        assert command in readme, command
    assert "docs/technician/index.md" in readme


def test_every_relative_link_in_the_readme_and_the_docs_resolves(hook):
    generated = {DOCS / uri for uri in hook.PAGES}
    pages = [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]
    broken = []
    for page in pages:
        for target in _links(page.read_text(encoding="utf-8")):
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not (path.exists() or path in generated):
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert broken == []


def test_every_nav_page_exists_and_every_page_is_in_the_nav(hook):
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]

    def walk(items):
        for item in items:
            if isinstance(item, str):
                yield item
            elif isinstance(item, dict):
                for value in item.values():
                    yield from ([value] if isinstance(value, str) else walk(value))

    listed = set(walk(nav))
    # a Chinese page (X.zh.md, mkdocs-static-i18n) is in the nav as its English page X.md
    written = {str(p.relative_to(DOCS)).replace(".zh.md", ".md") for p in DOCS.rglob("*.md")}
    assert listed <= written | set(hook.PAGES)
    assert written - listed == set()


# -- each page says what each thing means -------------------------------------------------

def _rows(text: str) -> dict[str, list[str]]:
    """The table rows of ``text`` by their first column's code word: every cell, stripped
    (``\\|`` inside a cell is not a column)."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^\| `([^`]+)` \|", line)
        if match:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[match[1]] = cells
    return rows


def _cjk(text: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" for c in text)


def test_the_config_page_names_every_converter_key_with_its_meaning(hook):
    from converters import cli as converter_cli
    from converters import config as convert_config
    from converters.verify import Gate

    page = hook.config_page()
    text = page[page.index("## The workstation's converter (`convert.toml`)"):]
    rows = _rows(text)
    keys = {f.name for f in dataclasses.fields(convert_config.ConvertConfig)}
    assert keys <= set(rows)
    assert {f.name for f in dataclasses.fields(Gate)} <= set(rows)
    options = {a.dest for a in converter_cli.build_parser()._actions if a.option_strings}
    file_only = keys - options
    assert {"split", "preprocessing", "preprocessing_params", "postprocessing",
            "postprocessing_params", "heads", "thresholds", "task",
            "gate", "float_fallback", "int8_guard_band", "stage",
            "output_meanings"} <= file_only
    assert {"intended_use", "lr"} <= options  # they once had no option
    for key in keys:
        assert rows[key][-1], f"{key} has no meaning"
        assert ("file only" in rows[key]) == (key in file_only), key
    assert "verify.guard_band" in rows["int8_guard_band"][-1]  # its #: comment
    assert "Normalisation mean" in rows["mean"][-1]  # else the option's help
    for key in convert_config.STAGE_KEYS:
        assert f"`{key}`" in text, key


def test_the_egress_page_gives_every_field_and_header_field_a_meaning(hook):
    from clinibox_common.contracts import egress, envelope

    page = hook.egress_page()
    for kind in egress.KINDS:
        for field, cells in _rows(_section(page, f"## `{kind}`")).items():
            assert cells[-1], f"{kind}.{field} has no meaning"
    header = _rows(_section(page, "### Header fields (signed, not encrypted)"))
    sent = json.loads(envelope.Header("c", "d", "alert", 1).to_bytes())
    assert set(header) == set(sent)
    for field, cells in header.items():
        assert cells[1] and cells[-1], field
    assert "one of `alert`, `summary`, `status`, `event`" in header["kind"][1]


def _manifest_paths(value, prefix=""):
    """Every key path of a manifest: ``a.b``, and ``a[].b`` for the items of a list ``a``."""
    if isinstance(value, dict):
        for key, inner in value.items():
            path = f"{prefix}.{key}" if prefix else key
            yield path
            yield from _manifest_paths(inner, path)
    elif isinstance(value, list):
        for item in value:
            yield from _manifest_paths(item, prefix + "[]")


def test_the_manifest_page_describes_every_key_of_a_complete_manifest(hook):
    from clinibox_common.contracts import manifest

    demo = json.loads((REPO / "models" / "clinibox-demo-lesion" / "1.0.0" / "manifest.json")
                      .read_text(encoding="utf-8"))
    undescribed = {path for path in _manifest_paths(demo)
                   if path not in manifest.KEYS
                   and not any(path.startswith(open_key + ".")
                               or path.startswith(open_key + "[]")
                               for open_key in manifest.OPEN_KEYS)}
    assert undescribed == set()
    assert set(manifest.KEYS) >= manifest.OPEN_KEYS
    for key in ("artifacts[].profiles", "artifacts[].conversion",
                "artifacts[].conversion.operating_threshold", "artifacts[].runtime_config",
                "provenance.threshold_from", "provenance.weakness",
                "provenance.data.clinic_feedback_cases", "provenance.gate",
                "provenance.floors"):
        assert key in manifest.KEYS, key
    rows = _rows(_section(hook.manifest_page(), "## Every key"))
    assert set(rows) == set(manifest.KEYS)
    assert all(cells[-1] for cells in rows.values())


def test_the_reasons_page_words_every_code_in_english_and_chinese(hook):
    from clinibox_common.contracts import reasons
    from clinibox_common.i18n import translations

    page = hook.reasons_page()
    rows = _rows(page.split("\n## ", 1)[0])
    catalog = translations("zh_CN")
    for member in reasons.ReasonCode:
        english, chinese = rows[member.value][-2:]
        assert english == hook.cell(reasons.TEMPLATES[member]), member
        if member not in reasons.VERBATIM:
            assert chinese == hook.cell(catalog.gettext(reasons.TEMPLATES[member])), member
            assert _cjk(chinese), member
    assert "imaging/quality.py" in rows["too_small"][1]  # the group's comment


def test_the_reasons_page_names_every_refusal_and_event_code_with_its_meaning(hook):
    from firmware_app.ingest import landing
    from firmware_app.ingest.store_checks import Refusal

    page = hook.reasons_page()
    refusals = _rows(_section(page, "## C-STORE refusals"))
    assert set(refusals) == {member.value for member in Refusal}
    for member in Refusal:
        assert refusals[member.value][1].startswith(f"0x{member.status:04X}"), member
        assert refusals[member.value][-1], f"{member} has no meaning"
    events = _rows(_section(page, "## Event codes"))
    assert landing.REFUSAL_EVENT in events and events[landing.REFUSAL_EVENT][-1]


def test_the_statuses_page_gives_each_member_its_meaning_and_labels(hook):
    from clinibox_common.contracts.statuses import InstanceStatus, Verdict
    from clinibox_common.i18n import gettext, use_locale
    from firmware_app.words import labels

    page = hook.statuses_page()
    for heading in [line for line in page.splitlines() if line.startswith("## `")]:
        for word, cells in _rows(_section(page, heading)).items():
            assert cells[2], f"{heading} {word} has no meaning"
    queued = _rows(_section(page, "## `InstanceStatus`"))[InstanceStatus.QUEUED.value]
    assert "waiting for the worker" in queued[2]
    with use_locale("zh_CN"):
        for table, enum_cls in ((labels.STATUSES, InstanceStatus), (labels.VERDICTS, Verdict)):
            rows = _rows(_section(page, f"## `{enum_cls.__name__}`"))
            for member in enum_cls:
                assert rows[member.value][3:] == [table[member],
                                                   gettext(table[member])], member
                assert _cjk(rows[member.value][4]), member
        levels = _rows(_section(page, "## Worklist levels"))
        assert set(levels) == set(labels.LEVELS)
        assert levels["doctor_must_read"][1:] == [labels.LEVELS["doctor_must_read"],
                                                  labels.level("doctor_must_read")]


def test_the_statuses_page_names_the_hospitals_words_with_their_meanings(hook):
    from central import audit_witness, report

    page = hook.statuses_page()
    health = _rows(_section(page, "## The hospital's health words"))
    assert list(health) == list(report.HEALTH_ORDER)
    verdicts = _rows(_section(page, "## Audit-head verdicts"))
    assert list(verdicts) == list(audit_witness.VERDICTS)
    for word, cells in {**health, **verdicts}.items():
        assert cells[-1], f"{word} has no meaning"
    assert "enrolment was revoked" in health["revoked"][-1]
