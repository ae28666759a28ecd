"""``clinibox retention``: one retention pass (or a dry run), and what it deleted."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from firmware_app.errors import EXIT_FAIL, EXIT_OK
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
    rows = ((f"images older than {limits['image_days']:g} days", report.by_age),
            (f"held objects older than {limits['quarantine_days']:g} days", report.quarantine),
            ("images for disk space", report.for_disk),
            ("held objects for disk space", report.held_for_disk))
    verb = "would delete" if report.dry_run else "deleted"
    print(f"retention{' (dry run)' if report.dry_run else ''}: {verb} {report.images} "
          f"image(s), {mb_text(report.bytes)}")
    for label, tally in rows:
        print(f"  {label:<36} {tally.images:>7}  {mb_text(tally.bytes):>10}")
    print(f"  {'of which the file was already gone':<36} {report.missing:>7}")
    label = f"audit rows older than {limits.get('audit_days', 0):g} days"
    print(f"  {label:<36} {report.audit_rows:>7}")
    if report.resumed:
        print(f"  {'left by an interrupted pass':<36} {report.resumed:>7}")
    after = "after (estimated)" if report.dry_run else "after"
    print(f"  disk used: {report.disk_used_pct_before:.1f} % before, "
          f"{report.disk_used_pct_after:.1f} % {after} "
          f"(limit {report.limits['max_disk_used_pct']:g} %)")
    if report.disk_still_full:
        print("  the disk is still above the limit: every image safe to delete is gone")
    oldest = "none" if report.oldest_kept is None else time.strftime(
        "%Y-%m-%d %H:%M", time.localtime(report.oldest_kept))
    print(f"  oldest image kept: {oldest}")


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
