"""The numbered schema migrations (``firmware_app/storage/migrations/``) keep what the box holds.

Every old schema is frozen as ``tests/fixtures/schemas/vNN.sql`` (a fresh
database as that release built it: ``scripts/freeze_schema.py``). For each
migration N:

- fixture N-1 plus ``migrate`` is fixture N (or, for the newest, a fresh
  database): the migration alone makes exactly the schema of its version;
- fixture N-1 with a few realistic rows, opened by today's software (the
  whole ladder, the schema script, the after steps), keeps the rows with the
  values each migration promises, ends with the schema of a fresh database
  and at ``SCHEMA_VERSION``, and opening it again changes nothing.

A new migration adds its case to ``ROWS`` in ``tests/migration_rows.py`` (what it
promises about the rows of the version before) and freezes the schema it starts from.
"""

from __future__ import annotations

import re
import sqlite3
import textwrap
from pathlib import Path

import pytest

from firmware_app.storage import db, migrations
from firmware_app.storage.migrations import MigrationNumberingError
from tests.migration_rows import ROWS, check_v2, insert, seed_v1

FIXTURES = Path(__file__).resolve().parent.parent.parent / "fixtures" / "schemas"
VERSIONS = [m.version for m in migrations.MIGRATIONS]
BY_VERSION = {m.version: m for m in migrations.MIGRATIONS}


# -- building old databases and comparing schemas -------------------------------------------


def fixture_sql(version: int) -> str:
    """The frozen script of schema ``version`` (fails with what to do when it is missing)."""
    path = FIXTURES / f"v{version:02d}.sql"
    if not path.exists():
        pytest.fail(f"{path.name} is missing: freeze it with"
                    f" `.venv/bin/python scripts/freeze_schema.py {version}` before migrating on")
    return path.read_text(encoding="utf-8")


def old_database(path: Path, version: int) -> sqlite3.Connection:
    """A connection (as the box opens one, not initialised) to a database at ``version``."""
    conn = db.connect(path)
    conn.executescript(fixture_sql(version))
    assert user_version(conn) == version
    return conn


def user_version(conn: sqlite3.Connection) -> int:
    """``PRAGMA user_version``."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _normal(sql: str) -> str:
    return " ".join(sql.replace("IF NOT EXISTS ", "").split())


def _checks(sql: str) -> list[str]:
    """The CHECK expressions of a table's SQL (PRAGMA table_info does not show them)."""
    found = []
    for match in re.finditer(r"\bCHECK\s*\(", sql, re.IGNORECASE):
        depth, start = 1, match.end()
        end = start
        while depth:
            depth += {"(": 1, ")": -1}.get(sql[end], 0)
            end += 1
        found.append(_normal(sql[start:end - 1]))
    return sorted(found)


def _index(conn: sqlite3.Connection, name: str, unique: int, origin: str,
           partial: int) -> tuple:
    keys = tuple((r[2], r[3], r[4]) for r in conn.execute(f"PRAGMA index_xinfo({name})")
                 if r[5])
    where = ""
    if partial:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()
        where = _normal(re.split(r"\bWHERE\b", sql, flags=re.IGNORECASE)[1])
    # automatic indexes (UNIQUE, PRIMARY KEY) are named after the table they were made for
    return (name if origin == "c" else "", origin, unique, keys, where)


def shape(conn: sqlite3.Connection) -> dict[str, object]:
    """The schema, normalised: each table's columns (name, type, not null, default, key), in
    order, its CHECKs, foreign keys and indexes (keys, uniqueness, partial WHERE); each
    trigger's SQL. SQLite's own tables are left out."""
    found: dict[str, object] = {}
    for name, kind, table, sql in conn.execute(
            "SELECT name, type, tbl_name, sql FROM sqlite_master"
            " WHERE name NOT LIKE 'sqlite_%' ORDER BY name").fetchall():
        if kind == "table":
            found[f"table {name}"] = {
                "columns": [(r[1], r[2].upper(), r[3], r[4], r[5])
                            for r in conn.execute(f"PRAGMA table_info({name})")],
                "checks": _checks(sql),
                "foreign keys": sorted(tuple(r)[2:] for r in conn.execute(
                    f"PRAGMA foreign_key_list({name})")),
                "indexes": sorted(_index(conn, r[1], r[2], r[3], r[4]) for r in conn.execute(
                    f"PRAGMA index_list({name})").fetchall()),
            }
        elif kind == "trigger":
            found[f"trigger {name}"] = (table, _normal(sql))
    return found


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> dict[str, object]:
    """The schema of a fresh database made by today's software."""
    conn = db.open_database(tmp_path_factory.mktemp("fresh") / "box.db")
    try:
        assert user_version(conn) == db.SCHEMA_VERSION
        return shape(conn)
    finally:
        conn.close()


# -- the numbering ----------------------------------------------------------------------------


def test_migrations_are_numbered_from_2_without_a_gap():
    assert list(range(2, db.SCHEMA_VERSION + 1)) == VERSIONS
    assert db.SCHEMA_VERSION == migrations.SCHEMA_VERSION >= 13
    for migration in migrations.MIGRATIONS:
        assert re.fullmatch(rf"v{migration.version:02d}_[a-z0-9_]+", migration.name)
        assert migration.summary, f"{migration.name} says nothing about what it changes"


def _package(root: Path, name: str, modules: dict[str, str]) -> str:
    """A package of migration modules on ``sys.path`` (a real one, imported by discover)."""
    folder = root / name
    folder.mkdir()
    (folder / "__init__.py").write_text('"""Migrations of a test."""\n')
    for module, body in modules.items():
        (folder / f"{module}.py").write_text(textwrap.dedent(body))
    return name


STEP = '"""A step."""\n\ndef migrate(conn):\n    conn.execute("SELECT 1")\n'


def test_a_package_of_migrations_is_discovered_in_order(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = _package(tmp_path, "ladder_ok", {
        "v03_b": STEP + 'AFTER = ("order_studies", "rebuild_studies")\n', "v02_a": STEP,
        "v04_c": STEP + 'AFTER = "order_studies"\n', "_helpers": "X = 1\n"})
    found = migrations.discover(name)
    assert [(m.version, m.name) for m in found] == [(2, "v02_a"), (3, "v03_b"), (4, "v04_c")]
    assert migrations.pending(3, found) == found[2:]
    assert migrations.pending(0, found) == []  # a fresh database needs none
    assert migrations.after_steps(found) == [migrations.order_studies,
                                             migrations.rebuild_studies]  # each once


@pytest.mark.parametrize(("modules", "message"), [
    ({"v02_a": STEP, "v04_c": STEP}, "missing [3]"),
    ({"v02_a": STEP, "v03_b": STEP, "v03_c": STEP}, "migration 3 is numbered twice: v03_b, v03_c"),
    ({"v03_b": STEP}, "missing [2]"),
    ({"v01_a": STEP, "v02_b": STEP}, "below 2"),
    ({"v02_a": STEP, "v3_b": STEP}, "'v3_b' is not named vNN_<what>"),
    ({"v02_a": '"""No function."""\n'}, "v02_a has no migrate(conn) function"),
    ({"v02_a": STEP + 'AFTER = "tidy"\n'}, "unknown after steps ['tidy']"),
], ids=["gap", "duplicate", "no-v02", "v01", "one-digit", "no-function", "unknown-after"])
def test_a_misnumbered_ladder_is_refused(tmp_path, monkeypatch, modules, message):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = _package(tmp_path, f"ladder_{tmp_path.name}", modules)
    with pytest.raises(MigrationNumberingError) as refused:
        migrations.discover(name)
    assert message in str(refused.value)


def test_a_newer_database_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "box.db"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version={db.SCHEMA_VERSION + 1}")
    raw.close()
    conn = db.connect(path)
    try:
        with pytest.raises(RuntimeError, match="newer than this software"):
            db.initialise(conn)
        assert user_version(conn) == db.SCHEMA_VERSION + 1
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
    finally:
        conn.close()


def test_a_failed_upgrade_leaves_the_database_as_it_was(tmp_path):
    """The whole upgrade is one transaction: a v2 feedback row naming an instance that is
    gone fails v3's copy (foreign keys are enforced), and nothing of the ladder stays."""
    path = tmp_path / "box.db"
    old_database(path, 2).close()
    raw = sqlite3.connect(path)  # foreign keys off, as a hand-edited database may have it
    insert(raw, "feedback", instance_id=99, verdict="agree", at=5.0)
    raw.commit()
    raw.close()
    conn = db.connect(path)
    try:
        before = shape(conn)
        with pytest.raises(sqlite3.IntegrityError):
            db.initialise(conn)
        assert user_version(conn) == 2
        assert shape(conn) == before
        assert conn.execute("SELECT verdict FROM feedback").fetchall()[0][0] == "agree"
    finally:
        conn.close()


# -- each migration alone: fixture N-1 to fixture N -------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_each_migration_makes_the_schema_of_its_version(tmp_path, fresh, version):
    conn = old_database(tmp_path / "box.db", version - 1)
    try:
        with db.transaction(conn):
            BY_VERSION[version].migrate(conn)
        if version == db.SCHEMA_VERSION:
            assert shape(conn) == fresh  # the newest: what the schema script makes
        else:
            target = sqlite3.connect(":memory:")
            target.executescript(fixture_sql(version))
            assert shape(conn) == shape(target)
            target.close()
    finally:
        conn.close()


def test_the_newest_frozen_schema_is_a_fresh_database(tmp_path, fresh):
    """The newest fixture is today's schema (or the one before it, while a migration is new)."""
    newest = max(int(p.stem[1:]) for p in FIXTURES.glob("v*.sql"))
    assert newest in (db.SCHEMA_VERSION, db.SCHEMA_VERSION - 1)
    if newest == db.SCHEMA_VERSION:
        conn = old_database(tmp_path / "box.db", newest)
        assert shape(conn) == fresh
        conn.close()


# -- the ladder with rows: what each migration promises ---------------------------------------




def test_every_migration_says_what_it_promises_about_the_rows():
    assert sorted(ROWS) == VERSIONS, "add the new migration's case to ROWS"


@pytest.mark.parametrize("version", VERSIONS)
def test_a_database_of_the_previous_version_is_upgraded_in_place(tmp_path, fresh, version):
    path = tmp_path / "box.db"
    conn = old_database(path, version - 1)
    seed, check = ROWS.get(version, (lambda conn: None, lambda conn: None))
    with db.transaction(conn):
        seed(conn)
    counts = {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
              for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"
                                           " AND name NOT LIKE 'sqlite_%'").fetchall()}
    conn.close()
    conn = db.open_database(path)
    try:
        assert user_version(conn) == db.SCHEMA_VERSION
        assert shape(conn) == fresh
        for table, count in counts.items():  # no row lost (v3 rolls the studies up again)
            if table != "studies":
                assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == count
        check(conn)
    finally:
        conn.close()
    again = db.open_database(path)  # opening an upgraded database changes nothing
    try:
        assert user_version(again) == db.SCHEMA_VERSION
        assert shape(again) == fresh
    finally:
        again.close()


def test_the_oldest_database_climbs_the_whole_ladder(tmp_path, fresh):
    """A v1 database with its rows takes every migration and both after steps."""
    path = tmp_path / "box.db"
    conn = old_database(path, 1)
    with db.transaction(conn):
        seed_v1(conn)
    conn.close()
    conn = db.open_database(path)
    try:
        assert shape(conn) == fresh
        check_v2(conn)
        assert [tuple(r) for r in conn.execute(
            "SELECT instance_id, assessment FROM results ORDER BY instance_id")] == [
            (1, "finding"), (2, "no_finding"), (3, "no_finding")]  # v5
    finally:
        conn.close()


# -- the roll-up the v3 after step uses --------------------------------------------------------


def test_study_ids_stay_when_a_study_gains_instances(conn):
    from firmware_app.storage.study_rollup import update_study

    for n in (1, 2):
        conn.execute("INSERT INTO instances(id, local_id, study_instance_uid, source, spool_path,"
                     f" size_bytes, status, received_at, updated_at) VALUES ({n}, 'l{n}', 'S',"
                     " 'dicom', 'p', 1, 'processed', 1, 1)")
        conn.execute("INSERT INTO results(instance_id, model_id, backend, probability, finding,"
                     " alert, findings_json, warnings_json, key_frame, frames_inferred,"
                     f" timings_json, created_at) VALUES ({n}, 'm', 'b', 0.{n}, 0, 0, '[]',"
                     " '[]', 0, 1, '{}', 1)")
        update_study(conn, "S", "CT", {"patient_name": "A^B"} if n == 1 else {}, 2.0)
        if n == 1:
            first = conn.execute("SELECT id FROM studies WHERE study_key='S'").fetchone()[0]
    row = conn.execute("SELECT id, instances, patient_name, max_probability FROM studies"
                       " WHERE study_key='S'").fetchone()
    assert row["id"] == first and row["instances"] == 2
    assert row["patient_name"] == "A^B"  # kept when the newer instance has none
    assert abs(row["max_probability"] - 0.2) < 1e-9
