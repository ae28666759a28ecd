"""Facts the documentation states that the code or the tree also holds agree with them.

A fact copied by hand drifts; each one here is either read from its source when the page is
built or checked against it:

- the schema migration page's numbers (``docs/development/migration.md``): today's
  ``SCHEMA_VERSION`` (N) and the next migration (N+1), and the modules it names exist;
- the decision records: the files in ``docs/decisions/``, the index page's table (number,
  title and status as each record gives them, in order) and mkdocs.yml's "Decisions"
  section are the same records;
- the Python version the box needs: pyproject.toml's ``requires-python``, the installer's
  check, README.md and the install pages;
- the default ports (DICOM, the viewer, the console) and AE title where README.md and the
  pages state them: the settings' defaults.

(The Debian packages have their own file: ``tests/unit/test_debian_packages.py``.)
"""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

from firmware_app.storage.migrations import SCHEMA_VERSION

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
DECISIONS = DOCS / "decisions"
MIGRATIONS = REPO / "firmware_app" / "storage" / "migrations"


# -- the migration page -----------------------------------------------------------------

def schema_numbers(page: str) -> tuple[set[str], set[int]]:
    """(the migration modules ``vNN_name.py`` the page names, every other number of 10 or
    more it gives: the versions of its worked example)."""
    modules = set(re.findall(r"\bv\d+_[a-z_]+\.py\b", page))
    rest = re.sub(r"\bv\d+_[a-z_]+\.py\b", " ", page)
    return modules, {int(n) for n in re.findall(r"(?<![\d.])\d{2,}(?![\d.])", rest)}


def test_the_migration_page_gives_todays_schema_version_and_the_next():
    page = (DOCS / "development" / "migration.md").read_text(encoding="utf-8")
    modules, numbers = schema_numbers(page)
    assert numbers == {SCHEMA_VERSION, SCHEMA_VERSION + 1}, (
        f"docs/development/migration.md: the example's numbers are {sorted(numbers)}; today N"
        f" is {SCHEMA_VERSION} and the next migration {SCHEMA_VERSION + 1}")
    assert modules and all((MIGRATIONS / module).exists() for module in modules), modules
    newest = sorted(MIGRATIONS.glob(f"v{SCHEMA_VERSION}_*.py"))
    assert [p.name for p in newest] == [m for m in modules if m.startswith(f"v{SCHEMA_VERSION}_")]
    assert f"N is {SCHEMA_VERSION} (`{newest[0].name}`)" in page


def test_the_migration_check_sees_a_stale_number():
    modules, numbers = schema_numbers(
        "N is 16 (`v16_event_codes.py`); see `v13_held_outbox.py`, numbered 2, 3; v17.sql,"
        " seed_v16, `17: (seed_v16, check_v17)`, 15 %, 1.25")
    assert modules == {"v16_event_codes.py", "v13_held_outbox.py"}
    assert numbers == {16, 17, 15}


# -- the decision records ---------------------------------------------------------------

def _records() -> list[Path]:
    return sorted(DECISIONS.glob("[0-9][0-9][0-9][0-9]-*.md"))


def _record_head(path: Path) -> tuple[str, str]:
    """A record's (title, status) as its own page gives them."""
    text = path.read_text(encoding="utf-8")
    title = re.match(rf"# {path.name[:4]}\. (.+)\n", text)
    status = re.search(r"^- \*\*Status:\*\* (.+)$", text, flags=re.M)
    assert title and status, path
    return title[1].strip(), status[1].strip()


def index_rows(index: str) -> list[tuple[str, str, str]]:
    """The index page's table: (file, title, status) a row, in order."""
    return [(m[2], m[3].strip(), m[4].strip()) for m in re.finditer(
        r"^\| \[(\d{4})\]\((\d{4}-[^)]+\.md)\) \| (.+?) \| (.+?) \|$", index, flags=re.M)]


def test_the_decisions_index_lists_every_record_with_its_title_and_status():
    rows = index_rows((DECISIONS / "index.md").read_text(encoding="utf-8"))
    records = _records()
    assert len(records) >= 43
    assert [(name, title) for name, title, _ in rows] == [
        (p.name, _record_head(p)[0]) for p in records]
    for (name, _, status), path in zip(rows, records, strict=True):
        # the index may leave out the record's remark after its status
        assert re.fullmatch(r"accepted|superseded by \[\d{4}\]\(\d{4}-[^)]+\.md\)", status), name
        assert _record_head(path)[1].startswith(status), name


def test_the_sidebars_decisions_are_the_records_in_order():
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    section = next(item["Decisions"] for item in nav
                   if isinstance(item, dict) and "Decisions" in item)
    assert section == ["decisions/index.md",
                       *(f"decisions/{p.name}" for p in _records())]


def test_the_decisions_check_reads_a_row_as_written():
    index = ("| № | decision | status |\n| --- | --- | --- |\n"
             "| [0018](0018-a.md) | Eight | superseded by [0019](0019-b.md) |\n")
    assert index_rows(index) == [("0018-a.md", "Eight", "superseded by [0019](0019-b.md)")]


# -- the Python version -----------------------------------------------------------------

def test_the_python_version_is_the_one_pyproject_requires():
    required = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"]["requires-python"]
    major, minor = re.fullmatch(r">=(\d+)\.(\d+)", required).groups()
    install = (REPO / "scripts" / "install.sh").read_text(encoding="utf-8")
    assert f"sys.version_info < ({major}, {minor})" in install
    assert f"older than Python {major}.{minor}" in install
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"needs Python {major}.{minor}+" in readme
    for page in ("install.md", "install.zh.md"):
        text = (DOCS / "technician" / page).read_text(encoding="utf-8")
        assert f"Python {major}.{minor} " in text, page
        # a vendor's system the page names (JetPack's, Ubuntu's) has one at least as new
        named = {tuple(map(int, version.split("."))) for version in
                 re.findall(r"Python (\d+\.\d+)", text)}
        assert min(named) == (int(major), int(minor)), page


# -- the default ports ------------------------------------------------------------------

def test_the_default_ports_and_ae_title_are_the_settings_defaults():
    from central.config import CentralConfig
    from firmware_app.settings import box

    dicom, web = box.Config().dicom, box.Config().web
    console = CentralConfig().web
    said = {
        REPO / "README.md": [f"| DICOM Storage SCP | port {dicom.port}, AE title"
                             f" `{dicom.ae_title}` |", f"`https://<box>:{web.port}/`"],
        DOCS / "integration" / "pacs.md": [f"| `[dicom] ae_title` | `{dicom.ae_title}` |",
                                           f"| `[dicom] port` | `{dicom.port}` |",
                                           f"(`[dicom] host` is where it listens) | "
                                           f"`{dicom.host}` (all) |"],
        DOCS / "technician" / "install.md": [f"(HTTPS, port {web.port})"],
        DOCS / "technician" / "install.zh.md": [f"（HTTPS，端口 {web.port}）"],
        DOCS / "clinic" / "index.md": [f"`https://<the box's address>:{web.port}/`"],
        DOCS / "clinic" / "zh.md": [f"`https://<本机地址>:{web.port}/`"],
        DOCS / "hospital" / "console.md": [f"({console.port} by default)"],
        DOCS / "hospital" / "console.zh.md": [f"（默认 {console.port}）"],
    }
    missing = [f"{page.relative_to(REPO)}: {words}" for page, phrases in said.items()
               for words in phrases if words not in page.read_text(encoding="utf-8")]
    assert missing == []
