"""Checks several sections share: AE titles, names, the ``[[section.key]]`` tables."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from clinibox_common.i18n import gettext
from clinibox_common.settings_loader import ConfigError, coerce, refused, suggest, unknown_key

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII, no backslash
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")


def check_ae_title(value: Any) -> str | None:
    """1-16 printable ASCII characters, no backslash (a DICOM AE title)."""
    if not _AE_TITLE.match(value) or not value.strip():
        return gettext("must be 1-16 printable ASCII characters without backslash, got "
                       "%(value)s", value=repr(value))
    return None


def check_optional_ae_title(value: Any) -> str | None:
    """empty, or an AE title (1-16 printable ASCII characters, no backslash)."""
    return check_ae_title(value) if value else None


def check_optional_host(value: Any) -> str | None:
    """empty (none configured), or a host name or address (no spaces)."""
    if value and (not value.strip() or any(c.isspace() for c in value)):
        return gettext("must be a host name or address, got %(value)s", value=repr(value))
    return None


def check_absolute_or_empty(value: Any) -> str | None:
    """'' or an absolute path."""
    if value and not value.startswith("/"):
        return gettext("must be an absolute path or empty, got %(value)s", value=repr(value))
    return None


def is_plain_http_url(value: str) -> bool:
    """An http(s):// URL with a host, a port of 1-65535 if any, an ASCII path (non-ASCII
    percent-encoded) and no user, password, query, fragment, space or control character."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return False
    return not (port == 0 or parts.scheme not in ("http", "https") or not parts.hostname
                or parts.username or parts.password is not None or parts.query
                or parts.fragment or not value.isascii()
                or any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in value))


def check_name(value: Any) -> str | None:
    """1-32 letters, digits, dots, dashes or underscores, a letter or digit first."""
    if not _NAME.match(value):
        return gettext("must be 1-32 letters, digits, dots, dashes or underscores (a letter or "
                       "digit first), got %(value)s", value=repr(value))
    return None


def load_tables(raw: Any, cls: type, where: str,
                required: tuple[str, str] | Callable[[dict], tuple[str, str]]) -> list:
    """Build and check the ``[[<where>]]`` tables as ``cls`` objects (unique names);
    ConfigError naming the key. ``required``: the two keys each table needs, or what says
    them for a table (they may depend on another key)."""
    if not isinstance(raw, list) or not all(isinstance(table, dict) for table in raw):
        section, key = where.split(".")
        raise ConfigError(gettext("[%(section)s] %(key)s: must be [[%(where)s]] tables",
                                  section=section, key=key, where=where))
    specs = {spec.name: spec for spec in dataclasses.fields(cls)}
    built = []
    for number, table in enumerate(raw, start=1):
        here = f"{where} {number}"
        needed = required(table) if callable(required) else required
        if any(name not in table for name in needed):
            raise ConfigError(gettext("[%(where)s]: needs at least %(first)s and %(second)s",
                                      where=here, first=needed[0], second=needed[1]))
        item = cls()
        for key, value in table.items():
            if key not in specs:
                raise ConfigError(unknown_key(here, key, suggest(key, list(specs))))
            value = coerce(here, key, str(specs[key].type), value)
            check = specs[key].metadata.get("check")
            problem = check(value) if check else None
            if problem:
                raise ConfigError(refused(f"[{here}] {key}", problem))
            setattr(item, key, value)
        built.append(item)
    names = [item.name for item in built]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(gettext("[%(where)s] name: %(name)s is used more than once",
                                      where=where, name=repr(name)))
    return built


def check_cross_field(config: Any) -> None:
    """Refuse a configuration (the box's ``Config``) whose keys of different sections
    contradict or need one another; checked once every section is read."""
    dicom = config.dicom
    if dicom.tls_enabled and not (dicom.tls_cert and dicom.tls_key):
        raise ConfigError(gettext("[dicom] tls_cert: tls_enabled needs tls_cert and tls_key"))
    mqtt = config.mqtt
    if mqtt.host:
        needed = {"[mqtt] ca_file": mqtt.ca_file, "[mqtt] cert_file": mqtt.cert_file,
                  "[mqtt] key_file": mqtt.key_file,
                  "[telemetry] hospital_key": config.telemetry.hospital_key}
        for name, value in needed.items():
            if not value:
                raise ConfigError(gettext("%(name)s: needed when [mqtt] host is set",
                                          name=name))
    if bool(config.web.tls_cert) != bool(config.web.tls_key):
        raise ConfigError(gettext("[web] tls_cert: tls_cert and tls_key go together"))
    for section, retried in (("[pacs]", config.pacs), ("[telemetry]", config.telemetry)):
        if retried.retry_min_seconds > retried.retry_max_seconds:
            raise ConfigError(gettext("%(section)s retry_min_seconds: larger than "
                                      "retry_max_seconds", section=section))
    if config.limits.min_rows > min(config.limits.max_rows, config.limits.max_columns):
        raise ConfigError(gettext("[limits] min_rows: larger than max_rows or max_columns"))
