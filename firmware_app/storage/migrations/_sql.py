"""What the migrations share: a table's columns, the tables there are, a script run statement by
statement (inside the upgrade's transaction, which ``executescript`` would commit)."""

from __future__ import annotations

import sqlite3


def columns(conn: sqlite3.Connection, table: str) -> set[str]:
    """The names of ``table``'s columns (empty when there is no such table)."""
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def tables(conn: sqlite3.Connection) -> set[str]:
    """The names of the database's tables."""
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Execute every statement of ``script`` in turn, in the transaction that is open.

    ``Connection.executescript`` commits a pending transaction first; this does
    not. Statements are cut where SQLite's own tokenizer says one is complete
    (so a trigger's body, or a ``;`` in a comment, stays whole).
    """
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""
    if statement.strip():
        conn.execute(statement)  # comments only (anything else is an unfinished statement)
