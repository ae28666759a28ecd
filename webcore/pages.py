"""The page parts every clinibox web app draws the same way, as Jinja macros.

``webcore/templates/webcore/page_parts.html`` holds the header's language switch and
logout form, the flashed messages, the login card, the error card and the line saying in
which time zone times are shown. ``install(app)`` puts webcore's template folder behind
the app's own (a ``ChoiceLoader``: the app's templates first), so an app's ``base.html``,
``login.html`` and ``error.html`` import the macros::

    {% from "webcore/page_parts.html" import language_switch, logout with context %}

and gives templates ``time_zone`` (``server_time_zone()``: the zone name and UTC offset
the times are shown in, the server's local time).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import time
from pathlib import Path
from typing import Any

from flask import Flask
from jinja2 import BaseLoader, ChoiceLoader, FileSystemLoader

#: webcore's template folder (its templates are named ``webcore/...``)
TEMPLATES = Path(__file__).resolve().parent / "templates"


@functools.lru_cache(maxsize=1)
def _zone_name() -> str:
    """The server's time zone as an IANA name when it can be read (``TZ``, /etc/timezone,
    the /etc/localtime link), else its abbreviation."""
    configured = os.environ.get("TZ", "").lstrip(":")
    if configured:
        return configured.split("zoneinfo/", 1)[-1]
    try:
        named = Path("/etc/timezone").read_text(encoding="utf-8").strip()
    except OSError:
        named = ""
    if named:
        return named
    try:
        target = os.readlink("/etc/localtime")
    except OSError:
        target = ""
    if "zoneinfo/" in target:
        return target.split("zoneinfo/", 1)[1]
    return time.tzname[0]


def server_time_zone(now: dt.datetime | None = None) -> tuple[str, str]:
    """(zone name, UTC offset like ``+08:00``) of the server's local time, which the pages'
    times use (``clinibox_common.i18n.formats``), at ``now`` (default: now)."""
    local = (now or dt.datetime.now()).astimezone()
    offset = local.utcoffset() or dt.timedelta()
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return _zone_name(), f"{sign}{hours:02d}:{rest:02d}"


def _template_values() -> dict[str, Any]:
    return {"time_zone": server_time_zone()}


def install(app: Flask) -> None:
    """Let ``app``'s templates import webcore's (behind the app's own) and give them
    ``time_zone``."""
    own: BaseLoader | None = app.jinja_loader
    shared = FileSystemLoader(str(TEMPLATES))
    app.jinja_loader = ChoiceLoader([own, shared]) if own is not None else shared
    app.context_processor(_template_values)
