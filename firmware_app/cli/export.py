"""``clinibox export-study STUDY --out DIR [--zip]``: a study de-identified, for a second reader.

STUDY is the box's local study id (the number in the viewer's ``/study/ID``),
the Study Instance UID, or the study reference of an alert from the hospital.
The images still on the box are written de-identified with the DICOM Basic
Application Level Confidentiality Profile (``firmware_app/dicom_out/``) into
a new or empty folder, or with ``--zip`` into a new zip file; the export is
recorded as ``cli:<unix user>``, with the study's structured report (the SR its
PACS was sent, made again from the stored results) de-identified beside them.
(``clinibox export`` is the converter's step.)

``clinibox export-disagreements --out PATH [--zip] [--since DATE] [--all]``
writes every study a clinician disagreed with, not exported this way before
(``--all``: every one), de-identified the same way, one ``CASE0001/`` folder
per study with a ``case.json`` of the verdicts and the model's output
(``firmware_app/dicom_out/disagreements.py``), for a USB stick to the hospital
or the model's developers.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from clinibox_common.contracts.manifest import PackageError
from clinibox_common.errors import EXIT_OK
from clinibox_common.i18n import N_
from clinibox_common.i18n import gettext as _
from engine.model_package import load_package
from firmware_app.dicom_out.disagreements import export_disagreements
from firmware_app.dicom_out.export import export_study, reference_secret, resolve_study
from firmware_app.dicom_out.study_report import study_report
from firmware_app.models.store import resolve_package_root
from firmware_app.settings import box as config_module
from firmware_app.storage import db
from firmware_app.storage.audit import CONSOLE_ADDRESS, console_actor
from firmware_app.storage.audit_query import parse_when

#: what the command says, in the reader's language, of an object the pixel check left out
#: (by its code; the others say their reason as it is, and ``--json`` gives every reason)
PIXEL_CHECK_WORDS = {
    "ocr-identifier-readable": N_("a patient's name or id can still be read in its pixels"),
    "ocr-unavailable": N_("its pixels cannot be checked: Tesseract OCR with Chinese and "
                          "English is not installed on this box"),
    "ocr-timeout": N_("its pixels could not be read in time"),
    "ocr-failed": N_("its pixels could not be read"),
}


def unix_account() -> str:
    """``cli:<the unix user running the command>``, as the export record names it."""
    return console_actor()


def _study_report(config: config_module.Config, conn, study_key: str) -> list:
    """The study's SR for the export, made with the running package's identity (none, with
    a note, when the package cannot be loaded: the images are still exported)."""
    try:
        package = load_package(resolve_package_root(config), config.trusted_key_paths)
    except PackageError as exc:
        print(_("note: no structured report in the export (model package: %(error)s)",
                error=exc))
        return []
    return study_report(conn, study_key, package.manifest, config.telemetry.device)


def cmd_export_study(args: argparse.Namespace) -> int:
    """Export one study de-identified to a folder or a zip, and say what was left out."""
    config = config_module.load(getattr(args, "config", None))
    conn = db.open_database(config.database_path)
    try:
        secret = reference_secret(config)
        report = _study_report(config, conn, resolve_study(conn, args.study, secret).study_key)
        summary = export_study(conn, args.study, Path(args.out), as_zip=args.zip,
                               account=unix_account(), address=CONSOLE_ADDRESS, secret=secret,
                               extra_documents=report)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
        return EXIT_OK
    print(_("export %(export)s: study %(study)s, %(files)s file(s) de-identified to %(target)s",
            export=summary.export_id, study=summary.study_id, files=len(summary.files),
            target=summary.target))
    for item in summary.left_out:
        reason = PIXEL_CHECK_WORDS.get(item.code)
        print("  " + _("left out: %(what)s: %(reason)s", what=item.what,
                       reason=_(reason) if reason else item.reason))
    return EXIT_OK


def cmd_export_disagreements(args: argparse.Namespace) -> int:
    """Export the cases clinicians disagreed with, de-identified, to a folder or a zip."""
    config = config_module.load(getattr(args, "config", None))
    since = parse_when(args.since) if args.since else None
    conn = db.open_database(config.database_path)
    try:
        summary = export_disagreements(conn, Path(args.out), as_zip=args.zip,
                                       account=unix_account(), address=CONSOLE_ADDRESS,
                                       since=since, include_exported=args.all)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
        return EXIT_OK
    print(_("%(cases)s disagreement case(s) de-identified to %(target)s",
            cases=len(summary.cases), target=summary.target))
    for item in summary.skipped + summary.left_out:
        print("  " + _("left out: %(what)s", what=item))
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register export-study on the main parser."""
    p = with_config(sub.add_parser(
        "export-study", help="a study de-identified (DICOM Basic Profile) to a folder or zip"))
    p.add_argument("study", metavar="STUDY",
                   help="local study id, Study Instance UID, or an alert's study reference")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="a new or empty folder (or, with --zip, the zip file to write)")
    p.add_argument("--zip", action="store_true", help="write one zip file instead of a folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export_study)
    p = with_config(sub.add_parser(
        "export-disagreements",
        help="cases clinicians disagreed with, de-identified with their verdicts, for the "
             "model's makers"))
    p.add_argument("--out", required=True, metavar="PATH",
                   help="a new or empty folder (or, with --zip, the zip file to write)")
    p.add_argument("--zip", action="store_true", help="write one zip file instead of a folder")
    p.add_argument("--since", metavar="DATE",
                   help="only verdicts given from this day (YYYY-MM-DD, today, yesterday)")
    p.add_argument("--all", action="store_true",
                   help="also the cases exported before")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export_disagreements)
