"""The viewer's local accounts, failed-login throttle and server-side sessions.

Design:

* Passwords are stored only as scrypt hashes (werkzeug's ``generate_password_hash``
  with ``method="scrypt"``): a memory-hard KDF with a per-hash random salt, so a
  stolen database does not give the passwords away cheaply. Passwords over 256
  characters are refused before hashing, so nobody can make the box hash
  megabytes per request.
* ``authenticate`` runs one hash check whatever happens: for an unknown or
  malformed name it checks against a dummy hash (made once, lazily), so the
  response time does not tell which account names exist.
* ``LoginThrottle`` counts failed logins per client address and per (account
  name, address) and answers with growing delays, never a lock: an attacker
  elsewhere on the LAN cannot keep a user out of the box from the user's own
  computer. Successful logins do not clear failures (else an attacker could
  reset its address's count by logging into an account of its own).
* ``Sessions`` are server-side: the browser holds a random token, the database
  only its SHA-256. Logout, a password change, removing an account and expiry
  (idle and absolute) are therefore real: the row is gone and the token is
  worthless, and a copy of the database does not hold usable tokens.
* Every change (add, new password, remove) is an audit row (``storage.audit``) in the
  change's own transaction, naming who made it: by default the unix user running the
  console command (``cli:<user>``), since accounts are managed on the box's console.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass

from werkzeug.security import check_password_hash, generate_password_hash

from firmware_app.contracts.statuses import Role
from firmware_app.errors import CliniboxError
from firmware_app.i18n import LANGUAGES, N_, gettext
from firmware_app.storage import audit, db

#: the roles' words (plain strings: command-line choices and messages show them)
ROLES = tuple(role.value for role in Role)
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
_HASH_METHOD = "scrypt"
_TOUCH_SECONDS = 15.0  # last_seen is written at most this often per session
_THROTTLE_KEY_LENGTH = 256  # names are stored in login_failures cut to this length

# Compared case-insensitively. Entries under MIN_PASSWORD_LENGTH would be refused anyway.
_COMMON_PASSWORDS = frozenset({
    "password123", "password1234", "passw0rd123", "1234567890", "12345678910",
    "0987654321", "1q2w3e4r5t", "1qaz2wsx3edc", "qwertyuiop", "qwerty1234",
    "qwerty123456", "asdfghjkl1", "letmein123", "welcome123", "changeme123",
    "iloveyou123", "abc1234567", "abcdefghij", "administrator", "admin12345",
    "clinibox123", "clinibox1234",
})


class AccountError(CliniboxError, ValueError):
    """A refused account operation, with a message for the technician."""

    kind = N_("refused")


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


def normalise_name(name: str) -> str:
    """Strip and lower-case an account name; AccountError when it breaks the naming rule."""
    normal = name.strip().lower()
    if not _NAME.fullmatch(normal):
        raise AccountError(gettext(
            "bad account name %(name)s: use 1 to 32 characters of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit", name=repr(name)))
    return normal


def password_problem(password: str, name: str) -> str | None:
    """Why ``password`` is not acceptable for account ``name``, or None when it is."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return gettext("the password is longer than %(n)s characters", n=MAX_PASSWORD_LENGTH)
    if len(password) < MIN_PASSWORD_LENGTH:
        return gettext("the password is shorter than %(n)s characters", n=MIN_PASSWORD_LENGTH)
    lowered = password.lower()
    if len(set(password)) == 1:
        return gettext("the password is a single character repeated")
    account = name.strip().lower()
    if account and account in lowered:
        return gettext("the password contains the account name")
    if lowered in _COMMON_PASSWORDS:
        return gettext("the password is one of the most common passwords")
    return None


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password, checked for unknown names so timing matches."""
    return generate_password_hash(secrets.token_urlsafe(16), method=_HASH_METHOD)


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
        password_hash = generate_password_hash(password, method=_HASH_METHOD)
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
        password_hash = generate_password_hash(password, method=_HASH_METHOD)
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
        if len(password) > MAX_PASSWORD_LENGTH:
            return None
        try:
            row = self._row(normalise_name(name))
        except AccountError:
            row = None
        if row is None:
            check_password_hash(_dummy_hash(), password)
            return None
        if not check_password_hash(row["password_hash"], password):
            return None
        return _account(row)


def _audit(conn: sqlite3.Connection, action: str, name: str, by: str | None, address: str,
           detail: str) -> None:
    audit.record(conn, action, account=audit.console_actor() if by is None else by,
                 address=address, target=f"account:{name}", detail=detail)


def _throttle_key(name: str) -> str:
    return name.strip().lower()[:_THROTTLE_KEY_LENGTH]


class LoginThrottle:
    """Growing delays after failed logins, per client address and per (account, address).

    Anti-automation without lockout (OWASP ASVS 4.0 2.2.1): after ``free_per_account``
    failures for one account name from one address within ``window_seconds``, every
    further try from there must wait 2, 4, 8 … seconds after the last failure (at most
    ``max_delay``); one address gets ``free_per_address`` failures over all names before
    its own delays start. Nothing is counted per account alone, so an attacker elsewhere
    on the clinic LAN slows only itself: the real user's right password from their own
    computer always goes through. Tries refused while waiting are not counted, so the
    delays bound the guessing rate (about ``window / max_delay`` guesses an hour once
    the cap is reached).
    """

    def __init__(self, conn: sqlite3.Connection, free_per_account: int, free_per_address: int,
                 max_delay: float, window_seconds: float = 3600.0) -> None:
        """Delays start after ``free_per_account`` / ``free_per_address`` failures."""
        if min(free_per_account, free_per_address) < 1 or max_delay <= 0 or window_seconds <= 0:
            raise ValueError("the login throttle needs free failures >= 1 and positive times")
        self.conn = conn
        self.free_per_account = free_per_account
        self.free_per_address = free_per_address
        self.max_delay = float(max_delay)
        self.window = float(window_seconds)

    def _delay(self, where: str, params: tuple[str, ...], free: int, now: float) -> float:
        count, last = self.conn.execute(
            f"SELECT COUNT(*), MAX(at) FROM login_failures WHERE {where} AND at > ?",
            (*params, now - self.window)).fetchone()
        if count < free:
            return 0.0
        delay = min(2.0 ** (count - free + 1), self.max_delay)
        return max(last + delay - now, 0.0)

    def wait_seconds(self, name: str, address: str, now: float | None = None) -> float:
        """0.0 when a login try from ``address`` for ``name`` is allowed now, else the
        seconds until one is."""
        now = time.time() if now is None else now
        return max(self._delay("name = ? AND address = ?", (_throttle_key(name), address),
                               self.free_per_account, now),
                   self._delay("address = ?", (address,), self.free_per_address, now))

    def record_failure(self, name: str, address: str, now: float | None = None) -> None:
        """Count a failed login for ``name`` from ``address``; forget failures out of the
        window."""
        now = time.time() if now is None else now
        with db.transaction(self.conn):
            self.conn.execute("INSERT INTO login_failures(at, name, address) VALUES (?, ?, ?)",
                              (now, _throttle_key(name), address))
            self.conn.execute("DELETE FROM login_failures WHERE at <= ?", (now - self.window,))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Sessions:
    """Server-side login sessions: the browser holds a random token, the database its SHA-256."""

    def __init__(self, conn: sqlite3.Connection, idle_seconds: float, max_seconds: float) -> None:
        """Sessions end after ``idle_seconds`` without a request or ``max_seconds`` in all."""
        self.conn = conn
        self.idle = float(idle_seconds)
        self.max = float(max_seconds)

    def start(self, account: Account, now: float | None = None) -> str:
        """Open a session for ``account`` and return its token (for the browser's cookie)."""
        now = time.time() if now is None else now
        token = secrets.token_urlsafe(32)
        self.conn.execute(
            "INSERT INTO web_sessions(token_hash, account_id, created_at, last_seen)"
            " VALUES (?, ?, ?, ?)", (_token_hash(token), account.id, now, now))
        return token

    def resume(self, token: str, now: float | None = None) -> Account | None:
        """The session's account, or None when the token is unknown or the session expired."""
        if not token:
            return None
        now = time.time() if now is None else now
        token_hash = _token_hash(token)
        row = self.conn.execute(
            "SELECT s.created_at, s.last_seen, a.id, a.name, a.role, a.language"
            " FROM web_sessions s"
            " JOIN accounts a ON a.id = s.account_id WHERE s.token_hash = ?",
            (token_hash,)).fetchone()
        if row is None:
            return None
        if now - row["last_seen"] > self.idle or now - row["created_at"] > self.max:
            self.conn.execute("DELETE FROM web_sessions WHERE token_hash = ?", (token_hash,))
            return None
        if now - row["last_seen"] > _TOUCH_SECONDS:
            self.conn.execute("UPDATE web_sessions SET last_seen = ? WHERE token_hash = ?",
                              (now, token_hash))
        return _account(row)

    def end(self, token: str) -> None:
        """End one session (logout)."""
        self.conn.execute("DELETE FROM web_sessions WHERE token_hash = ?", (_token_hash(token),))

    def end_all(self, account_id: int) -> None:
        """End every session of an account."""
        self.conn.execute("DELETE FROM web_sessions WHERE account_id = ?", (account_id,))

    def purge(self, now: float | None = None) -> int:
        """Delete expired sessions; return how many."""
        now = time.time() if now is None else now
        cursor = self.conn.execute(
            "DELETE FROM web_sessions WHERE last_seen < ? OR created_at < ?",
            (now - self.idle, now - self.max))
        return cursor.rowcount
