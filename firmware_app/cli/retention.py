"""``clinibox retention``: one retention pass (or a dry run), and what it deleted."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from clinibox_common.errors import EXIT_FAIL, EXIT_OK
from clinibox_common.i18n import gettext as _
from clinibox_common.i18n import ngettext
from clinibox_common.i18n.text import ljust
from firmware_app.settings import box as config_module
from firmware_app.storage import db
from firmware_app.storage.retention import (
    RetentionBusy,
    RetentionReport,
    apply_retention,
    mb_text,
)


def _print_report(report: RetentionReport) -> None:
    limits = report.limits
    rows = ((_("images older than %(days)s days", days=f"{limits['image_days']:g}"),
             report.by_age),
            (_("held objects older than %(days)s days", days=f"{limits['quarantine_days']:g}"),
             report.quarantine),
            (_("images for disk space"), report.for_disk),
            (_("held objects for disk space"), report.held_for_disk))
    size = mb_text(report.bytes)
    print(ngettext("retention (dry run): would delete %(num)s image, %(size)s",
                   "retention (dry run): would delete %(num)s images, %(size)s",
                   report.images, size=size) if report.dry_run else
          ngettext("retention: deleted %(num)s image, %(size)s",
                   "retention: deleted %(num)s images, %(size)s", report.images, size=size))
    for label, tally in rows:
        print(f"  {ljust(label, 36)} {tally.images:>7}  {mb_text(tally.bytes):>10}")
    gone = _("of which the file was already gone")
    print(f"  {ljust(gone, 36)} {report.missing:>7}")
    label = _("audit rows older than %(days)s days", days=f"{limits.get('audit_days', 0):g}")
    print(f"  {ljust(label, 36)} {report.audit_rows:>7}")
    if report.resumed:
        resumed = _("left by an interrupted pass")
        print(f"  {ljust(resumed, 36)} {report.resumed:>7}")
    figures = {"before": f"{report.disk_used_pct_before:.1f}",
               "after": f"{report.disk_used_pct_after:.1f}",
               "limit": f"{report.limits['max_disk_used_pct']:g}"}
    print("  " + (_("disk used: %(before)s %% before, %(after)s %% after (estimated) "
                    "(limit %(limit)s %%)", **figures) if report.dry_run else
                  _("disk used: %(before)s %% before, %(after)s %% after (limit %(limit)s %%)",
                    **figures)))
    if report.disk_still_full:
        print("  " + _("the disk is still above the limit: every image safe to delete is gone"))
    oldest = _("none") if report.oldest_kept is None else time.strftime(
        "%Y-%m-%d %H:%M", time.localtime(report.oldest_kept))
    print("  " + _("oldest image kept: %(when)s", when=oldest))


def cmd_retention(args: argparse.Namespace) -> int:
    """Run one retention pass (or a dry run) and print what it deleted."""
    config = config_module.load(getattr(args, "config", None))
    conn = db.open_database(config.database_path)
    try:
        report = apply_retention(conn, config, dry_run=args.dry_run)
    except RetentionBusy as exc:
        print(f"retention: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        conn.close()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report)
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register ``retention`` on the main parser."""
    p = with_config(sub.add_parser(
        "retention", help="delete old images (results are kept); run hourly by a timer"))
    p.add_argument("--dry-run", action="store_true",
                   help="only say what would be deleted; change nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_retention)
