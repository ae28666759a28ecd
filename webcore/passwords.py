"""Account names and passwords: the rules, the hash, the check (no database).

* Passwords are stored only as scrypt hashes (werkzeug's ``generate_password_hash``
  with ``method="scrypt"``): a memory-hard KDF with a per-hash random salt, so a
  stolen database does not give the passwords away cheaply. Passwords over
  ``MAX_PASSWORD_LENGTH`` characters are refused before hashing, so nobody can make
  the server hash megabytes per request.
* ``check_password`` runs one hash check whatever happens: for an unknown or
  malformed name (no stored hash) it checks against a dummy hash (made once,
  lazily), so the response time does not tell which account names exist.

The box's accounts (``firmware_app.storage.accounts``) and the hospital console's
keep their own tables and use these.
"""

from __future__ import annotations

import functools
import re
import secrets

from werkzeug.security import check_password_hash, generate_password_hash

from clinibox_common.errors import CliniboxError
from clinibox_common.i18n import N_, gettext

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256
HASH_METHOD = "scrypt"

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")

#: compared case-insensitively; entries under MIN_PASSWORD_LENGTH would be refused anyway
COMMON_PASSWORDS = frozenset({
    "password123", "password1234", "passw0rd123", "1234567890", "12345678910",
    "0987654321", "1q2w3e4r5t", "1qaz2wsx3edc", "qwertyuiop", "qwerty1234",
    "qwerty123456", "asdfghjkl1", "letmein123", "welcome123", "changeme123",
    "iloveyou123", "abc1234567", "abcdefghij", "administrator", "admin12345",
    "clinibox123", "clinibox1234",
})


class AccountError(CliniboxError, ValueError):
    """A refused account operation, with a message for the technician."""

    kind = N_("refused")


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
    if lowered in COMMON_PASSWORDS:
        return gettext("the password is one of the most common passwords")
    return None


def hash_password(password: str) -> str:
    """The scrypt hash (with its random salt) to store for ``password``."""
    return generate_password_hash(password, method=HASH_METHOD)


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password, checked for unknown names so timing matches."""
    return hash_password(secrets.token_urlsafe(16))


def check_password(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash``; None (no such account) checks a dummy hash
    and answers False, in about the same time. Over-long passwords are refused unhashed."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    if stored_hash is None:
        check_password_hash(_dummy_hash(), password)
        return False
    return check_password_hash(stored_hash, password)
