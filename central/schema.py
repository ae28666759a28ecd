"""The hospital database's tables, and the one step that brings an older database up to date.

The receiver's ``intake`` (:mod:`central.intake`: the messages it took off the broker, held
until checked) is a table of its own, made in any version without a new version number: an
older receiver leaves it alone.

Version 7 adds ``webhook_verdicts``: the hospital's verdicts sent by the webhook as FHIR
DiagnosticReports (``[notify] format = "fhir"``), one row per verdict given (an alert's
amended verdict is another). A version 6 database gains it, empty.

Version 6 says how old each figure of ``box_state`` is: ``queue_at`` and ``queue_seq`` (when
the box measured its queue, and the message that said it: an older message never takes a
newer figure back), ``disk_at`` (its last summary's disk) and ``audit_at`` (its last audit
head). A version 5 database gains them, empty until the box reports again.

Version 5 adds the model rollouts (``central/rollouts.py``): ``rollouts`` (the package
offered, its archive's hash, size and chunk hashes, the waves and the rollout's state),
``rollout_targets`` (each box's wave, its offer's downlink sequence number and the step it
reported) and ``rollout_chunks`` (the archive's bytes, chunk by chunk, which the downlink
publisher keeps retained on the broker), and ``box_state`` says why a box runs no model
(``waiting_for_model``). A version 4 database gains them and keeps every row.

Version 4 is the console's (``clinibox central web``): alerts gain their review
(``state`` new → under_review → reviewed, the ``verdict``, ``follow_up_months``,
``note``, who opened and who reviewed them); new tables hold the clinics' names and
counties, each box's latest state (``box_state``, written with each status and summary
so the fleet page reads one row a box), drift points over time (``drift_points``),
the verdicts going back to the boxes (``downlinks``), the webhook's deliveries
(``webhook_deliveries``) and the console's own accounts, sessions, failed logins and
audit trail. A version 3 database gains them and keeps every row; its reviewed alerts
become ``reviewed`` with no verdict.

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
VERSION = 7
#: Serialises schema creation when several receivers start on one PostgreSQL database.
_SCHEMA_LOCK = 0x636C6278  # "clbx"

#: Version 4's new alert columns, the review: in the CREATE, and added to a
#: version 2 or 3 table.
_V4_ALERT_COLUMNS = (
    ("state", "TEXT NOT NULL DEFAULT 'new'"),
    ("verdict", "TEXT"),
    ("follow_up_months", "BIGINT"),
    ("note", "TEXT"),
    ("opened_by", "TEXT"),
    ("opened_at", "DOUBLE PRECISION"),
    ("reviewed_by", "TEXT"),
)
_REVIEW_LINES = "".join(f"\n        {name:<13} {kind}," for name, kind in _V4_ALERT_COLUMNS)

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
        reviewed_at   DOUBLE PRECISION,""" + _REVIEW_LINES + """
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
    "clinics": """CREATE TABLE IF NOT EXISTS clinics (
        clinic      TEXT PRIMARY KEY,
        name        TEXT NOT NULL DEFAULT '',
        county      TEXT NOT NULL DEFAULT ''
    )""",
    "box_state": """CREATE TABLE IF NOT EXISTS box_state (
        clinic          TEXT NOT NULL,
        device          TEXT NOT NULL,
        last_seen       DOUBLE PRECISION,
        state           TEXT,
        state_at        DOUBLE PRECISION,
        model           TEXT,
        software        TEXT,
        runtime         TEXT,
        runtime_fallback INTEGER,
        queue_depth     BIGINT,
        outbox_pending  BIGINT,
        disk_used_pct   DOUBLE PRECISION,
        disk_free_mb    BIGINT,
        downlink_key    TEXT,
        downlink_seq    BIGINT,
        audit_row       BIGINT,
        audit_hash      TEXT,
        audit_verdict   TEXT,
        last_event      TEXT,
        last_event_reason TEXT,
        last_event_at   DOUBLE PRECISION,
        psi_confidence  DOUBLE PRECISION,
        psi_intensity   DOUBLE PRECISION,
        disagree_rate   DOUBLE PRECISION,
        drift           INTEGER NOT NULL DEFAULT 0,
        waiting_for_model TEXT,
        queue_at        DOUBLE PRECISION,
        queue_seq       BIGINT,
        disk_at         DOUBLE PRECISION,
        audit_at        DOUBLE PRECISION,
        model_digest    TEXT,
        finding_threshold DOUBLE PRECISION,
        package_threshold DOUBLE PRECISION,
        threshold_state TEXT,
        threshold_lesions BIGINT,
        threshold_clear BIGINT,
        PRIMARY KEY (clinic, device)
    )""",
    "drift_points": """CREATE TABLE IF NOT EXISTS drift_points (
        clinic          TEXT NOT NULL,
        device          TEXT NOT NULL,
        seq             BIGINT NOT NULL,
        model           TEXT NOT NULL,
        at              DOUBLE PRECISION NOT NULL,
        psi_confidence  DOUBLE PRECISION,
        psi_intensity   DOUBLE PRECISION,
        disagree_rate   DOUBLE PRECISION,
        reviews         BIGINT NOT NULL DEFAULT 0,
        drift           INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (clinic, device, seq)
    )""",
    "downlinks": """CREATE TABLE IF NOT EXISTS downlinks (
        clinic      TEXT NOT NULL,
        device      TEXT NOT NULL,
        seq         BIGINT NOT NULL,
        kind        TEXT NOT NULL,
        alert_id    BIGINT,
        payload     TEXT NOT NULL,
        created_at  DOUBLE PRECISION NOT NULL,
        sent_at     DOUBLE PRECISION,
        attempts    BIGINT NOT NULL DEFAULT 0,
        last_error  TEXT,
        PRIMARY KEY (clinic, device, seq)
    )""",
    "rollouts": """CREATE TABLE IF NOT EXISTS rollouts (
        id               {id},
        name             TEXT NOT NULL,
        version          TEXT NOT NULL,
        archive_sha256   TEXT NOT NULL,
        archive_bytes    BIGINT NOT NULL,
        unpacked_bytes   BIGINT NOT NULL,
        chunk_bytes      BIGINT NOT NULL,
        chunk_sha256     TEXT NOT NULL,
        signer           TEXT NOT NULL,
        canary           BIGINT NOT NULL,
        wave_size        BIGINT NOT NULL,
        pause_on_failure BIGINT NOT NULL DEFAULT 0,
        state            TEXT NOT NULL,
        state_reason     TEXT NOT NULL DEFAULT '',
        created_by       TEXT NOT NULL,
        created_at       DOUBLE PRECISION NOT NULL,
        updated_at       DOUBLE PRECISION NOT NULL,
        manifest_sha256  TEXT
    )""",
    "rollout_targets": """CREATE TABLE IF NOT EXISTS rollout_targets (
        rollout_id   BIGINT NOT NULL,
        clinic       TEXT NOT NULL,
        device       TEXT NOT NULL,
        wave         BIGINT NOT NULL,
        offer_seq    BIGINT,
        offered_at   DOUBLE PRECISION,
        step         TEXT NOT NULL DEFAULT 'waiting',
        reason       TEXT NOT NULL DEFAULT '',
        updated_at   DOUBLE PRECISION NOT NULL,
        rollback_seq BIGINT,
        PRIMARY KEY (rollout_id, clinic, device)
    )""",
    "rollout_chunks": """CREATE TABLE IF NOT EXISTS rollout_chunks (
        archive_sha256 TEXT NOT NULL,
        idx            BIGINT NOT NULL,
        data           {blob} NOT NULL,
        PRIMARY KEY (archive_sha256, idx)
    )""",
    "webhook_deliveries": """CREATE TABLE IF NOT EXISTS webhook_deliveries (
        id           {id},
        alert_id     BIGINT NOT NULL UNIQUE,
        payload      TEXT NOT NULL,
        created_at   DOUBLE PRECISION NOT NULL,
        next_at      DOUBLE PRECISION NOT NULL,
        attempts     BIGINT NOT NULL DEFAULT 0,
        claimed_until DOUBLE PRECISION,
        sent_at      DOUBLE PRECISION,
        given_up_at  DOUBLE PRECISION,
        last_error   TEXT
    )""",
    "webhook_verdicts": """CREATE TABLE IF NOT EXISTS webhook_verdicts (
        id           {id},
        alert_id     BIGINT NOT NULL,
        reviewed_at  DOUBLE PRECISION NOT NULL,
        payload      TEXT NOT NULL,
        created_at   DOUBLE PRECISION NOT NULL,
        next_at      DOUBLE PRECISION NOT NULL,
        attempts     BIGINT NOT NULL DEFAULT 0,
        claimed_until DOUBLE PRECISION,
        sent_at      DOUBLE PRECISION,
        given_up_at  DOUBLE PRECISION,
        last_error   TEXT,
        UNIQUE (alert_id, reviewed_at)
    )""",
    "console_accounts": """CREATE TABLE IF NOT EXISTS console_accounts (
        id            {id},
        name          TEXT NOT NULL UNIQUE,
        role          TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        language      TEXT NOT NULL DEFAULT '',
        created_at    DOUBLE PRECISION NOT NULL,
        changed_at    DOUBLE PRECISION NOT NULL
    )""",
    "console_sessions": """CREATE TABLE IF NOT EXISTS console_sessions (
        token_hash  TEXT PRIMARY KEY,
        account_id  BIGINT NOT NULL,
        created_at  DOUBLE PRECISION NOT NULL,
        last_seen   DOUBLE PRECISION NOT NULL
    )""",
    "console_login_failures": """CREATE TABLE IF NOT EXISTS console_login_failures (
        id          {id},
        at          DOUBLE PRECISION NOT NULL,
        name        TEXT NOT NULL,
        address     TEXT NOT NULL
    )""",
    "console_audit": """CREATE TABLE IF NOT EXISTS console_audit (
        id          {id},
        at          DOUBLE PRECISION NOT NULL,
        account     TEXT NOT NULL,
        address     TEXT NOT NULL,
        action      TEXT NOT NULL,
        target      TEXT NOT NULL DEFAULT '',
        detail      TEXT NOT NULL DEFAULT ''
    )""",
    "intake": """CREATE TABLE IF NOT EXISTS intake (
        id          {id},
        receiver    TEXT NOT NULL,
        clinic      TEXT NOT NULL,
        device      TEXT NOT NULL,
        topic       TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        payload     {blob} NOT NULL
    )""",
    "schema_version": "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
}
_INDEXES = {
    "messages_by_kind": "CREATE INDEX IF NOT EXISTS messages_by_kind"
                        " ON messages (clinic, device, kind, seq)",
    "alerts_waiting": "CREATE INDEX IF NOT EXISTS alerts_waiting ON alerts (reviewed_at, id)",
    "dead_letters_by_topic": "CREATE INDEX IF NOT EXISTS dead_letters_by_topic"
                             " ON dead_letters (topic, received_at)",
    "alerts_by_state": "CREATE INDEX IF NOT EXISTS alerts_by_state"
                       " ON alerts (state, received_at)",
    "alerts_by_box": "CREATE INDEX IF NOT EXISTS alerts_by_box"
                     " ON alerts (clinic, device, received_at)",
    "drift_points_by_box": "CREATE INDEX IF NOT EXISTS drift_points_by_box"
                           " ON drift_points (clinic, device, model, at)",
    "rollout_targets_box": "CREATE INDEX IF NOT EXISTS rollout_targets_box"
                           " ON rollout_targets (clinic, device, rollout_id)",
    "downlinks_unsent": "CREATE INDEX IF NOT EXISTS downlinks_unsent"
                        " ON downlinks (sent_at, clinic, device, seq)",
    "webhook_due": "CREATE INDEX IF NOT EXISTS webhook_due"
                   " ON webhook_deliveries (sent_at, given_up_at, next_at)",
    "webhook_verdicts_due": "CREATE INDEX IF NOT EXISTS webhook_verdicts_due"
                            " ON webhook_verdicts (sent_at, given_up_at, next_at)",
    "console_failures_by_address": "CREATE INDEX IF NOT EXISTS console_failures_by_address"
                                   " ON console_login_failures (address, at)",
    "console_audit_by_time": "CREATE INDEX IF NOT EXISTS console_audit_by_time"
                             " ON console_audit (at)",
    "intake_by_box": "CREATE INDEX IF NOT EXISTS intake_by_box"
                     " ON intake (receiver, clinic, device, id)",
}
#: Version 1's columns, copied as they are (rejections gain claimed_clinic, left empty).
_V1_COLUMNS = {
    "devices": "clinic, device, public_key, key_id, enrolled_at, revoked_at",
    "messages": "clinic, device, seq, kind, model, created_at, received_at, payload",
    "alerts": "id, clinic, device, seq, study_ref, finding, score, threshold, modality, model,"
              " instances, processing_ms, created_at, received_at, reviewed_at",
    "rejections": "id, at, reason, topic, claimed_device, size_bytes",
}
#: Version 6's columns of ``box_state``: when its figures were measured.
_V6_BOX_COLUMNS = (("queue_at", "DOUBLE PRECISION"), ("queue_seq", "BIGINT"),
                   ("disk_at", "DOUBLE PRECISION"), ("audit_at", "DOUBLE PRECISION"))
#: Columns added to a table of any version without a new version number (an older receiver
#: leaves them alone): what a box's status says its model's manifest digest is, and the
#: rollout package's (a step counts when they agree).
_ADDED_COLUMNS = (("box_state", "model_digest", "TEXT"), ("rollouts", "manifest_sha256", "TEXT"),
                  *(("box_state", column, kind) for column, kind in (
                      ("finding_threshold", "DOUBLE PRECISION"),
                      ("package_threshold", "DOUBLE PRECISION"), ("threshold_state", "TEXT"),
                      ("threshold_lesions", "BIGINT"), ("threshold_clear", "BIGINT"))))
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
        if found in (2, 3):
            _add_review_columns(tx)
        for statement in (*_TABLES.values(), *_INDEXES.values()):
            tx.execute(db.ddl(statement))
        if found == 1:
            _copy_version_1(db, tx)
        if found == 4:  # version 5: a box may run no model, waiting for one
            tx.execute("ALTER TABLE box_state ADD COLUMN waiting_for_model TEXT")
        if 4 <= found < 6:  # version 6: how old each of a box's figures is
            present = {c[0] for c in tx.execute("SELECT * FROM box_state LIMIT 0").description}
            for column, kind in _V6_BOX_COLUMNS:
                if column not in present:
                    tx.execute(f"ALTER TABLE box_state ADD COLUMN {column} {kind}")
        if found:
            _add_columns(tx)
        if 1 <= found < 4:  # alerts reviewed before verdicts existed
            tx.execute("UPDATE alerts SET state = 'reviewed' WHERE reviewed_at IS NOT NULL")
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


def _add_columns(tx: Transaction) -> None:
    """Add each of :data:`_ADDED_COLUMNS` its table lacks."""
    for table, column, kind in _ADDED_COLUMNS:
        present = {c[0] for c in tx.execute(f"SELECT * FROM {table} LIMIT 0").description}
        if column not in present:
            tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _add_review_columns(tx: Transaction) -> None:
    cursor = tx.execute("SELECT * FROM alerts LIMIT 0")
    present = {column[0] for column in cursor.description}
    for name, kind in _V4_ALERT_COLUMNS:
        if name not in present:
            tx.execute(f"ALTER TABLE alerts ADD COLUMN {name} {kind}")


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
