"""The hospital database's tables, and the one step that brings an older database up to date.

Version 3 adds two tables: ``dead_letters`` (the bytes of refused messages,
kept for a person to look at, bounded by ``[receiver] dead_letter_max_mb``)
and ``audit_heads`` (each box's audit-trail head as its heartbeats reported
it, with the witness's verdict, see :mod:`central.audit_witness`); a version 2
database gains them and keeps every row. Version 2 identifies a box by
``(clinic, device)`` everywhere: two clinics may both call a box ``box-1``.
Version 1 (clinibox before that) keyed devices and messages by the device
name alone; :func:`create_or_migrate` rebuilds such a database in place, in
one transaction, keeping every row and every alert id. The same SQL runs on
SQLite and PostgreSQL (see :mod:`central.sql`).
"""

from __future__ import annotations

from central.sql import Database, StoreError, Transaction

#: The schema this receiver writes.
VERSION = 3
#: Serialises schema creation when several receivers start on one PostgreSQL database.
_SCHEMA_LOCK = 0x636C6278  # "clbx"

_TABLES = {
    "devices": """CREATE TABLE IF NOT EXISTS devices (
        clinic      TEXT NOT NULL,
        device      TEXT NOT NULL,
        public_key  TEXT NOT NULL,
        key_id      TEXT NOT NULL,
        enrolled_at DOUBLE PRECISION NOT NULL,
        revoked_at  DOUBLE PRECISION,
        PRIMARY KEY (clinic, device)
    )""",
    "messages": """CREATE TABLE IF NOT EXISTS messages (
        clinic      TEXT NOT NULL,
        device      TEXT NOT NULL,
        seq         BIGINT NOT NULL,
        kind        TEXT NOT NULL,
        model       TEXT,
        created_at  BIGINT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        payload     TEXT NOT NULL,
        PRIMARY KEY (clinic, device, seq)
    )""",
    "alerts": """CREATE TABLE IF NOT EXISTS alerts (
        id            {id},
        clinic        TEXT NOT NULL,
        device        TEXT NOT NULL,
        seq           BIGINT NOT NULL,
        study_ref     TEXT NOT NULL,
        finding       TEXT NOT NULL,
        score         DOUBLE PRECISION NOT NULL,
        threshold     DOUBLE PRECISION NOT NULL,
        modality      TEXT NOT NULL,
        model         TEXT NOT NULL,
        instances     BIGINT NOT NULL,
        processing_ms DOUBLE PRECISION NOT NULL,
        created_at    BIGINT NOT NULL,
        received_at   DOUBLE PRECISION NOT NULL,
        reviewed_at   DOUBLE PRECISION,
        UNIQUE (clinic, device, seq)
    )""",
    "rejections": """CREATE TABLE IF NOT EXISTS rejections (
        id             {id},
        at             DOUBLE PRECISION NOT NULL,
        reason         TEXT NOT NULL,
        topic          TEXT NOT NULL,
        claimed_clinic TEXT,
        claimed_device TEXT,
        size_bytes     BIGINT NOT NULL
    )""",
    "dead_letters": """CREATE TABLE IF NOT EXISTS dead_letters (
        id          {id},
        received_at DOUBLE PRECISION NOT NULL,
        topic       TEXT NOT NULL,
        clinic      TEXT,
        device      TEXT,
        reason      TEXT NOT NULL,
        size        BIGINT NOT NULL,
        payload     {blob} NOT NULL
    )""",
    "audit_heads": """CREATE TABLE IF NOT EXISTS audit_heads (
        id          {id},
        clinic      TEXT NOT NULL,
        device      TEXT NOT NULL,
        seq         BIGINT NOT NULL,
        head_row    BIGINT NOT NULL,
        head_hash   TEXT NOT NULL,
        since_row   BIGINT NOT NULL,
        since_hash  TEXT NOT NULL,
        head_at     BIGINT,
        received_at DOUBLE PRECISION NOT NULL,
        verdict     TEXT NOT NULL,
        UNIQUE (clinic, device, seq)
    )""",
    "schema_version": "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
}
_INDEXES = {
    "messages_by_kind": "CREATE INDEX IF NOT EXISTS messages_by_kind"
                        " ON messages (clinic, device, kind, seq)",
    "alerts_waiting": "CREATE INDEX IF NOT EXISTS alerts_waiting ON alerts (reviewed_at, id)",
    "dead_letters_by_topic": "CREATE INDEX IF NOT EXISTS dead_letters_by_topic"
                             " ON dead_letters (topic, received_at)",
}
#: Version 1's columns, copied as they are (rejections gain claimed_clinic, left empty).
_V1_COLUMNS = {
    "devices": "clinic, device, public_key, key_id, enrolled_at, revoked_at",
    "messages": "clinic, device, seq, kind, model, created_at, received_at, payload",
    "alerts": "id, clinic, device, seq, study_ref, finding, score, threshold, modality, model,"
              " instances, processing_ms, created_at, received_at, reviewed_at",
    "rejections": "id, at, reason, topic, claimed_device, size_bytes",
}
#: The tables that hold the hospital's data (``counts`` reports them).
TABLES = ("devices", "messages", "alerts", "rejections")


def create_or_migrate(db: Database) -> int:
    """Create the schema, or migrate an older one; return the version found (0: empty).

    Runs in one write transaction, so a failure leaves the database as it
    was. A database written by a newer receiver is refused.
    """
    with db.transaction(write=True) as tx:
        if db.postgres:
            tx.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
        found = _version(db, tx)
        if found > VERSION:
            raise StoreError(f"database {db.where} has schema version {found}, newer than "
                             f"this receiver's {VERSION}: upgrade clinibox central")
        if found == 1:
            _rename_version_1(tx)
        for statement in (*_TABLES.values(), *_INDEXES.values()):
            tx.execute(db.ddl(statement))
        if found == 1:
            _copy_version_1(db, tx)
        if found < VERSION:
            tx.execute("DELETE FROM schema_version")
            tx.execute("INSERT INTO schema_version (version) VALUES (?)", (VERSION,))
    return found


def _version(db: Database, tx: Transaction) -> int:
    tables = db.tables(tx)
    if "devices" not in tables:
        return 0
    if "schema_version" not in tables:
        return 1  # version 1 kept no version number
    row = tx.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 1


def _rename_version_1(tx: Transaction) -> None:
    for index in _INDEXES:  # index names are global on PostgreSQL: free them
        tx.execute(f"DROP INDEX IF EXISTS {index}")
    for table in _V1_COLUMNS:
        tx.execute(f"ALTER TABLE {table} RENAME TO {table}_v1")


def _copy_version_1(db: Database, tx: Transaction) -> None:
    for table, columns in _V1_COLUMNS.items():
        tx.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}_v1")
        tx.execute(f"DROP TABLE {table}_v1")
    if db.postgres:  # explicit ids do not move an identity's sequence on PostgreSQL
        for table in ("alerts", "rejections"):
            tx.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                       f" COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)")
