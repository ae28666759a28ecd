"""Reading the audit trail: filters (from, until, account, action), pages, and dates as people
write them.

Both readers use it: the technician's ``/audit`` page (newest first, a page at
a time) and ``clinibox audit`` (oldest first, all of it). Dates are the box's
local time: ``2025-03-14`` (a whole day: from its start, or until its end),
``2025-03-14T09:30``, ``today`` or ``yesterday``.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass
from typing import Any

from clinibox_common.errors import EXIT_USAGE, CliniboxError
from clinibox_common.i18n import N_, gettext

#: the words a date may also be given as
DAY_WORDS = ("today", "yesterday")


class BadDate(CliniboxError, ValueError):
    """A date that is neither YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS], today nor yesterday."""

    kind = N_("bad date")
    exit_status = EXIT_USAGE


@dataclass(frozen=True)
class AuditRow:
    """One row of the trail as readers see it."""

    id: int
    at: float
    account: str
    address: str
    action: str
    target: str
    detail: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-ready values, ``at`` as local ISO 8601 with its UTC offset."""
        return {"id": self.id,
                "at": dt.datetime.fromtimestamp(self.at).astimezone().isoformat(
                    timespec="seconds"),
                "account": self.account, "address": self.address, "action": self.action,
                "target": self.target, "detail": self.detail, "hash": self.hash}


@dataclass(frozen=True)
class AuditQuery:
    """Which rows to read: ``since`` <= at < ``until`` (epoch seconds), one account, one action
    (None: any)."""

    since: float | None = None
    until: float | None = None
    account: str | None = None
    action: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        """The SQL condition and its parameters."""
        parts, params = ["1"], []
        for sql, value in (("at >= ?", self.since), ("at < ?", self.until),
                           ("account = ?", self.account), ("action = ?", self.action)):
            if value is not None:
                parts.append(sql)
                params.append(value)
        return " AND ".join(parts), params


def parse_when(text: str, *, end: bool = False, today: dt.date | None = None) -> float:
    """Epoch seconds for a date typed by a person (local time).

    A day alone means its start, or with ``end`` the start of the next day (so
    ``--until 2025-03-14`` takes in the whole of that day). Raises BadDate.
    """
    value = text.strip().lower()
    today = dt.date.today() if today is None else today
    day: dt.date | None = None
    if value in DAY_WORDS:
        day = today if value == "today" else today - dt.timedelta(days=1)
    else:
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            try:
                moment = dt.datetime.fromisoformat(value.upper())
            except ValueError:
                raise BadDate(gettext("not a date: %(text)s (use YYYY-MM-DD, YYYY-MM-DDTHH:MM, "
                                      "today or yesterday)", text=repr(text))) from None
            return moment.astimezone().timestamp()
    if end:
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time.min).astimezone().timestamp()


def read_rows(conn: sqlite3.Connection, query: AuditQuery, *, newest_first: bool = True,
              limit: int | None = None, offset: int = 0) -> list[AuditRow]:
    """The rows ``query`` selects, newest (or oldest) first; ``limit`` None: all."""
    where, params = query.where()
    order = "DESC" if newest_first else "ASC"
    sql = (f"SELECT id, at, account, address, action, target, detail, hash FROM audit"
           f" WHERE {where} ORDER BY id {order}")
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        params = [*params, int(limit), int(offset)]
    return [AuditRow(int(r[0]), float(r[1]), *(str(v) for v in r[2:])) for r in
            conn.execute(sql, params)]


def count_rows(conn: sqlite3.Connection, query: AuditQuery) -> int:
    """How many rows ``query`` selects."""
    where, params = query.where()
    return int(conn.execute(f"SELECT COUNT(*) FROM audit WHERE {where}", params).fetchone()[0])

