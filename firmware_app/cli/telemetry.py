"""Telemetry subcommands of ``clinibox``: outbox (the privacy audit), identity, study.

* ``clinibox outbox [--json]`` lists every message waiting, or sent, dropped
  or superseded within the audit window, exactly as it was handed to
  encryption: what a privacy officer needs to see everything that leaves.
* ``clinibox identity [--out FILE]`` prints (and writes) the box's public key
  and ids, for enrolment at the hospital.
* ``clinibox study REF`` finds the local study behind a study reference from an
  alert (only this box's secret can do that).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from clinibox_common.errors import EXIT_FAIL, EXIT_OK
from clinibox_common.i18n import gettext as _
from clinibox_common.i18n.text import ljust
from firmware_app.settings import box as config_module
from firmware_app.storage import db
from firmware_app.storage.outbox import Outbox
from firmware_app.storage.telemetry import study_instances
from firmware_app.telemetry.identity import find_study, load_identity
from firmware_app.words import labels


def _config(args: argparse.Namespace) -> config_module.Config:
    return config_module.load(getattr(args, "config", None))


def cmd_outbox(args: argparse.Namespace) -> int:
    """List the outbound messages within the audit window, payloads in full."""
    config = _config(args)
    conn = db.open_database(config.database_path)
    outbox = Outbox(conn, config.telemetry.outbox_max_messages, set())
    since = time.time() - config.telemetry.audit_days * 86400
    rows = outbox.audit(since)
    summary = {"pending": outbox.pending_count(), "dropped_total": outbox.counter("dropped_total")}
    conn.close()
    if args.json:
        print(json.dumps({"audit_days": config.telemetry.audit_days, **summary,
                          "messages": rows}, indent=2))
        return EXIT_OK
    print(_("%(waiting)s waiting, %(dropped)s dropped ever; messages of the last %(days)s "
            "days:", waiting=summary["pending"], dropped=summary["dropped_total"],
            days=f"{config.telemetry.audit_days:g}"))
    for row in rows:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["created_at"]))
        print(f"{row['seq']:>8} {at} {ljust(labels.outbox_kind(row['kind']), 10)} "
              f"{ljust(labels.outbox_state(row['state']), 12)} "
              f"{json.dumps(row['payload'], sort_keys=True)}")
    return EXIT_OK


def cmd_identity(args: argparse.Namespace) -> int:
    """Print the box's clinic, device and public key (making the keys on first use)."""
    config = _config(args)
    identity = load_identity(config)
    if args.out:
        Path(args.out).write_text(identity.public_key_pem)
    info = {"clinic": identity.clinic, "device": identity.device, "key_id": identity.key_id,
            "public_key": identity.public_key_pem}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(_("clinic %(clinic)s, device %(device)s, key %(key)s", clinic=identity.clinic,
                device=identity.device, key=identity.key_id))
        print(identity.public_key_pem, end="")
        if args.out:
            print(_("public key written to %(path)s: enrol it at the hospital with "
                    "%(command)s", path=args.out, command=f"clinibox central enrol --clinic "
                    f"{identity.clinic} --device {identity.device} --key {args.out}"))
    return EXIT_OK


def cmd_study(args: argparse.Namespace) -> int:
    """Find the local study behind a study reference from an alert."""
    config = _config(args)
    conn = db.open_database(config.database_path)
    key = find_study(conn, load_identity(config), args.ref)
    if key is None:
        conn.close()
        print(f"no study on this box has reference {args.ref}", file=sys.stderr)
        return EXIT_FAIL
    rows = study_instances(conn, key)
    conn.close()
    print(f"study {key}: {len(rows)} instance(s)")
    for row in rows:
        probability = "-" if row[2] is None else f"{row[2]:.2f}"
        print(f"  instance {row[0]} {row[1] or '-'} p={probability}"
              f"{' ALERT' if row[3] else ''}")
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register outbox, identity and study on the main parser."""
    p = with_config(sub.add_parser("outbox", help="audit: every message that leaves the box"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_outbox)
    p = with_config(sub.add_parser("identity", help="this box's telemetry ids and public key"))
    p.add_argument("--out", metavar="FILE", help="also write the public key (PEM) here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_identity)
    p = with_config(sub.add_parser("study", help="the local study behind an alert's reference"))
    p.add_argument("ref", help="the 32-hex-digit study reference")
    p.set_defaults(func=cmd_study)
