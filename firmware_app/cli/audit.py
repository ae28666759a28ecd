"""``clinibox audit``: the box's access audit trail on the console, and the check of its chain.

    clinibox audit [--json] [--since DATE] [--until DATE] [--account NAME] [--action ACTION]
                   [--limit N] [--verify [--witness FILE]]

Rows are printed oldest first (``--json``: a list of objects: id, at, account,
address, action, target, detail, hash); ``--limit N`` keeps the newest N. DATE
is the box's local time: ``YYYY-MM-DD`` (``--until`` takes in the whole day),
``YYYY-MM-DDTHH:MM``, ``today`` or ``yesterday``. The hash chain is checked on
every call: the command ends with status 1 when it is broken, saying at which
row and why (on standard error; with ``--verify`` only that is printed, with the
chain's head — its last row and hash — for a technician to compare with the
hospital's by eye).

``--witness FILE`` (with ``--verify``) also checks the chain against the heads the
hospital received in the box's heartbeats (FILE: ``clinibox central audit-heads
--device CLINIC/DEVICE --witness-file FILE``; ``storage.audit_witness_check``): a
chain rewritten on the box checks by itself, but not against those. A head that
disagrees ends the command with status 1; a bad or foreign file with status 2.
Reading the trail is itself recorded (``audit_viewed``, as ``cli:<unix user>``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from clinibox_common.errors import EXIT_FAIL, EXIT_OK
from clinibox_common.i18n import ENGLISH, current
from clinibox_common.i18n import gettext as _
from clinibox_common.i18n.text import ljust
from firmware_app.settings import box as config_module
from firmware_app.storage import audit, db
from firmware_app.storage.audit_chain import ChainCheck, verify
from firmware_app.storage.audit_query import AuditQuery, AuditRow, parse_when, read_rows
from firmware_app.storage.audit_witness import head
from firmware_app.storage.audit_witness_check import (
    BadWitnessFile,
    Witness,
    WitnessCheck,
    check_witness,
    read_witness,
)
from firmware_app.words import labels


def _query(args: argparse.Namespace) -> AuditQuery:
    return AuditQuery(since=parse_when(args.since) if args.since else None,
                      until=parse_when(args.until, end=True) if args.until else None,
                      account=args.account, action=args.action)


def _line(row: AuditRow) -> str:
    fields = row.to_dict()
    return (f"{fields['id']:>7}  {fields['at']}  {row.account or '-':<20} {row.address:<15} "
            f"{_action(row.action)} {row.target:<18} {row.detail}")


def _action(code: str) -> str:
    """A row's action, 19 columns wide: its code in English (what ``--action`` takes), its
    words in another language; the other fields are the row as recorded."""
    return f"{code:<19}" if current() == ENGLISH else ljust(labels.action(code), 19)


def _chain_json(check: ChainCheck, top: tuple[int, str],
                witnessed: WitnessCheck | None) -> dict[str, object]:
    result: dict[str, object] = {
        "intact": check.intact and (witnessed is None or witnessed.intact), "rows": check.rows,
        "broken_at": check.broken_at, "reason": check.reason, "last_hash": check.last_hash,
        "head": {"row": top[0], "hash": top[1]}}
    if witnessed is not None:
        result["witness"] = witnessed.to_dict()
    return result


def _witness(args: argparse.Namespace, config: config_module.Config) -> Witness | None:
    """The witness file named by ``--witness``, read before the database is opened; it must
    be this box's."""
    if args.witness is None:
        return None
    witness = read_witness(args.witness)
    mine = (config.telemetry.clinic, config.telemetry.device)
    if (witness.clinic, witness.device) != mine:
        raise BadWitnessFile(_("the witness file is for %(theirs)s, this box is %(mine)s",
                               theirs=f"{witness.clinic}/{witness.device}",
                               mine="/".join(mine)))
    return witness


def _described(args: argparse.Namespace) -> str:
    words = [f"--{name} {value}" for name in ("since", "until", "account", "action", "limit")
             if (value := getattr(args, name)) is not None]
    return " ".join(["--verify"] * args.verify + words) or "all rows"


def cmd_audit(args: argparse.Namespace) -> int:
    """Print the audit trail (filtered) or only the result of its chain check."""
    query = _query(args)  # a bad date is refused before the database is opened
    args.verify = args.verify or args.witness is not None
    config = config_module.load(getattr(args, "config", None))
    witness = _witness(args, config)
    conn = db.open_database(config.database_path)
    try:
        check = verify(conn)
        top = head(conn)
        witnessed = None if witness is None else check_witness(
            conn, witness, keep_days=config.audit.keep_days)
        rows = [] if args.verify else read_rows(conn, query, newest_first=True, limit=args.limit)
        audit.record(conn, "audit_viewed", account=audit.console_actor(),
                     address=audit.CONSOLE_ADDRESS, target="audit", detail=_described(args))
    finally:
        conn.close()
    rows.reverse()  # oldest first
    status = EXIT_OK if check.intact and (witnessed is None or witnessed.intact) else EXIT_FAIL
    if args.verify:
        if args.json:
            print(json.dumps(_chain_json(check, top, witnessed), indent=2))
            return status
        print(_("audit chain: %(result)s", result=check.describe()))
        print(_("audit head: row %(row)s, hash %(hash)s", row=top[0], hash=top[1]))
        if witnessed is not None:
            print(_("audit chain against the hospital's witness: %(result)s",
                    result=witnessed.describe()))
        return status
    if args.json:
        print(json.dumps([row.to_dict() for row in rows], indent=2, ensure_ascii=False))
    else:
        for row in rows:
            print(_line(row))
        print(_("%(rows)s row(s); audit chain: %(result)s", rows=len(rows),
                result=check.describe()))
    if not check.intact:
        print(_("clinibox audit: the audit chain is %(result)s", result=check.describe()),
              file=sys.stderr)
    return status


def _limit(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")  # parsed before the language
    return value


def add_parsers(sub: argparse._SubParsersAction,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register ``audit`` on the main parser."""
    p = with_config(sub.add_parser(
        "audit", help="the access audit trail (who viewed, exported, changed what) and its check"))
    p.add_argument("--json", action="store_true", help="a JSON list of rows")
    p.add_argument("--since", metavar="DATE",
                   help="from this local date or time (YYYY-MM-DD[THH:MM], today, yesterday)")
    p.add_argument("--until", metavar="DATE", help="until this date (its whole day) or time")
    p.add_argument("--account", metavar="NAME", help="only this account (cli:USER, system:…)")
    p.add_argument("--action", choices=list(audit.ACTIONS), metavar="ACTION",
                   help=f"only this action: {', '.join(audit.ACTIONS)}")
    p.add_argument("--limit", type=_limit, metavar="N", help="only the newest N rows")
    p.add_argument("--verify", action="store_true",
                   help="only check the hash chain (status 1 when broken) and print its head")
    p.add_argument("--witness", metavar="FILE", type=Path,
                   help="with --verify: also check the chain against the heads the hospital "
                        "witnessed (clinibox central audit-heads --witness-file FILE)")
    p.set_defaults(func=cmd_audit)
