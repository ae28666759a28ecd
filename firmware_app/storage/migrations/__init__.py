"""The box database's numbered schema migrations: one module per version.

``vNN_<what>.py`` (two digits or more) takes a database at schema NN-1 to NN
with ``migrate(conn)``; its docstring says what changed. The modules are found
by name (``pkgutil``), the numbers must run without a gap or a duplicate from 2
(schema 1 was the first release), and the highest is :data:`SCHEMA_VERSION`,
the ``PRAGMA user_version`` of a current database. A new migration is one new
file (``docs/development/migration.md``).

How ``db.initialise`` uses them, all in one transaction (a failure leaves the
database at the version it had):

- a fresh database: the schema script (``storage/schema.py``), then
  ``user_version = SCHEMA_VERSION``;
- a database at version V: ``migrate`` of V+1 … SCHEMA_VERSION in order, then
  the schema script (idempotent: ``CREATE … IF NOT EXISTS``, so it adds only
  what is missing), then the *after* steps, then ``user_version``;
- a database newer than the software is refused (``RuntimeError``).

Each migration is self-contained: it reads and writes only what schema NN-1
has and creates what NN added with the SQL of NN (frozen in the module, never
taken from today's schema script), so the ladder works from any version, and
``tests/fixtures/schemas/vNN-1.sql`` plus ``migrate`` gives ``vNN.sql``. It is
also tolerant (a column or table already there is left alone): databases a
test made from today's schema less a column upgrade too. It runs inside the
upgrade's transaction, so it must not commit: no ``executescript`` (use
``_sql.run_script``), no ``BEGIN``/``COMMIT``.

Work that needs the *final* schema (rolling the studies up again, ordering them)
cannot run in the middle of the ladder. A migration names it instead, with a
module-level ``AFTER = "name"`` (or a tuple of names) from :data:`AFTER_STEPS`;
each named step runs once, after the schema script, in the order the
migrations first name them.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from clinibox_common.errors import CliniboxError
from firmware_app.storage.study_rollup import order_studies, update_study

#: a migration module's name: ``v`` and its number (at least two digits), ``_``, what it does
MODULE_NAME = re.compile(r"v(\d{2,})_[a-z0-9_]+")
#: the first migration's number (schema 1 is the first release's, made by its own script)
FIRST = 2


class MigrationNumberingError(CliniboxError, RuntimeError):
    """The migration modules are misnumbered: a gap, a duplicate or a malformed name."""


def rebuild_studies(conn: sqlite3.Connection) -> None:
    """Roll every analysed study up again from its results (the v3 migration made the
    ``studies`` table anew)."""
    keys = conn.execute(
        "SELECT i.study_instance_uid, MAX(i.modality) FROM instances i"
        " JOIN results r ON r.instance_id = i.id GROUP BY i.study_instance_uid").fetchall()
    for key, modality in keys:
        update_study(conn, key, modality, {}, time.time())


#: the work a migration may ask for after the ladder and the schema script, by name
AFTER_STEPS: dict[str, Callable[[sqlite3.Connection], None]] = {
    "rebuild_studies": rebuild_studies,
    "order_studies": order_studies,
}


@dataclass(frozen=True)
class Migration:
    """One step of the ladder: schema ``version - 1`` to ``version``."""

    version: int
    name: str
    migrate: Callable[[sqlite3.Connection], None]
    after: tuple[str, ...]
    summary: str


def discover(package: str = __name__) -> list[Migration]:
    """The migrations of ``package``, by number; a gap, a duplicate, a module named ``vN…``
    that is not ``vNN_<what>``, or an unknown after step raises MigrationNumberingError."""
    found: dict[int, list[str]] = {}
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if not re.match(r"v\d", info.name):
            continue  # the package's own helpers (``_sql``)
        match = MODULE_NAME.fullmatch(info.name)
        if match is None:
            raise MigrationNumberingError(
                f"migration module {info.name!r} is not named vNN_<what> (lower case)")
        found.setdefault(int(match.group(1)), []).append(info.name)
    for number, names in sorted(found.items()):
        if len(names) > 1:
            raise MigrationNumberingError(
                f"migration {number} is numbered twice: {', '.join(sorted(names))}")
    missing = sorted(set(range(FIRST, max(found, default=FIRST - 1) + 1)) - set(found))
    if missing or (found and min(found) < FIRST):
        raise MigrationNumberingError(
            f"migrations must be numbered {FIRST}, {FIRST + 1}, … without a gap: have"
            f" {sorted(found)}, missing {missing or 'none'}"
            f"{'' if min(found, default=FIRST) >= FIRST else f', below {FIRST}'}")
    return [_load(package, number, names[0]) for number, names in sorted(found.items())]


def _load(package: str, number: int, name: str) -> Migration:
    module = importlib.import_module(f"{package}.{name}")
    migrate = getattr(module, "migrate", None)
    if not callable(migrate):
        raise MigrationNumberingError(f"migration {name} has no migrate(conn) function")
    after = getattr(module, "AFTER", ())
    after = (after,) if isinstance(after, str) else tuple(after)
    unknown = [step for step in after if step not in AFTER_STEPS]
    if unknown:
        raise MigrationNumberingError(
            f"migration {name} asks for unknown after steps {unknown}"
            f" (known: {', '.join(AFTER_STEPS)})")
    summary = (module.__doc__ or "").strip().split("\n\n")[0]
    return Migration(number, name, migrate, after, " ".join(summary.split()))


#: every migration, by number
MIGRATIONS: list[Migration] = discover()
#: the schema version this software makes and reads (``PRAGMA user_version``)
SCHEMA_VERSION: int = MIGRATIONS[-1].version if MIGRATIONS else FIRST - 1


def pending(version: int, migrations: list[Migration] | None = None) -> list[Migration]:
    """The migrations a database at ``version`` still needs, in order (none for a fresh one,
    version 0: the schema script makes it current)."""
    if version <= 0:
        return []
    return [m for m in (MIGRATIONS if migrations is None else migrations) if m.version > version]


def after_steps(steps: list[Migration]) -> list[Callable[[sqlite3.Connection], None]]:
    """The after steps ``steps`` name, each once, in the order they are first named."""
    names: list[str] = []
    for migration in steps:
        names += [name for name in migration.after if name not in names]
    return [AFTER_STEPS[name] for name in names]
