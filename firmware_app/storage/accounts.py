"""The viewer's local accounts, failed-login throttle and server-side sessions.

The rules are the ones the hospital's console shares (``webcore``); this module keeps the
box's SQL. Design:

* Passwords are stored only as scrypt hashes and checked in about the same time for
  unknown names (``webcore.passwords``: the naming and password rules, the hash, the
  check against a dummy hash).
* ``LoginThrottle`` counts failed logins per client address and per (account
  name, address) in ``login_failures`` and answers with growing delays, never a lock
  (``webcore.throttle.ThrottlePolicy``): an attacker elsewhere on the LAN cannot keep a
  user out of the box from the user's own computer.
* ``Sessions`` are server-side (``webcore.sessions``): the browser holds a random token,
  ``web_sessions`` only its SHA-256, so logout, a password change, removing an account
  and expiry (idle and absolute) are real.
* Every change (add, new password, remove) is an audit row (``storage.audit``) in the
  change's own transaction, naming who made it: by default the unix user running the
  console command (``cli:<user>``), since accounts are managed on the box's console.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from clinibox_common.contracts.statuses import Role
from clinibox_common.i18n import LANGUAGES, gettext
from firmware_app.storage import audit, db
from webcore.passwords import (
    AccountError,
    check_password,
    hash_password,
    normalise_name,
    password_problem,
)
from webcore.sessions import SessionRule, new_token, token_hash
from webcore.throttle import ThrottlePolicy, throttle_key

#: the roles' words (plain strings: command-line choices and messages show them)
ROLES = tuple(role.value for role in Role)


@dataclass(frozen=True)
class Account:
    """A viewer account as the rest of the viewer sees it (never its hash)."""

    id: int
    name: str
    role: str
    #: the viewer language its user chose ("zh_CN", "en"; "" while none is chosen)
    language: str = ""

    @property
    def is_technician(self) -> bool:
        """Whether the account may use the technician's pages."""
        return self.role == Role.TECHNICIAN

    @property
    def is_clinician(self) -> bool:
        """Whether the account may record clinical feedback (a clinical judgement)."""
        return self.role == Role.CLINICIAN


def _account(row: sqlite3.Row) -> Account:
    return Account(id=row["id"], name=row["name"], role=row["role"], language=row["language"])


class Accounts:
    """The ``accounts`` table: add, change password, remove, list, authenticate."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        """Work on the box database ``conn``."""
        self.conn = conn

    def _row(self, name: str) -> sqlite3.Row | None:
        return self.conn.execute(
            "SELECT id, name, role, language, password_hash FROM accounts WHERE name = ?",
            (name,)).fetchone()

    def add(self, name: str, password: str, role: str, *, by: str | None = None,
            address: str = audit.CONSOLE_ADDRESS) -> Account:
        """Create an account; AccountError for a bad name or role, a weak password, a taken name.

        ``by`` (default: the console's unix user) from ``address`` goes into the audit trail.
        """
        name = normalise_name(name)
        if role not in ROLES:
            raise AccountError(gettext("unknown role %(role)s: use one of %(roles)s",
                                       role=repr(role), roles=", ".join(ROLES)))
        problem = password_problem(password, name)
        if problem:
            raise AccountError(problem)
        if self._row(name) is not None:
            raise AccountError(gettext("account %(name)s already exists", name=name))
        password_hash = hash_password(password)
        now = time.time()
        try:
            with db.transaction(self.conn):
                cursor = self.conn.execute(
                    "INSERT INTO accounts(name, role, password_hash, created_at, changed_at)"
                    " VALUES (?, ?, ?, ?, ?)", (name, role, password_hash, now, now))
                _audit(self.conn, "account_created", name, by, address, f"role {role}")
        except sqlite3.IntegrityError as exc:  # added meanwhile by another process
            raise AccountError(gettext("account %(name)s already exists", name=name)) from exc
        return Account(id=int(cursor.lastrowid), name=name, role=role)

    def set_password(self, name: str, password: str, *, by: str | None = None,
                     address: str = audit.CONSOLE_ADDRESS) -> None:
        """Change an account's password and end its sessions; AccountError unknown or weak.

        ``by`` (default: the console's unix user) from ``address`` goes into the audit trail.
        """
        name = normalise_name(name)
        if self._row(name) is None:
            raise AccountError(gettext("no account %(name)s", name=name))
        problem = password_problem(password, name)
        if problem:
            raise AccountError(problem)
        password_hash = hash_password(password)
        with db.transaction(self.conn):
            row = self._row(name)
            if row is None:
                raise AccountError(gettext("no account %(name)s", name=name))
            self.conn.execute(
                "UPDATE accounts SET password_hash = ?, changed_at = ? WHERE id = ?",
                (password_hash, time.time(), row["id"]))
            ended = self.conn.execute("DELETE FROM web_sessions WHERE account_id = ?",
                                      (row["id"],)).rowcount
            _audit(self.conn, "password_changed", name, by, address,
                   f"{ended} session(s) ended")

    def remove(self, name: str, *, by: str | None = None,
               address: str = audit.CONSOLE_ADDRESS) -> None:
        """Remove an account (its sessions go with it); AccountError when there is none.

        ``by`` (default: the console's unix user) from ``address`` goes into the audit trail.
        """
        name = normalise_name(name)
        with db.transaction(self.conn):
            row = self._row(name)
            if row is None:
                raise AccountError(gettext("no account %(name)s", name=name))
            self.conn.execute("DELETE FROM accounts WHERE id = ?", (row["id"],))
            _audit(self.conn, "account_removed", name, by, address, f"role {row['role']}")

    def all(self) -> list[Account]:
        """Every account, sorted by name."""
        rows = self.conn.execute(
            "SELECT id, name, role, language FROM accounts ORDER BY name").fetchall()
        return [_account(row) for row in rows]

    def count(self) -> int:
        """How many accounts there are."""
        return int(self.conn.execute("SELECT COUNT(*) FROM accounts").fetchone()[0])

    def known_name(self, name: str) -> str:
        """The account ``name`` names, or "" when it names none (a failed login's audit row
        then names nobody: it may be a password typed in the wrong field)."""
        try:
            normal = normalise_name(name)
        except AccountError:
            return ""
        return normal if self._row(normal) is not None else ""

    def get(self, account_id: int) -> Account | None:
        """The account with this id, or None."""
        row = self.conn.execute(
            "SELECT id, name, role, language FROM accounts WHERE id = ?",
            (account_id,)).fetchone()
        return None if row is None else _account(row)

    def set_language(self, account_id: int, language: str) -> None:
        """Keep the viewer language the account's user chose (``LANGUAGES``, or "" for none).

        A preference, not a security setting: no audit row.
        """
        if language and language not in LANGUAGES:
            raise AccountError(f"unknown language {language!r}: use one of "
                               f"{', '.join(LANGUAGES)}")
        with db.transaction(self.conn):
            self.conn.execute("UPDATE accounts SET language = ? WHERE id = ?",
                              (language, account_id))

    def authenticate(self, name: str, password: str) -> Account | None:
        """The account when name and password match, else None (in about the same time)."""
        try:
            row = self._row(normalise_name(name))
        except AccountError:
            row = None
        if not check_password(None if row is None else row["password_hash"], password):
            return None
        return _account(row)


def _audit(conn: sqlite3.Connection, action: str, name: str, by: str | None, address: str,
           detail: str) -> None:
    audit.record(conn, action, account=audit.console_actor() if by is None else by,
                 address=address, target=f"account:{name}", detail=detail)


class LoginThrottle:
    """Growing delays after failed logins, per client address and per (account, address):
    the failures in ``login_failures``, the policy ``webcore.throttle.ThrottlePolicy``."""

    def __init__(self, conn: sqlite3.Connection, free_per_account: int, free_per_address: int,
                 max_delay: float, window_seconds: float = 3600.0) -> None:
        """Delays start after ``free_per_account`` / ``free_per_address`` failures."""
        self.conn = conn
        self.policy = ThrottlePolicy(free_per_account, free_per_address, float(max_delay),
                                     float(window_seconds))

    def _failures(self, where: str, params: tuple[str, ...],
                  now: float) -> tuple[int, float | None]:
        count, last = self.conn.execute(
            f"SELECT COUNT(*), MAX(at) FROM login_failures WHERE {where} AND at > ?",
            (*params, self.policy.since(now))).fetchone()
        return int(count), last

    def wait_seconds(self, name: str, address: str, now: float | None = None) -> float:
        """0.0 when a login try from ``address`` for ``name`` is allowed now, else the
        seconds until one is."""
        now = time.time() if now is None else now
        return self.policy.wait_seconds(
            self._failures("name = ? AND address = ?", (throttle_key(name), address), now),
            self._failures("address = ?", (address,), now), now)

    def record_failure(self, name: str, address: str, now: float | None = None) -> None:
        """Count a failed login for ``name`` from ``address``; forget failures out of the
        window."""
        now = time.time() if now is None else now
        with db.transaction(self.conn):
            self.conn.execute("INSERT INTO login_failures(at, name, address) VALUES (?, ?, ?)",
                              (now, throttle_key(name), address))
            self.conn.execute("DELETE FROM login_failures WHERE at <= ?",
                              (self.policy.since(now),))


class Sessions:
    """Server-side login sessions: the browser holds a random token, the database its SHA-256."""

    def __init__(self, conn: sqlite3.Connection, idle_seconds: float, max_seconds: float) -> None:
        """Sessions end after ``idle_seconds`` without a request or ``max_seconds`` in all."""
        self.conn = conn
        self.rule = SessionRule(float(idle_seconds), float(max_seconds))

    def start(self, account: Account, now: float | None = None) -> str:
        """Open a session for ``account`` and return its token (for the browser's cookie)."""
        now = time.time() if now is None else now
        token = new_token()
        self.conn.execute(
            "INSERT INTO web_sessions(token_hash, account_id, created_at, last_seen)"
            " VALUES (?, ?, ?, ?)", (token_hash(token), account.id, now, now))
        return token

    def resume(self, token: str, now: float | None = None) -> Account | None:
        """The session's account, or None when the token is unknown or the session expired."""
        if not token:
            return None
        now = time.time() if now is None else now
        hashed = token_hash(token)
        row = self.conn.execute(
            "SELECT s.created_at, s.last_seen, a.id, a.name, a.role, a.language"
            " FROM web_sessions s"
            " JOIN accounts a ON a.id = s.account_id WHERE s.token_hash = ?",
            (hashed,)).fetchone()
        if row is None:
            return None
        if self.rule.expired(row["created_at"], row["last_seen"], now):
            self.conn.execute("DELETE FROM web_sessions WHERE token_hash = ?", (hashed,))
            return None
        if self.rule.needs_touch(row["last_seen"], now):
            self.conn.execute("UPDATE web_sessions SET last_seen = ? WHERE token_hash = ?",
                              (now, hashed))
        return _account(row)

    def end(self, token: str) -> None:
        """End one session (logout)."""
        self.conn.execute("DELETE FROM web_sessions WHERE token_hash = ?", (token_hash(token),))

    def end_all(self, account_id: int) -> None:
        """End every session of an account."""
        self.conn.execute("DELETE FROM web_sessions WHERE account_id = ?", (account_id,))

    def purge(self, now: float | None = None) -> int:
        """Delete expired sessions; return how many."""
        now = time.time() if now is None else now
        cursor = self.conn.execute(
            "DELETE FROM web_sessions WHERE last_seen < ? OR created_at < ?",
            self.rule.cutoffs(now))
        return cursor.rowcount
