"""Freeze a schema version of the box database as a test fixture.

``tests/fixtures/schemas/vNN.sql`` is a script that builds an empty database at
schema NN exactly as the software of that version built a fresh one: its
tables, indexes and triggers (the SQL SQLite keeps in ``sqlite_master``, in the
order they were made), the rows the schema script itself writes (the audit
anchor), and ``PRAGMA user_version``. The outbox's sequence start
(``sqlite_sequence``, a clock reading) is left out: ``initialise`` writes one
whenever it is missing. The migration tests build each old database from its
fixture (``tests/unit/firmware_app/test_migrations.py``).

Before you write migration N+1, freeze the schema N that the working tree
builds today (it checks that ``SCHEMA_VERSION`` is N)::

    .venv/bin/python scripts/freeze_schema.py 13

An older version is built by that commit's own code (``git archive``, read-only;
the tree is unpacked into a temporary folder and its ``db`` module run there)::

    .venv/bin/python scripts/freeze_schema.py 10 --rev eea7913

``--drop-column`` takes a column off what was built, for a version that was
never released on its own (v11 came in one commit with v12)::

    .venv/bin/python scripts/freeze_schema.py 11 --rev 5b92296 \\
        --drop-column instances.geometry_json
"""

from __future__ import annotations

import argparse
import io
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "schemas"

#: builds a fresh database with the code on ``sys.path`` (the old layout or the new one)
_BUILD = """
import importlib, sys
for name in ("firmware_app.storage.db", "firmware_app.db"):
    try:
        db = importlib.import_module(name)
        break
    except ModuleNotFoundError:
        continue
conn = db.connect(sys.argv[1])
db.initialise(conn)
conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
conn.close()
"""


def build(path: Path, rev: str | None) -> None:
    """Make a fresh database at ``path`` with the working tree's code or ``rev``'s."""
    with tempfile.TemporaryDirectory() as tree:
        if rev is None:
            code = str(ROOT)
        else:
            archive = subprocess.run(["git", "archive", "--format=tar", rev, "firmware_app"],
                                     cwd=ROOT, check=True, capture_output=True).stdout
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(tree, filter="data")
            code = tree
        subprocess.run([sys.executable, "-c", _BUILD, str(path)], cwd=code, check=True,
                       env={"PYTHONPATH": code, "PATH": "/usr/bin:/bin"})


def dump(path: Path, version: int, drop_columns: list[str], origin: str) -> str:
    """The script that rebuilds the database at ``path`` (less ``drop_columns``)."""
    conn = sqlite3.connect(path)
    try:
        built = conn.execute("PRAGMA user_version").fetchone()[0]
        if built != version and not drop_columns:
            raise SystemExit(f"{origin} builds schema {built}, not {version}")
        for column in drop_columns:
            table, name = column.split(".")
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {name}")
        lines = [f"-- Schema v{version:02d} of the box database: a fresh database as {origin}"
                 " built it.",
                 "-- Made by scripts/freeze_schema.py; do not edit (freeze it again)."]
        if drop_columns:
            dropped = ", ".join(drop_columns)
            lines.append(f"-- Never released on its own: that build less {dropped}.")
        objects = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL"
                               " AND name NOT LIKE 'sqlite_%' ORDER BY rowid").fetchall()
        for _, _, sql in objects:
            lines.append(f"{sql};")
        for kind, table, _ in objects:
            if kind != "table":
                continue
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            quoted = " || ', ' || ".join(f"quote({name})" for name in columns)
            for (values,) in conn.execute(f"SELECT {quoted} FROM {table} ORDER BY rowid"):
                lines.append(f"INSERT INTO {table}({', '.join(columns)}) VALUES ({values});")
        lines.append(f"PRAGMA user_version={version};")
        return "\n".join(lines) + "\n"
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    """Write ``tests/fixtures/schemas/vNN.sql`` (or ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version", type=int, help="the schema version to freeze")
    parser.add_argument("--rev", help="a git commit whose code builds it (default: the tree)")
    parser.add_argument("--drop-column", action="append", default=[], metavar="TABLE.COLUMN",
                        help="take a column off what was built (a version never released)")
    parser.add_argument("--out", type=Path, help="where to write (default: the fixture)")
    args = parser.parse_args(argv)
    out = args.out or FIXTURES / f"v{args.version:02d}.sql"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "state" / "box.db"
        build(path, args.rev)
        text = dump(path, args.version, args.drop_column,
                    f"commit {args.rev}" if args.rev else "the working tree")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
