"""The box's SQLite database: one file holding the job queue and the results.

Queue rows and results live in one database so that finishing a job (result
stored, row marked processed) is one transaction: a crash leaves either both
or neither. WAL mode lets the viewer read while the worker writes;
``synchronous=FULL`` makes every commit durable before anything is
acknowledged to a sender.

The schema is ``storage/schema.py``; ``initialise`` brings an older database up
to it with the numbered migrations of ``storage/migrations/``
(``SCHEMA_VERSION`` is the highest).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from firmware_app.storage import migrations
from firmware_app.storage.dicom_outbox import kind_rule
from firmware_app.storage.migrations import SCHEMA_VERSION
from firmware_app.storage.migrations._sql import run_script
from firmware_app.storage.schema import SCHEMA

#: the state folder: the service user and its group (the viewer, a technician's tools)
STATE_DIR_MODE = 0o750
#: the database and its WAL and shared-memory files: the service user only
DATABASE_MODE = 0o600


def private_state_dir(folder: Path) -> None:
    """Create ``folder`` 0750, or take group-write and every "other" bit off one we own."""
    folder.mkdir(parents=True, exist_ok=True, mode=STATE_DIR_MODE)
    info = folder.stat()
    if info.st_uid == os.geteuid() and info.st_mode & 0o7777 & ~STATE_DIR_MODE:
        os.chmod(folder, info.st_mode & STATE_DIR_MODE)


def keep_private(path: Path) -> None:
    """The database, ``-wal`` and ``-shm`` files 0600 (those we own), whatever the umask."""
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            info = file.stat()
        except FileNotFoundError:
            continue
        if info.st_uid == os.geteuid() and info.st_mode & 0o777 != DATABASE_MODE:
            os.chmod(file, DATABASE_MODE)


def connect(path: Path, *, acknowledging: bool = True) -> sqlite3.Connection:
    """Open (and create if needed) the database.

    Each thread opens its own connection; connections are in autocommit mode
    and callers group writes with ``with transaction(conn):``.

    ``acknowledging`` connections (the landing path) commit with
    ``synchronous=FULL``: a commit is on disk before the sender is told
    "stored". The worker's connection only records results derived from
    objects already durable, so it uses ``synchronous=NORMAL``: WAL keeps every
    transaction atomic, and a power cut can at worst undo the last results,
    whose jobs then go back to the queue and are processed again.
    """
    path = Path(path)
    private_state_dir(path.parent)
    if not path.exists():  # created private, whatever the umask (patient names are in it)
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, DATABASE_MODE))
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    keep_private(path)
    conn.execute(f"PRAGMA synchronous={'FULL' if acknowledging else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def open_database(path: Path) -> sqlite3.Connection:
    """Connect and make sure the tables exist (for the command line's one-off reads)."""
    conn = connect(path)
    initialise(conn)
    return conn


def initialise(conn: sqlite3.Connection) -> None:
    """Make the database current: the schema on a fresh one, the migrations on an older one.

    One transaction (``BEGIN IMMEDIATE``, so two processes starting together
    take turns): a fresh database gets the schema script; one at version V the
    migrations V+1 … ``SCHEMA_VERSION`` in order, then the schema script for
    anything new, then the after steps they name (``storage/migrations``).
    A failure leaves the database as it was. A database newer than this
    software is refused (``RuntimeError``).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"database schema {version} is newer than this software ({SCHEMA_VERSION})"
            )
        steps = migrations.pending(version)
        for migration in steps:
            migration.migrate(conn)
            if not conn.in_transaction:  # a programming error, met by the migration's test
                raise RuntimeError(f"migration {migration.name} ended the upgrade's transaction"
                                   " (executescript or COMMIT): use _sql.run_script")
        run_script(conn, SCHEMA)
        for after in migrations.after_steps(steps):
            after(conn)
        kind_rule(conn)  # dicom_outbox.kind: the DICOM outputs of this software
        _start_sequence(conn)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _start_sequence(conn: sqlite3.Connection) -> None:
    """Start a fresh outbox's sequence numbers at the current time in microseconds.

    The hospital de-duplicates by (device, sequence number). Starting a new
    database above every number an earlier installation can have used (they
    grow by one per message, far slower than a microsecond clock) means a box
    re-installed with an empty database is not mistaken for a replay.
    """
    present = conn.execute("SELECT 1 FROM sqlite_sequence WHERE name='outbox'").fetchone()
    empty = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    if present is None and empty:
        conn.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('outbox', ?)",
                     (int(time.time() * 1_000_000),))


class transaction:
    """``with transaction(conn):`` — BEGIN IMMEDIATE … COMMIT, ROLLBACK on error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


class savepoint:
    """``with savepoint(conn):`` inside a transaction — what it wrote is undone on error, the
    transaction around it goes on."""

    def __init__(self, conn: sqlite3.Connection, name: str = "part") -> None:
        self.conn = conn
        self.name = name

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute(f"SAVEPOINT {self.name}")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.conn.execute(f"ROLLBACK TO {self.name}")
        self.conn.execute(f"RELEASE {self.name}")


def record_event(conn: sqlite3.Connection, level: str, component: str, message: str,
                 code: str = "") -> None:
    """Keep an error or notice for ``clinibox status`` (the last 1000 are kept); ``code``: what
    ``events_since`` counts it by ('' for an event nobody counts)."""
    conn.execute(
        "INSERT INTO events(at, level, component, message, code) VALUES (?, ?, ?, ?, ?)",
        (time.time(), level, component, message[:500], code),
    )
    conn.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) - 1000 FROM events)")


def object_code(status: str, instance_id: int) -> str:
    """The code of an event about one object: ``object:<status>:<instance id>`` (the status a
    ``contracts.statuses.InstanceStatus`` value), for the pages to say it in words."""
    return f"object:{getattr(status, 'value', status)}:{instance_id}"


def event_noted_since(conn: sqlite3.Connection, component: str, message: str,
                      since: float) -> bool:
    """Whether ``message`` of ``component`` is in the event log at or after ``since``."""
    return conn.execute("SELECT 1 FROM events WHERE component = ? AND message = ? AND at >= ? "
                        "LIMIT 1", (component, message[:500], since)).fetchone() is not None


def events_since(conn: sqlite3.Connection, component: str, code: str, since: float) -> int:
    """How many events of ``component`` with ``code`` (or a code of that kind: ``code:…``,
    ``storage.event_codes``) are in the event log at or after ``since``."""
    return int(conn.execute(
        "SELECT COUNT(*) FROM events WHERE component = ? AND (code = ? OR substr(code, 1, ?) = ?)"
        " AND at >= ?", (component, code, len(code) + 1, code + ":", since)).fetchone()[0])


def record_event_capped(conn: sqlite3.Connection, level: str, component: str, message: str,
                        code: str, per_hour: int, *, now: float | None = None) -> bool:
    """:func:`record_event`, unless ``per_hour`` events of ``component`` with ``code``'s kind
    (``storage.event_codes.kind``) are in the log already in the hour before ``now`` (a flood
    must not push the box's other events out of the last 1000); whether it was kept. In the
    caller's transaction."""
    now = time.time() if now is None else now
    if events_since(conn, component, code.partition(":")[0], now - 3600) >= per_hour:
        return False
    record_event(conn, level, component, message, code)
    return True


def newest_times(path: Path) -> list[tuple[float, str]]:
    """The newest received, analysed and event times in the database at ``path``, read-only.

    For the self-test's clock check: the clock cannot be much before them.
    Empty when there is no database yet or it cannot be read.
    """
    if not Path(path).exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return []
    found: list[tuple[float, str]] = []
    try:
        for table, column in (("instances", "received_at"), ("results", "created_at"),
                              ("events", "at")):
            try:
                (value,) = conn.execute(f"SELECT MAX({column}) FROM {table}").fetchone()
            except sqlite3.Error:
                continue
            if isinstance(value, (int, float)):
                found.append((float(value), f"newest {table}.{column}"))
    finally:
        conn.close()
    return found
