"""The console's own accounts, sessions, failed logins and audit trail, in the hospital database.

The rules are the box viewer's (``webcore``): the same name and password rules and
scrypt hashes (``webcore.passwords``), the same growing delays after failed logins
(``webcore.throttle``) and the same idle and absolute session expiry
(``webcore.sessions``); only the tables differ (``console_*``, central schema v4) and
the SQL runs on SQLite and PostgreSQL alike (``central.sql``, ``?`` placeholders).

Two roles (:class:`ConsoleRole`): a ``radiologist`` reviews alerts; an ``admin``
(the hospital's IT) reads alerts, the fleet, drift, the audit trail and the users,
and reviews nothing. Every login, refused login, logout and account change is a
``console_audit`` row (:func:`audit`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from central import reviews
from central.sql import Database
from clinibox_common import i18n
from clinibox_common.contracts.words import Word
from webcore.passwords import (
    AccountError,
    check_password,
    hash_password,
    normalise_name,
    password_problem,
)
from webcore.sessions import SessionRule, new_token, token_hash
from webcore.throttle import ThrottlePolicy, throttle_key

__all__ = ["AccountError", "ConsoleAccount", "ConsoleAccounts", "ConsoleRole",
           "ConsoleSessions", "ConsoleThrottle", "audit"]


class ConsoleRole(Word):
    """What a console account may do."""

    RADIOLOGIST = "radiologist"
    """Reads and reviews alerts (gives the verdict that goes back to the box)."""
    ADMIN = "admin"
    """The hospital's IT: alerts (read only), fleet, drift, audit trail and users."""


ROLES = tuple(role.value for role in ConsoleRole)


@dataclass(frozen=True)
class ConsoleAccount:
    """A console account as the pages see it (never its hash)."""

    id: int
    name: str
    role: str
    #: the language its user chose ("zh_CN", "en"; "" while none is chosen)
    language: str = ""
    created_at: float = 0.0

    @property
    def is_radiologist(self) -> bool:
        """Whether the account may review alerts."""
        return self.role == ConsoleRole.RADIOLOGIST

    @property
    def is_admin(self) -> bool:
        """Whether the account may see the fleet, drift, audit and users pages."""
        return self.role == ConsoleRole.ADMIN


#: Actions written at most once per address in this many seconds (as the box's viewer
#: does: ``web.audit_trail.THROTTLED_COALESCE``): a client hammering the login page while
#: throttled would otherwise add a row for every try.
COALESCE_SECONDS = {"login_throttled": 60.0}


def audit(db: Database, account: str, address: str, action: str, target: str = "",
          detail: str = "", now: float | None = None) -> None:
    """One ``console_audit`` row (``central.reviews.audit``): who did what, from where —
    none when ``action`` is one of :data:`COALESCE_SECONDS` and the same address has a row
    of it within that many seconds."""
    now = time.time() if now is None else now
    window = COALESCE_SECONDS.get(action)
    with db.transaction(write=True) as tx:
        if window is not None and tx.execute(
                "SELECT 1 FROM console_audit WHERE at > ? AND action = ? AND address = ?"
                " LIMIT 1", (now - window, action, str(address)[:200])).fetchone():
            return
        reviews.audit(tx, account, address, action, target, detail, now)


_COLUMNS = "id, name, role, language, created_at"


def _account(row: Any) -> ConsoleAccount:
    return ConsoleAccount(id=int(row[0]), name=str(row[1]), role=str(row[2]),
                          language=str(row[3] or ""), created_at=float(row[4]))


class ConsoleAccounts:
    """The ``console_accounts`` table: add, change password, remove, list, authenticate."""

    def __init__(self, db: Database) -> None:
        """Work on the hospital database ``db``."""
        self.db = db

    def add(self, name: str, password: str, role: str, *, by: str = "cli",
            address: str = "") -> ConsoleAccount:
        """Create an account; AccountError for a bad name, role, password or a taken name."""
        normal = normalise_name(name)
        if role not in ROLES:
            raise AccountError(i18n.gettext("unknown role %(role)s: use %(roles)s",
                                            role=repr(role), roles=" or ".join(ROLES)))
        problem = password_problem(password, normal)
        if problem:
            raise AccountError(problem)
        now = time.time()
        with self.db.transaction(write=True) as tx:
            if tx.execute("SELECT 1 FROM console_accounts WHERE name = ?", (normal,)).fetchone():
                raise AccountError(i18n.gettext("an account named %(name)s already exists",
                                                name=normal))
            tx.execute("INSERT INTO console_accounts (name, role, password_hash, language,"
                       " created_at, changed_at) VALUES (?, ?, ?, '', ?, ?)",
                       (normal, role, hash_password(password), now, now))
            reviews.audit(tx, by, address, "account_added", f"account:{normal}", role, now)
            row = tx.execute(f"SELECT {_COLUMNS} FROM console_accounts WHERE name = ?",
                             (normal,)).fetchone()
        return _account(row)

    def set_password(self, name: str, password: str, *, by: str = "cli",
                     address: str = "") -> None:
        """Change an account's password and end its sessions; AccountError when refused."""
        normal = normalise_name(name)
        problem = password_problem(password, normal)
        if problem:
            raise AccountError(problem)
        with self.db.transaction(write=True) as tx:
            row = tx.execute("SELECT id FROM console_accounts WHERE name = ?",
                             (normal,)).fetchone()
            if row is None:
                raise AccountError(i18n.gettext("no account named %(name)s", name=normal))
            tx.execute("UPDATE console_accounts SET password_hash = ?, changed_at = ?"
                       " WHERE id = ?", (hash_password(password), time.time(), row[0]))
            tx.execute("DELETE FROM console_sessions WHERE account_id = ?", (row[0],))
            reviews.audit(tx, by, address, "password_changed", f"account:{normal}")

    def remove(self, name: str, *, by: str = "cli", address: str = "") -> None:
        """Delete an account and its sessions; AccountError when there is none."""
        normal = normalise_name(name)
        with self.db.transaction(write=True) as tx:
            row = tx.execute("SELECT id FROM console_accounts WHERE name = ?",
                             (normal,)).fetchone()
            if row is None:
                raise AccountError(i18n.gettext("no account named %(name)s", name=normal))
            tx.execute("DELETE FROM console_sessions WHERE account_id = ?", (row[0],))
            tx.execute("DELETE FROM console_accounts WHERE id = ?", (row[0],))
            reviews.audit(tx, by, address, "account_removed", f"account:{normal}")

    def all(self) -> list[ConsoleAccount]:
        """Every account, by name."""
        with self.db.transaction(write=False) as tx:
            rows = tx.execute(f"SELECT {_COLUMNS} FROM console_accounts ORDER BY name"
                              ).fetchall()
        return [_account(row) for row in rows]

    def count(self) -> int:
        """How many accounts exist."""
        with self.db.transaction(write=False) as tx:
            return int(tx.execute("SELECT COUNT(*) FROM console_accounts").fetchone()[0])

    def known(self, name: str) -> str:
        """The account ``name`` names (normalised), or "" when it names none."""
        try:
            normal = normalise_name(name)
        except AccountError:
            return ""
        with self.db.transaction(write=False) as tx:
            row = tx.execute("SELECT 1 FROM console_accounts WHERE name = ?",
                             (normal,)).fetchone()
        return normal if row else ""

    def set_language(self, account_id: int, language: str) -> None:
        """Keep the language the account's user chose."""
        if language not in i18n.LANGUAGES:
            raise AccountError(f"unknown language {language!r}")
        with self.db.transaction(write=True) as tx:
            tx.execute("UPDATE console_accounts SET language = ? WHERE id = ?",
                       (language, account_id))

    def authenticate(self, name: str, password: str) -> ConsoleAccount | None:
        """The account when ``password`` is its password, else None (same time either way)."""
        try:
            normal = normalise_name(name)
        except AccountError:
            normal = ""
        row = None
        if normal:
            with self.db.transaction(write=False) as tx:
                row = tx.execute(f"SELECT {_COLUMNS}, password_hash FROM console_accounts"
                                 " WHERE name = ?", (normal,)).fetchone()
        if not check_password(row[5] if row else None, password) or row is None:
            return None
        return _account(row)


class ConsoleThrottle:
    """Growing delays after failed logins (``webcore.throttle``) over ``console_login_failures``."""

    def __init__(self, db: Database, policy: ThrottlePolicy) -> None:
        """Count failures in ``db`` and wait as ``policy`` says."""
        self.db = db
        self.policy = policy

    def wait_seconds(self, name: str, address: str, now: float | None = None) -> float:
        """0.0 when a login try is allowed now, else the seconds until one is."""
        now = time.time() if now is None else now
        since = self.policy.since(now)
        with self.db.transaction(write=False) as tx:
            pair = tx.execute("SELECT COUNT(*), MAX(at) FROM console_login_failures"
                              " WHERE name = ? AND address = ? AND at > ?",
                              (throttle_key(name), address, since)).fetchone()
            place = tx.execute("SELECT COUNT(*), MAX(at) FROM console_login_failures"
                               " WHERE address = ? AND at > ?", (address, since)).fetchone()
        return self.policy.wait_seconds((int(pair[0]), pair[1]), (int(place[0]), place[1]), now)

    def record_failure(self, name: str, address: str, now: float | None = None) -> None:
        """Count a failed login; forget failures out of the window."""
        now = time.time() if now is None else now
        with self.db.transaction(write=True) as tx:
            tx.execute("INSERT INTO console_login_failures (at, name, address) VALUES (?, ?, ?)",
                       (now, throttle_key(name), address))
            tx.execute("DELETE FROM console_login_failures WHERE at <= ?",
                       (self.policy.since(now),))


class ConsoleSessions:
    """Server-side sessions: the browser holds a random token, ``console_sessions`` its hash."""

    def __init__(self, db: Database, rule: SessionRule) -> None:
        """Sessions in ``db`` expire as ``rule`` says (idle and absolute)."""
        self.db = db
        self.rule = rule

    def start(self, account: ConsoleAccount, now: float | None = None) -> str:
        """Open a session for ``account``; return its token (for the cookie)."""
        now = time.time() if now is None else now
        token = new_token()
        with self.db.transaction(write=True) as tx:
            tx.execute("INSERT INTO console_sessions (token_hash, account_id, created_at,"
                       " last_seen) VALUES (?, ?, ?, ?)", (token_hash(token), account.id, now, now))
        return token

    def resume(self, token: str, now: float | None = None) -> ConsoleAccount | None:
        """The session's account, or None when unknown or expired (then it is deleted)."""
        if not token:
            return None
        now = time.time() if now is None else now
        hashed = token_hash(token)
        with self.db.transaction(write=False) as tx:
            row = tx.execute(
                "SELECT s.created_at, s.last_seen, a.id, a.name, a.role, a.language,"
                " a.created_at FROM console_sessions s JOIN console_accounts a"
                " ON a.id = s.account_id WHERE s.token_hash = ?", (hashed,)).fetchone()
        if row is None:
            return None
        created, seen = float(row[0]), float(row[1])
        if self.rule.expired(created, seen, now):
            self.end(token)
            return None
        if self.rule.needs_touch(seen, now):
            with self.db.transaction(write=True) as tx:
                tx.execute("UPDATE console_sessions SET last_seen = ? WHERE token_hash = ?",
                           (now, hashed))
        return _account(row[2:])

    def end(self, token: str) -> None:
        """End one session (logout)."""
        with self.db.transaction(write=True) as tx:
            tx.execute("DELETE FROM console_sessions WHERE token_hash = ?", (token_hash(token),))
