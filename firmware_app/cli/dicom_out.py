"""``clinibox dicom-out``: the DICOM results a PACS kept refusing, listed and sent again.

A document the destination answered with a failure status ``[pacs]
max_refusals`` times is held in the DICOM outbox (``storage/dicom_outbox.py``).
``clinibox dicom-out held`` lists them with the status and the destination's
reason; once the PACS is fixed, ``clinibox dicom-out retry`` puts them back in
the queue (all, one destination's, or by id): the running service's sender
sends them within its next pass (at most ``sender.POLL_SECONDS``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict

from clinibox_common.errors import EXIT_OK
from clinibox_common.i18n import gettext, ngettext
from firmware_app.settings import box as config_module
from firmware_app.storage import db, event_codes
from firmware_app.storage.dicom_outbox import held_documents, requeue_held
from firmware_app.words import event_words

_ = gettext


def cmd_held(args: argparse.Namespace) -> int:
    """List the held documents with their last C-STORE status and reason."""
    config = config_module.load(getattr(args, "config", None))
    conn = db.open_database(config.database_path)
    try:
        held = held_documents(conn, args.destination)
    finally:
        conn.close()
    if args.json:
        print(json.dumps([asdict(h) for h in held], indent=2))
        return EXIT_OK
    if not held:
        print(_("no DICOM result is held"))
    for h in held:
        status = "-" if h.last_status is None else f"0x{h.last_status:04X}"
        print(f"{h.id:>6} {h.destination} {h.kind:<9} {status} {h.sop_instance_uid}")
        print(f"       {event_words.pacs_held_error(h.last_status, h.last_error)}")
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    """Queue held documents again (all, one destination's, or those of ``--id``)."""
    config = config_module.load(getattr(args, "config", None))
    conn = db.open_database(config.database_path)
    try:
        with db.transaction(conn):
            count = requeue_held(conn, args.destination, args.id or ())
            if count:
                db.record_event(conn, "INFO", "dicom-out",
                                f"requeued {count} held document(s)"
                                + (f" destination={args.destination}" if args.destination
                                   else ""),
                                event_codes.code(event_codes.DICOM_REQUEUED, count,
                                                 *([args.destination] if args.destination
                                                   else [])))
    finally:
        conn.close()
    print(ngettext("%(num)s held DICOM result queued again",
                   "%(num)s held DICOM results queued again", count))
    return EXIT_OK


def cmd_dicom_out(args: argparse.Namespace) -> int:
    """``held`` or ``retry``."""
    return cmd_retry(args) if args.action == "retry" else cmd_held(args)


def add_parsers(sub: argparse._SubParsersAction,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register ``dicom-out`` (``held``, ``retry``) on the main parser."""
    p = with_config(sub.add_parser(
        "dicom-out", help="DICOM results the PACS kept refusing: list them (held), or queue "
                          "them again (retry)"))
    p.add_argument("action", choices=("held", "retry"),
                   help="held: list them and why; retry: queue them again")
    p.add_argument("--destination", help="only this destination's")
    p.add_argument("--id", type=int, action="append", help="retry: only this row (repeatable)")
    p.add_argument("--json", action="store_true", help="held: print JSON")
    p.set_defaults(func=cmd_dicom_out)
