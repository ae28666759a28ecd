"""The technician's audit page: who did what on the box, from where, and whether the record is
intact.

``GET /audit`` lists the audit trail newest first, a page at a time, filtered by
date (from, until: whole days, the box's local time), account and action, and
says whether the hash chain is intact ("intact" or "broken at row N: why",
``storage.audit_chain``). Technicians only (403 for clinicians); reading the
trail is itself recorded (``audit_viewed``, once per five minutes and address).
"""

from __future__ import annotations

import math
from typing import Any

from flask import Blueprint, abort, current_app, render_template, request

from clinibox_common.i18n import gettext
from firmware_app.storage.accounts import Accounts
from firmware_app.storage.audit import ACTIONS
from firmware_app.storage.audit_chain import verify
from firmware_app.storage.audit_query import AuditQuery, BadDate, count_rows, parse_when, read_rows
from web import audit_trail, audit_words
from web.security import database, technician_only

blueprint = Blueprint("audit", __name__)

#: the longest account name the filter takes
MAX_ACCOUNT = 64


def _filters() -> tuple[dict[str, Any], AuditQuery]:
    """The filters asked for (as typed, for the form) and the query they make; 400 when bad."""
    args = {name: request.args.get(name, "").strip()
            for name in ("since", "until", "account", "action")}
    if args["action"] and args["action"] not in ACTIONS:
        abort(400, description=gettext("Unknown action."))
    if len(args["account"]) > MAX_ACCOUNT:
        abort(400, description=gettext("The account name is too long."))
    try:
        since = parse_when(args["since"]) if args["since"] else None
        until = parse_when(args["until"], end=True) if args["until"] else None
        page = int(request.args.get("page", "1"))
    except (BadDate, ValueError) as exc:
        abort(400, description=str(exc) if isinstance(exc, BadDate)
              else gettext("Bad page number."))
    args["page"] = max(1, min(page, 1_000_000))
    return args, AuditQuery(since=since, until=until, account=args["account"] or None,
                            action=args["action"] or None)


@blueprint.route("/audit")
@technician_only
def trail():
    """The audit trail, filtered and paged, with the result of the chain check."""
    args, query = _filters()
    conn = database()
    size = current_app.config["CLINIBOX"].config.web.page_size
    total = count_rows(conn, query)
    pages = max(1, math.ceil(total / size))
    args["page"] = min(args["page"], pages)
    rows = read_rows(conn, query, limit=size, offset=(args["page"] - 1) * size)
    check = verify(conn)
    audit_trail.note("audit_viewed", "audit", _described(args),
                     coalesce_seconds=audit_trail.AUDIT_VIEW_COALESCE)
    return render_template("audit.html", rows=rows, check=check, args=args, total=total,
                           pages=pages, actions=ACTIONS, audit_words=audit_words,
                           accounts=[a.name for a in Accounts(conn).all()])


def _described(args: dict[str, Any]) -> str:
    """The filters in a few words, for the ``audit_viewed`` row."""
    words = [f"{name} {args[name]}" for name in ("since", "until", "account", "action")
             if args[name]]
    return ", ".join(words) or "all rows"
