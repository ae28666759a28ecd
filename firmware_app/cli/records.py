"""``clinibox records``: the reports a clinic information system kept refusing, listed and
sent again.

A report the receiver refused ``[records] max_refusals`` times (an HL7 AE or AR, a FHIR
4xx) is held in the records outbox (``storage/records_outbox.py``). ``clinibox records
held`` lists them with the receiver's answer; once the cause is fixed, ``clinibox records
retry`` puts them back in the queue (all, or one receiver's): the running service's sender
sends them within its next pass (at most ``records.sender.POLL_SECONDS``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from clinibox_common.errors import EXIT_FAIL, EXIT_OK
from clinibox_common.i18n import gettext, ngettext
from firmware_app.settings import box as config_module
from firmware_app.storage import db, event_codes, records_outbox
from firmware_app.words import records_words

_ = gettext


def cmd_held(args: argparse.Namespace) -> int:
    """List the held reports with the receiver's last answer and its words."""
    config = config_module.load(getattr(args, "config", None))
    conn = db.open_database(config.database_path)
    try:
        held = records_outbox.held_reports(conn, args.receiver)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(held, indent=2, ensure_ascii=False))
        return EXIT_OK
    if not held:
        print(_("no report for the clinic's records is held"))
        return EXIT_OK
    print(_("number, receiver, report, answer code, study:"))
    for h in held:
        print(f"{h['id']:>6} {h['receiver']} {records_words.report_kind(h['report_kind'])} "
              f"{h['last_status'] or '-'} {h['study_key']}")
        print("       " + records_words.receiver_said(h["last_error"] or ""))
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    """Queue held reports again (all, or one receiver's); EXIT_FAIL for a receiver the box
    does not know."""
    config = config_module.load(getattr(args, "config", None))
    conn = db.open_database(config.database_path)
    try:
        known = sorted({r.name for r in config.records.receivers}
                       | {f["name"] for f in records_outbox.receiver_figures(conn)})
        if args.receiver is not None and args.receiver not in known:
            print(_("no clinic records system is called %(name)s (there are: %(names)s)",
                    name=args.receiver, names=", ".join(known) or _("none")))
            return EXIT_FAIL
        with db.transaction(conn):
            counts = records_outbox.requeue_held(conn, args.receiver)
            for name, count in counts.items():  # on the receiver's own line of events
                db.record_event(conn, "INFO", records_outbox.event_component(name),
                                f"requeued {count} held report(s)",
                                event_codes.code(event_codes.RECORDS_REQUEUED, count, name))
    finally:
        conn.close()
    count = sum(counts.values())
    print(ngettext("%(num)s held report queued again", "%(num)s held reports queued again",
                   count))
    if count:
        print(_("The running service sends them within a minute."))
    return EXIT_OK


def cmd_records(args: argparse.Namespace) -> int:
    """``held`` or ``retry``."""
    return cmd_retry(args) if args.action == "retry" else cmd_held(args)


def add_parsers(sub: argparse._SubParsersAction,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register ``records`` (``held``, ``retry``) on the main parser."""
    p = with_config(sub.add_parser(
        "records", help="reports the clinic's records system kept refusing: list them (held), "
                        "or queue them again (retry)"))
    p.add_argument("action", choices=("held", "retry"),
                   help="held: list them and the answer; retry: queue them again")
    p.add_argument("--receiver", help="only this receiver's")
    p.add_argument("--json", action="store_true", help="held: print JSON")
    p.set_defaults(func=cmd_records)


