"""Credentials kept out of every word the box writes: the one redaction of a URL and of a
message that may quote one (an FFmpeg error names the URL it could not open).

A URL's user stays, its password becomes ``***`` (``rtsp://admin:***@cam/stream``), and so
does the value of a secret query key (``?passphrase=***``). A message is redacted the same
way wherever it quotes a URL, and every secret the caller knows (a source's password, the
contents of its ``password_file``) is replaced wherever it stands, even outside a URL.
State files, pages, ``clinibox status``, log lines and events all go through here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

#: what a password becomes
MASK = "***"
#: query keys whose value is a secret (compared in lower case)
SECRET_KEYS = ("password", "passwd", "pass", "pwd", "passphrase", "secret", "token",
               "access_token", "api_key", "apikey", "key", "auth", "pkey")
#: ``scheme://user:password@``: the password runs to the last ``@`` before the host
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@/\s'\"]*):"
                       r"(?P<password>[^/\s'\"]*)@")
_QUERY = re.compile(r"(?P<head>[?&;](?:" + "|".join(SECRET_KEYS) + r")=)(?P<value>[^&;#\s'\"]*)",
                    re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with its password and secret query values replaced by ``***``."""
    return redact_text(url)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL's password and secret query value, and every one of
    ``secrets`` wherever it stands, replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _QUERY.sub(lambda m: f"{m['head']}{MASK}", text)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def redact_detail(detail: Any, secrets: Iterable[str] = ()) -> Any:
    """A state's detail (a dict of words and numbers) with every string redacted."""
    if isinstance(detail, dict):
        return {key: redact_detail(value, secrets) for key, value in detail.items()}
    if isinstance(detail, list):
        return [redact_detail(value, secrets) for value in detail]
    return redact_text(detail, secrets) if isinstance(detail, str) else detail


def url_secrets(url: str) -> list[str]:
    """The secrets a URL carries (its password and secret query values), as written and
    percent-decoded: what ``redact_text`` must also find outside the URL."""
    try:
        parts = urlsplit(url)
        password = parts.password
        query = parse_qsl(parts.query, keep_blank_values=False)
    except ValueError:
        return []
    found = [password] if password else []
    found += [value for key, value in query if key.lower() in SECRET_KEYS]
    match = _USERINFO.search(url)
    if match:
        found.append(match["password"])
    return [s for s in {*found, *(unquote(s) for s in found)} if s]


class RedactingFilter(logging.Filter):
    """A log handler's filter: the record's message and traceback redacted (its URLs and
    the ``secrets`` given), so that no log line carries a password."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; every record passes."""
        record.msg = redact_text(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info:
            record.exc_text = redact_text(self._formatter.formatException(record.exc_info),
                                          self.secrets)
            record.exc_info = None
        return True


def redact_logs(secrets: Iterable[str] = ()) -> RedactingFilter:
    """Redact every record the root logger's handlers write (this process's log)."""
    found = RedactingFilter(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(found)
    return found
