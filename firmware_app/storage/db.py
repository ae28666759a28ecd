"""The box's SQLite database: one file holding the job queue and the results.

Queue rows and results live in one database so that finishing a job (result
stored, row marked processed) is one transaction: a crash leaves either both
or neither. WAL mode lets the viewer read while the worker writes;
``synchronous=FULL`` makes every commit durable before anything is
acknowledged to a sender.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from firmware_app.storage.audit_schema import AUDIT_SCHEMA, migrate_to_v9
from firmware_app.storage.study_alerts import ALERTED_STUDIES_TABLE, migrate_to_v8
from firmware_app.storage.study_rollup import order_studies, update_study

SCHEMA_VERSION = 13

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id                  INTEGER PRIMARY KEY,
    local_id            TEXT NOT NULL UNIQUE,
    sop_instance_uid    TEXT UNIQUE,
    study_instance_uid  TEXT,
    series_instance_uid TEXT,
    modality            TEXT,
    source              TEXT NOT NULL,
    origin              TEXT,
    spool_path          TEXT NOT NULL,
    size_bytes          INTEGER NOT NULL,
    status              TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    reason              TEXT,
    duplicates          INTEGER NOT NULL DEFAULT 0,
    received_at         REAL NOT NULL,
    updated_at          REAL NOT NULL,
    image_deleted_at    REAL,
    image_rows          INTEGER,
    image_columns       INTEGER,
    geometry_json       TEXT
);
CREATE INDEX IF NOT EXISTS instances_status ON instances(status, id);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_instance_uid);
CREATE INDEX IF NOT EXISTS instances_received ON instances(received_at);
-- Retention (firmware_app/storage/retention.py): ``image_deleted_at`` is NULL while the
-- object's file is on the box; once retention deletes it, the time it did (the
-- row, its result and its study stay), with the image's size in pixels kept in
-- ``image_rows``/``image_columns`` so the viewer can still place the findings in
-- words. The partial indexes hold only the images still present, oldest first
-- (what a retention pass walks), and only the deleted ones, by date.
CREATE INDEX IF NOT EXISTS instances_image_present ON instances(received_at)
    WHERE image_deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS instances_image_deleted ON instances(image_deleted_at)
    WHERE image_deleted_at IS NOT NULL;
-- ``geometry_json`` (v12): where the analysed image lies in the patient (Image Position and
-- Orientation (Patient), Pixel Spacing, Slice Thickness, Spacing Between Slices, Frame of
-- Reference UID, frames: ``DecodedImage.geometry()``); NULL when not recorded (analysed
-- before v12). A series' slices are read as a volume from it (storage/volumes.py).

-- A result's ``assessment`` (inference/assessment.py: finding, no_finding, not_assessable,
-- outside_validated_range) with its reason in words, its lesion records
-- (inference/lesions.py) and every class probability of a classifier.
CREATE TABLE IF NOT EXISTS results (
    instance_id     INTEGER PRIMARY KEY REFERENCES instances(id),
    model_id        TEXT NOT NULL,
    backend         TEXT NOT NULL,
    probability     REAL NOT NULL,
    finding         INTEGER NOT NULL,
    alert           INTEGER NOT NULL,
    findings_json   TEXT NOT NULL,
    warnings_json   TEXT NOT NULL,
    key_frame       INTEGER NOT NULL,
    frames_inferred INTEGER NOT NULL,
    heatmap         BLOB,
    heatmap_shape   TEXT,
    timings_json    TEXT NOT NULL,
    created_at      REAL NOT NULL,
    input_mean      REAL,
    input_std       REAL,
    assessment      TEXT NOT NULL DEFAULT 'no_finding',
    assessment_reason TEXT NOT NULL DEFAULT '',
    lesions_json    TEXT NOT NULL DEFAULT '[]',
    classes_json    TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS results_created ON results(created_at);

-- One row per study with at least one processed instance: the worklist.
-- The id is stable (rows are updated in place), so the viewer links to it.
-- The patient and study strings are shown on the clinic LAN only; they never
-- leave the box (the telemetry schema has no field that could carry them).
-- ``completed_at``: its latest completion (stable: storage/study_completion.py);
-- ``alerts_done_at``: the completion whose alerts are all queued (storage/study_alerts.py).
CREATE TABLE IF NOT EXISTS studies (
    id                 INTEGER PRIMARY KEY,
    study_key          TEXT NOT NULL UNIQUE,
    modality           TEXT,
    instances          INTEGER NOT NULL,
    max_probability    REAL NOT NULL,
    findings           INTEGER NOT NULL,
    alert              INTEGER NOT NULL,
    top_instance_id    INTEGER REFERENCES instances(id),
    warnings           INTEGER NOT NULL,
    received_at        REAL NOT NULL,
    updated_at         REAL NOT NULL,
    patient_name       TEXT NOT NULL DEFAULT '',
    patient_id         TEXT NOT NULL DEFAULT '',
    study_date         TEXT NOT NULL DEFAULT '',
    study_description  TEXT NOT NULL DEFAULT '',
    not_assessable     INTEGER NOT NULL DEFAULT 0,
    outside_range      INTEGER NOT NULL DEFAULT 0,
    completed_at       REAL,
    completions        INTEGER NOT NULL DEFAULT 0,
    alerts_done_at     REAL,
    band               INTEGER NOT NULL DEFAULT 3,
    suspicion          REAL
);
-- ``max_probability`` is the model's highest answer, shown to nobody (kept for the record);
-- ``suspicion`` the highest of the images it gave a result for (NULL: none), and ``band``
-- the clinical order (inference/assessment.py: alert, finding, a doctor must read, none)
CREATE INDEX IF NOT EXISTS studies_clinical_order ON studies(band, suspicion DESC,
                                                            received_at DESC);
CREATE INDEX IF NOT EXISTS studies_received ON studies(received_at);
-- the previous study of the same patient (the study page); made on any older database too
CREATE INDEX IF NOT EXISTS studies_patient ON studies(patient_id, study_date, received_at);

CREATE TABLE IF NOT EXISTS imported_files (
    medium_path  TEXT NOT NULL,
    size_bytes   INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    outcome      TEXT NOT NULL,
    instance_id  INTEGER,
    imported_at  REAL NOT NULL,
    PRIMARY KEY (medium_path, size_bytes, mtime_ns)
);

-- Clinicians' verdicts on findings: ``finding`` indexes the result's boxes,
-- -1 is the image as a whole. One verdict per clinician and finding (the
-- latest wins); telemetry sends only the counts.
CREATE TABLE IF NOT EXISTS feedback (
    id          INTEGER PRIMARY KEY,
    instance_id INTEGER NOT NULL REFERENCES instances(id),
    finding     INTEGER NOT NULL DEFAULT -1,
    verdict     TEXT NOT NULL CHECK (verdict IN ('agree', 'disagree', 'unsure')),
    account_id  INTEGER REFERENCES accounts(id) ON DELETE SET NULL,
    at          REAL NOT NULL,
    UNIQUE (instance_id, finding, account_id)
);
CREATE INDEX IF NOT EXISTS feedback_at ON feedback(at);

-- The viewer's local accounts (``clinibox user``), their sessions and failed logins.
CREATE TABLE IF NOT EXISTS accounts (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('clinician', 'technician')),
    password_hash TEXT NOT NULL,
    created_at    REAL NOT NULL,
    changed_at    REAL NOT NULL,
    language      TEXT NOT NULL DEFAULT ''  -- the viewer's language chosen by the user ('' none)
);
CREATE TABLE IF NOT EXISTS web_sessions (
    token_hash  TEXT PRIMARY KEY,
    account_id  INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at  REAL NOT NULL,
    last_seen   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS login_failures (
    id       INTEGER PRIMARY KEY,
    at       REAL NOT NULL,
    name     TEXT NOT NULL,
    address  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_at ON login_failures(at);

-- Outbound telemetry. seq is the message's sequence number: AUTOINCREMENT
-- never reuses a value, even after rows are deleted, so it only grows across
-- restarts and power cuts. payload is the exact JSON handed to encryption
-- (kept for the privacy audit); envelope is the sealed bytes, made once so
-- that a resend is byte-identical.
CREATE TABLE IF NOT EXISTS outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    payload     TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'dropped', 'superseded', 'will')),
    envelope    BLOB,
    created_at  REAL NOT NULL,
    sent_at     REAL,
    attempts    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(state, priority, seq);

-- Alerts sent (one per study and model name: storage/study_alerts.py) and telemetry counters.
{alerted_studies};
CREATE TABLE IF NOT EXISTS telemetry_state (
    name   TEXT PRIMARY KEY,
    value  REAL NOT NULL
);

-- One row per retention pass; a row left without ``finished_at`` is a pass that
-- crashed, whose marked images the next pass deletes again (files may remain).
CREATE TABLE IF NOT EXISTS retention_passes (
    id          INTEGER PRIMARY KEY,
    started_at  REAL NOT NULL,
    finished_at REAL,
    images      INTEGER NOT NULL DEFAULT 0,
    bytes       INTEGER NOT NULL DEFAULT 0
);

-- DICOM results (SR, SEG, key image) for the clinic's PACS destinations: one row per
-- document and destination. The document's file is written durably before its row
-- commits; the row is ``sent`` only after the destination answered the C-STORE with
-- Success, so a restart or a power cut loses nothing and sends nothing twice that was
-- acknowledged. ``superseded``: a newer version of the same document replaced it
-- before it was sent. ``held``: the destination refused it ([pacs] max_refusals
-- times, ``refusals``) with a failure status (``last_status``); it waits for a
-- technician (``clinibox dicom-out retry``).
CREATE TABLE IF NOT EXISTS dicom_outbox (
    id               INTEGER PRIMARY KEY,
    destination      TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('sr', 'seg', 'key_image')),
    study_key        TEXT NOT NULL,
    sop_class_uid    TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    path             TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'superseded', 'held')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    last_error       TEXT,
    created_at       REAL NOT NULL,
    sent_at          REAL,
    refusals         INTEGER NOT NULL DEFAULT 0,
    last_status      INTEGER,
    UNIQUE (destination, sop_instance_uid)
);
CREATE INDEX IF NOT EXISTS dicom_outbox_pending ON dicom_outbox(state, next_attempt_at, id);

-- Every de-identified export of a study (who, when, from where, which study, how many files).
CREATE TABLE IF NOT EXISTS exports (
    id         INTEGER PRIMARY KEY,
    at         REAL NOT NULL,
    account    TEXT NOT NULL,
    address    TEXT NOT NULL DEFAULT '',
    study_key  TEXT NOT NULL,
    files      INTEGER NOT NULL,
    target     TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS events (
    id        INTEGER PRIMARY KEY,
    at        REAL NOT NULL,
    level     TEXT NOT NULL,
    component TEXT NOT NULL,
    message   TEXT NOT NULL
);

-- The access audit trail (v9): append-only rows in a hash chain, its anchor, the triggers
-- that refuse changes (storage/audit_schema.py, storage/audit.py).
""".replace("{alerted_studies}", ALERTED_STUDIES_TABLE.strip()) + AUDIT_SCHEMA


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
    """Create the tables if they are not there yet."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"database schema {version} is newer than this software ({SCHEMA_VERSION})"
        )
    if 0 < version < 4:  # before the schema script: its indexes name the new columns
        _migrate_to_v4(conn)
    if 0 < version < 11:  # before the schema script too (its clinical-order index)
        _migrate_to_v11(conn)
    if 0 < version < 3:
        _migrate_to_v3(conn)
    conn.executescript(_SCHEMA)
    if 0 < version < 2:  # results gained the input intensity figures
        columns = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
        for name in ("input_mean", "input_std"):
            if name not in columns:
                conn.execute(f"ALTER TABLE results ADD COLUMN {name} REAL")
    if 0 < version < 5:
        _migrate_to_v5(conn)
    if 0 < version < 6:
        _migrate_to_v6(conn)
    if 0 < version < 7:
        _migrate_to_v7(conn)
    if 0 < version < 8:
        migrate_to_v8(conn)
    if 0 < version < 9:
        migrate_to_v9(conn)
    if 0 < version < 10:
        _migrate_to_v10(conn)
    if 0 < version < 12:
        _migrate_to_v12(conn)
    if 0 < version < 13:
        _migrate_to_v13(conn)
    if 0 < version < 3:
        _rebuild_studies(conn)
    elif 0 < version < 11:
        order_studies(conn)
    _start_sequence(conn)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _migrate_to_v3(conn: sqlite3.Connection) -> None:
    """v3: studies get a stable id and the worklist columns; feedback gets findings and 'unsure'.

    ``studies`` is derived from the results, so it is dropped here and rolled
    up again by ``_rebuild_studies``; feedback rows are copied over (as
    verdicts on the whole image).
    """
    conn.execute("DROP TABLE IF EXISTS studies")
    if "feedback" in _tables(conn) and "finding" not in _columns(conn, "feedback"):
        conn.execute("ALTER TABLE feedback RENAME TO feedback_v2")
        conn.executescript(_SCHEMA)
        conn.execute("INSERT INTO feedback(id, instance_id, finding, verdict, at)"
                     " SELECT id, instance_id, -1, verdict, at FROM feedback_v2")
        conn.execute("DROP TABLE feedback_v2")


def _migrate_to_v5(conn: sqlite3.Connection) -> None:
    """v5: results carry their assessment, lesion records and class probabilities.

    Columns are added with defaults; a result stored before says finding or
    no finding as its flags did, and keeps no lesion records (its boxes stay
    in ``findings_json``).
    """
    present = _columns(conn, "results")
    for name, kind in (("assessment", "TEXT NOT NULL DEFAULT 'no_finding'"),
                       ("assessment_reason", "TEXT NOT NULL DEFAULT ''"),
                       ("lesions_json", "TEXT NOT NULL DEFAULT '[]'"),
                       ("classes_json", "TEXT NOT NULL DEFAULT '{}'")):
        if name not in present:
            conn.execute(f"ALTER TABLE results ADD COLUMN {name} {kind}")
    conn.execute("UPDATE results SET assessment = 'finding' WHERE finding = 1")
    if "studies" in _tables(conn) and "not_assessable" not in _columns(conn, "studies"):
        conn.execute("ALTER TABLE studies ADD COLUMN not_assessable INTEGER NOT NULL DEFAULT 0")


def _migrate_to_v6(conn: sqlite3.Connection) -> None:
    """v6: studies count their instances outside the model's validated range (0 before:
    no package declared a range)."""
    if "studies" in _tables(conn) and "outside_range" not in _columns(conn, "studies"):
        conn.execute("ALTER TABLE studies ADD COLUMN outside_range INTEGER NOT NULL DEFAULT 0")


def _migrate_to_v7(conn: sqlite3.Connection) -> None:
    """v7: studies record when they were last completed (stable) and how many times; the
    DICOM outbox and the export record are new tables (from the schema script)."""
    if "studies" not in _tables(conn):
        return
    present = _columns(conn, "studies")
    for name, kind in (("completed_at", "REAL"), ("completions", "INTEGER NOT NULL DEFAULT 0")):
        if name not in present:
            conn.execute(f"ALTER TABLE studies ADD COLUMN {name} {kind}")
    # studies of the earlier software were alerted as they came: they count as complete
    # (no DICOM results are made for them unless a later instance updates them)
    conn.execute("UPDATE studies SET completed_at = updated_at WHERE completed_at IS NULL")


def _migrate_to_v10(conn: sqlite3.Connection) -> None:
    """v10: each viewer account keeps the language its user chose ('' until one is chosen)."""
    if "accounts" in _tables(conn) and "language" not in _columns(conn, "accounts"):
        conn.execute("ALTER TABLE accounts ADD COLUMN language TEXT NOT NULL DEFAULT ''")


def _migrate_to_v11(conn: sqlite3.Connection) -> None:
    """v11: studies are ordered clinically (``band``) and by the probability of the images
    the model gave a result for (``suspicion``), never by one it refused to give; both are
    filled in after the other migrations (``study_rollup.order_studies``)."""
    if "studies" not in _tables(conn):
        return
    present = _columns(conn, "studies")
    for name, kind in (("band", "INTEGER NOT NULL DEFAULT 3"), ("suspicion", "REAL")):
        if name not in present:
            conn.execute(f"ALTER TABLE studies ADD COLUMN {name} {kind}")
    conn.execute("DROP INDEX IF EXISTS studies_suspicion")


def _migrate_to_v12(conn: sqlite3.Connection) -> None:
    """v12: instances keep their geometry in the patient (``geometry_json``; NULL for those
    analysed before: their series are read per slice, ``inference/volume.py``)."""
    if "instances" in _tables(conn) and "geometry_json" not in _columns(conn, "instances"):
        conn.execute("ALTER TABLE instances ADD COLUMN geometry_json TEXT")


#: the DICOM outbox's columns up to v12, in order (copied over by ``_migrate_to_v13``)
_OUTBOX_V12_COLUMNS = ("id, destination, kind, study_key, sop_class_uid, sop_instance_uid, "
                       "path, state, attempts, next_attempt_at, last_error, created_at, sent_at")


def _migrate_to_v13(conn: sqlite3.Connection) -> None:
    """v13: a DICOM outbox row the destination kept refusing is ``held``; rows count the
    refusals and keep the last C-STORE status. SQLite cannot widen a CHECK: the table
    (created afresh by the schema script only when missing) is rebuilt with its rows."""
    if "dicom_outbox" not in _tables(conn) or "refusals" in _columns(conn, "dicom_outbox"):
        return
    schema = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS dicom_outbox"):]
    schema = schema[:schema.index(");") + 2].replace(
        "CREATE TABLE IF NOT EXISTS dicom_outbox", "CREATE TABLE dicom_outbox_v13")
    conn.execute("DROP TABLE IF EXISTS dicom_outbox_v13")
    conn.execute(schema)
    conn.execute(f"INSERT INTO dicom_outbox_v13({_OUTBOX_V12_COLUMNS})"
                 f" SELECT {_OUTBOX_V12_COLUMNS} FROM dicom_outbox")
    conn.execute("DROP TABLE dicom_outbox")
    conn.execute("ALTER TABLE dicom_outbox_v13 RENAME TO dicom_outbox")
    conn.execute("CREATE INDEX IF NOT EXISTS dicom_outbox_pending"
                 " ON dicom_outbox(state, next_attempt_at, id)")


def _migrate_to_v4(conn: sqlite3.Connection) -> None:
    """v4: instances record when retention deleted their image, and its size in pixels.

    Only columns are added (NULL: every image present, as before), so the
    upgrade is instant and keeps every row; the indexes and the
    ``retention_passes`` table come from the schema script.
    """
    if "instances" not in _tables(conn):
        return
    present = _columns(conn, "instances")
    for name, kind in (("image_deleted_at", "REAL"), ("image_rows", "INTEGER"),
                       ("image_columns", "INTEGER")):
        if name not in present:
            conn.execute(f"ALTER TABLE instances ADD COLUMN {name} {kind}")


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _rebuild_studies(conn: sqlite3.Connection) -> None:
    """Roll every processed study up again (after the v3 migration dropped the table)."""
    keys = conn.execute(
        "SELECT i.study_instance_uid, MAX(i.modality) FROM instances i"
        " JOIN results r ON r.instance_id = i.id GROUP BY i.study_instance_uid").fetchall()
    for key, modality in keys:
        update_study(conn, key, modality, {}, time.time())


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


def record_event(conn: sqlite3.Connection, level: str, component: str, message: str) -> None:
    """Keep an error or notice for ``clinibox status`` (the last 1000 are kept)."""
    conn.execute(
        "INSERT INTO events(at, level, component, message) VALUES (?, ?, ?, ?)",
        (time.time(), level, component, message[:500]),
    )
    conn.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) - 1000 FROM events)")


def event_noted_since(conn: sqlite3.Connection, component: str, message: str,
                      since: float) -> bool:
    """Whether ``message`` of ``component`` is in the event log at or after ``since``."""
    return conn.execute("SELECT 1 FROM events WHERE component = ? AND message = ? AND at >= ? "
                        "LIMIT 1", (component, message[:500], since)).fetchone() is not None


def events_since(conn: sqlite3.Connection, component: str, prefix: str, since: float) -> int:
    """How many events of ``component`` whose message starts with ``prefix`` are in the
    event log at or after ``since``."""
    return int(conn.execute(
        "SELECT COUNT(*) FROM events WHERE component = ? AND at >= ? AND substr(message, 1, ?)"
        " = ?", (component, since, len(prefix), prefix)).fetchone()[0])


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
