"""``clinibox dicom-out``: the DICOM results a PACS kept refusing, listed and sent again.

A document the destination answered with a failure status ``[pacs]
max_refusals`` times is held in the DICOM outbox (``storage/dicom_outbox.py``).
``clinibox dicom-out held`` lists them with the status and the destination's
reason; once the PACS is fixed, ``clinibox dicom-out retry`` puts them back in
the queue (all, one destination's, or by id): the running service's sender
sends them within its next pass (at most ``sender.POLL_SECONDS``). ``clinibox
dicom-out check`` tries each destination as the sender would (a C-ECHO on an
association, or an empty STOW-RS request with the box's password), storing nothing,
so a wrong set-up is said when it is made, not when the first study waits.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict

from clinibox_common.errors import EXIT_FAIL, EXIT_OK
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


def cmd_check(args: argparse.Namespace) -> int:
    """Try each destination (or ``--destination``) as the sender would; EXIT_FAIL when one
    would not take results, saying why and what to check."""
    from firmware_app.dicom_out.link import LinkFailed
    from firmware_app.dicom_out.sender import PROBES

    config = config_module.load(getattr(args, "config", None))
    destinations = [d for d in config.pacs.destinations
                    if args.destination in (None, d.name)]
    if not destinations:
        print(_("no PACS destination configured: DICOM results are not sent")
              if args.destination is None else
              _("no PACS destination is called %(name)s", name=args.destination))
        return EXIT_OK if args.destination is None else EXIT_FAIL
    failed = 0
    for destination in destinations:
        try:
            PROBES[destination.protocol](destination, config.pacs,
                                         config.pacs_calling_ae_title)
        except LinkFailed as exc:
            failed += 1
            code = event_codes.code(event_codes.PACS_FAILED, exc.failure)
            print(_("%(name)s (%(peer)s): would not take results: %(why)s",
                    name=destination.name, peer=destination.peer(),
                    why=event_words.pacs_words(code) or _("sending to the PACS failed")))
            if event_words.in_english():
                print(f"    {exc}")  # the peer's own words, recorded in English
            continue
        print(_("%(name)s (%(peer)s): takes results", name=destination.name,
                peer=destination.peer()))
    return EXIT_FAIL if failed else EXIT_OK


def cmd_dicom_out(args: argparse.Namespace) -> int:
    """``held``, ``retry`` or ``check``."""
    actions = {"retry": cmd_retry, "check": cmd_check}
    return actions.get(args.action, cmd_held)(args)


def add_parsers(sub: argparse._SubParsersAction,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register ``dicom-out`` (``held``, ``retry``) on the main parser."""
    p = with_config(sub.add_parser(
        "dicom-out", help="DICOM results the PACS kept refusing: list them (held), or queue "
                          "them again (retry); or try each destination now (check)"))
    p.add_argument("action", choices=("held", "retry", "check"),
                   help="held: list them and why; retry: queue them again; check: try each "
                        "destination as the sender would, storing nothing")
    p.add_argument("--destination", help="only this destination's")
    p.add_argument("--id", type=int, action="append", help="retry: only this row (repeatable)")
    p.add_argument("--json", action="store_true", help="held: print JSON")
    p.set_defaults(func=cmd_dicom_out)
