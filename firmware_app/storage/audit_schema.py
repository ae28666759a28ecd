"""The access audit trail's tables and triggers (schema v9).

``audit`` holds one row per audited act (``storage.audit``): who, when, from
which address, what, on what; each row carries the hash of the row before it
and its own hash over both (``storage.audit_chain``), so editing, deleting or
reordering rows shows when the chain is checked. ``AUTOINCREMENT`` keeps the
highest id ever given in ``sqlite_sequence``, so rows cut off the end show too.

``audit_anchor`` is one row: the id and hash of the last row pruned by
``keep_days`` (id 0 and the genesis hash before any pruning), where the check
of the chain starts, and the ``pruning`` flag that the delete trigger asks for.

The triggers refuse to change or delete a row (outside a prune) and to move
the anchor backwards. They are a speed bump for a mistaken ``sqlite3`` session,
not a lock: whoever can write the file can drop them. The hash chain is what
shows that it happened.

It imports nothing else of storage (``schema.py`` takes the schema from here;
the v9 migration, ``migrations/v09_audit_trail.py``, keeps the SQL as v9 made
it), so no import goes in a circle.
"""

from __future__ import annotations

import sqlite3

#: the hash the first row follows (before any row was pruned)
GENESIS_HASH = "0" * 64

#: tables, index, the anchor's row and the triggers (every statement is idempotent)
AUDIT_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS audit (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        REAL NOT NULL,
    account   TEXT NOT NULL,
    address   TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
CREATE TABLE IF NOT EXISTS audit_anchor (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    last_id    INTEGER NOT NULL,
    last_hash  TEXT NOT NULL,
    pruned_at  REAL,
    pruning    INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO audit_anchor(id, last_id, last_hash) VALUES (1, 0, '{GENESIS_HASH}');
CREATE TRIGGER IF NOT EXISTS audit_rows_are_not_changed BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit rows are append-only: they cannot be changed');
END;
CREATE TRIGGER IF NOT EXISTS audit_rows_are_only_pruned BEFORE DELETE ON audit
WHEN (SELECT pruning FROM audit_anchor WHERE id = 1) IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'audit rows are append-only: only the retention pass prunes them');
END;
CREATE TRIGGER IF NOT EXISTS audit_anchor_is_kept BEFORE DELETE ON audit_anchor
BEGIN
    SELECT RAISE(ABORT, 'the audit anchor cannot be deleted');
END;
CREATE TRIGGER IF NOT EXISTS audit_anchor_only_moves_on BEFORE UPDATE ON audit_anchor
WHEN NEW.last_id < OLD.last_id
  OR ((NEW.last_id != OLD.last_id OR NEW.last_hash != OLD.last_hash) AND OLD.pruning IS NOT 1)
BEGIN
    SELECT RAISE(ABORT, 'the audit anchor moves only forwards, while pruning');
END;
"""

#: the triggers a healthy database has (the chain check names any that is missing)
TRIGGERS = ("audit_rows_are_not_changed", "audit_rows_are_only_pruned",
            "audit_anchor_is_kept", "audit_anchor_only_moves_on")


def missing_triggers(conn: sqlite3.Connection) -> list[str]:
    """The append-only triggers that are not in the database (normally none)."""
    present = {row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN"
        " ('audit', 'audit_anchor')")}
    return [name for name in TRIGGERS if name not in present]
