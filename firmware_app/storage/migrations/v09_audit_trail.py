"""v9: the access audit trail: the ``audit`` table (a hash chain, ``storage/audit_chain.py``),
its ``audit_anchor`` row and the triggers that refuse changes; nothing earlier changes."""

from __future__ import annotations

import sqlite3

from firmware_app.storage.audit_schema import GENESIS_HASH
from firmware_app.storage.migrations._sql import run_script

#: the tables, index, anchor row and triggers as v9 made them (``storage/audit_schema.py``)
V9_AUDIT = f"""
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


def migrate(conn: sqlite3.Connection) -> None:
    """Schema 8 to 9."""
    run_script(conn, V9_AUDIT)
