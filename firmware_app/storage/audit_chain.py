"""The audit trail's hash chain: how a row's hash is made, and the check of the whole chain.

Each row's ``hash`` is SHA-256 over the previous row's hash, a newline and the
row's canonical encoding (a compact JSON list of id, at, account, address,
action, target, detail; UTF-8, no escaping of non-ASCII). The first row
follows the anchor's hash (``storage.audit_schema``): the genesis hash, or,
once rows were pruned, the hash of the last row pruned.

:func:`verify` walks the rows in id order from the anchor and stops at the first
row that breaks the chain, saying why:

* a gap in the ids (``AUTOINCREMENT`` ids follow each other): rows deleted;
* ``prev_hash`` is not the hash of the row before: a row deleted, inserted or moved;
* the row's own hash does not match its content: the row was edited;
* the highest id ever given (``sqlite_sequence``) is above the last row: rows cut
  off the end;
* an append-only trigger is missing: someone removed it (the rows may still be intact).

What it cannot see: someone who rewrites the whole chain from the edited row
on (every later hash made again). Against that only a copy of a recent hash
kept off the box helps; the last row's hash is shown for that purpose.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from clinibox_common.i18n import gettext, ngettext
from firmware_app.storage.audit_schema import missing_triggers


@dataclass(frozen=True)
class ChainCheck:
    """The result of checking the chain: intact, or the first row where it breaks and why."""

    rows: int
    broken_at: int | None = None
    reason: str = ""
    last_hash: str = ""

    @property
    def intact(self) -> bool:
        """Whether no row was edited, deleted or moved (and the triggers are in place)."""
        return self.broken_at is None and not self.reason

    def describe(self) -> str:
        """One line for a person: "intact (N rows)" or "broken at row N: reason" (in the
        current language; the reason in the language of the check)."""
        if self.intact:
            return ngettext("intact (%(num)d row)", "intact (%(num)d rows)", self.rows)
        if self.broken_at is None:
            return gettext("broken: %(reason)s", reason=self.reason)
        return gettext("broken at row %(row)s: %(reason)s", row=self.broken_at,
                       reason=self.reason)


def canonical(row_id: int, at: float, account: str, address: str, action: str, target: str,
              detail: str) -> bytes:
    """The bytes of a row that its hash covers."""
    return json.dumps([row_id, at, account, address, action, target, detail],
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def row_hash(prev_hash: str, row_id: int, at: float, account: str, address: str, action: str,
             target: str, detail: str) -> str:
    """SHA-256 (hex) over the previous row's hash and this row's canonical encoding."""
    digest = hashlib.sha256(prev_hash.encode("ascii") + b"\n")
    digest.update(canonical(row_id, at, account, address, action, target, detail))
    return digest.hexdigest()


def anchor(conn: sqlite3.Connection) -> tuple[int, str]:
    """(id, hash) of the last row pruned: where the chain starts."""
    row = conn.execute("SELECT last_id, last_hash FROM audit_anchor WHERE id = 1").fetchone()
    if row is None:
        raise sqlite3.DatabaseError("the audit anchor row is missing")
    return int(row[0]), str(row[1])


def highest_id_given(conn: sqlite3.Connection) -> int:
    """The highest audit row id SQLite has ever handed out (0 when none)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
    return 0 if row is None else int(row[0])


def verify(conn: sqlite3.Connection, through: int | None = None) -> ChainCheck:
    """Check the chain from the anchor to the last row (or to row ``through``).

    Reads in one snapshot (a read transaction when none is open), so rows added
    meanwhile do not disturb the check.
    """
    with read_snapshot(conn):
        return _verify(conn, through)


@contextmanager
def read_snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """Read the trail in one snapshot: a read transaction for the block, unless the caller
    holds one already (then theirs is the snapshot)."""
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        yield
    finally:
        if own:
            conn.execute("COMMIT")


def _verify(conn: sqlite3.Connection, through: int | None) -> ChainCheck:
    try:
        last_id, running = anchor(conn)
    except sqlite3.DatabaseError as exc:
        return ChainCheck(0, None, str(exc))
    count = 0
    sql = ("SELECT id, at, account, address, action, target, detail, prev_hash, hash"
           " FROM audit WHERE id > ?" + ("" if through is None else " AND id <= ?")
           + " ORDER BY id")
    params = (last_id,) if through is None else (last_id, through)
    for row in conn.execute(sql, params):
        row_id = int(row[0])
        if row_id != last_id + 1:
            return ChainCheck(count, row_id, _missing(last_id + 1, row_id - 1), running)
        if row[7] != running:
            return ChainCheck(count, row_id, gettext(
                "it does not follow the row before it (a row was deleted, inserted or moved)"),
                running)
        if row_hash(running, row_id, *row[1:7]) != row[8]:
            return ChainCheck(count, row_id,
                              gettext("its content does not match its hash (edited)"), running)
        last_id, running = row_id, str(row[8])
        count += 1
    if through is None:
        given = highest_id_given(conn)
        if given > last_id:
            return ChainCheck(count, last_id + 1, _cut_off(last_id + 1, given), running)
        gone = missing_triggers(conn)
        if gone:
            return ChainCheck(count, None, gettext("append-only trigger(s) removed: %(names)s",
                                                   names=", ".join(gone)), running)
    return ChainCheck(count, None, "", running)


def _missing(first: int, last: int) -> str:
    if first == last:
        return gettext("row %(first)s is missing before it (deleted)", first=first)
    return gettext("rows %(first)s to %(last)s are missing before it (deleted)", first=first,
                   last=last)


def _cut_off(first: int, last: int) -> str:
    if first == last:
        return gettext("row %(first)s is cut off the end (deleted)", first=first)
    return gettext("rows %(first)s to %(last)s are cut off the end (deleted)", first=first,
                   last=last)
