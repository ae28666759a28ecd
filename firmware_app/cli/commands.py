"""The box's own commands: serve, web, infer, status, results, keys, config.

The table of every ``clinibox`` command is ``firmware_app/cli/table.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware_app.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from firmware_app.i18n import N_, gettext
from firmware_app.i18n.text import ljust, rjust
from firmware_app.settings import box as config_module
from firmware_app.storage import db
from web import labels, reasons, wording

_ = gettext
#: the counts ``clinibox status`` prints, by key (English: the keys themselves, as before)
STATUS_LABELS = {
    # TRANSLATORS: the labels of `clinibox status`; the English is the JSON key
    "received": N_("received"), "queued": N_("queued"), "processed": N_("processed"),
    "quarantined": N_("quarantined"), "not_analysed": N_("not_analysed"),
    "failed": N_("failed"), "duplicates_ignored": N_("duplicates_ignored"),
    "studies": N_("studies"), "outbox_pending": N_("outbox_pending"),
    "disk_free_mb": N_("disk_free_mb"),
    "images_deleted_by_retention": N_("images_deleted_by_retention"),
    "last_retention_pass": N_("last_retention_pass"),
}
#: instance statuses as `clinibox results` prints them
RESULT_STATUSES = {"processed": N_("processed"), "queued": N_("queued"),
                   "processing": N_("processing"), "quarantined": N_("quarantined"),
                   "failed": N_("failed"), "not_analysed": N_("not_analysed")}


def _load_config(args: argparse.Namespace) -> config_module.Config:
    return config_module.load(getattr(args, "config", None))


def _open_db(config: config_module.Config):
    return db.open_database(config.database_path)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run every configured component until stopped."""
    from firmware_app.service.appliance import Appliance
    from firmware_app.service.viewer_process import ViewerProcess

    config = _load_config(args)
    logging.getLogger().setLevel(config.logging.level)
    viewer = ViewerProcess(args.config) if config.web.enabled and not args.no_web else None
    Appliance(config, viewer).serve_forever()
    return EXIT_OK


def cmd_web(args: argparse.Namespace) -> int:
    """Run the clinic viewer (HTTPS, gunicorn) alone."""
    from firmware_app.service.viewer_process import die_with_parent
    from web.server import serve

    die_with_parent()
    config = _load_config(args)
    logging.getLogger().setLevel(config.logging.level)
    serve(config, args.config)
    return EXIT_OK


def cmd_infer(args: argparse.Namespace) -> int:
    """Analyse files directly, without the service, through the service's own path
    (``inference/analysis.py``: decoder sandbox, routing rules and modality list, quality,
    validated range)."""
    import tempfile

    from firmware_app.imaging.sandbox import DecodeSandbox
    from firmware_app.imaging.wrap import is_picture, wrap_picture
    from firmware_app.inference.analysis import analyse_object
    from firmware_app.models.routing import Router
    from firmware_app.service.appliance import load_runner

    config = _load_config(args)
    runner = load_runner(config)
    sandbox = DecodeSandbox(config.limits)
    reports: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="clinibox-infer-") as scratch:
        router = Router(config.routing.rules, {runner.package.name: runner.package},
                        runner.package.name)

        def route(image):  # the box's own model; a rule naming another is not analysed here
            chosen = router.route(image)
            return runner if chosen.model else chosen.reason

        for name in args.files:
            path = Path(name)
            report: dict[str, Any] = {"file": str(path)}
            reports.append(report)
            try:
                with open(path, "rb") as handle:
                    head = handle.read(132)
                if is_picture(head):  # a PNG/JPEG export, wrapped as the USB import does
                    wrapped = Path(scratch) / f"{len(reports)}.dcm"
                    wrapped.write_bytes(wrap_picture(path.read_bytes()))
                    path = wrapped
                outcome = analyse_object(path, route, config, sandbox)
            except (ValueError, OSError) as exc:
                report.update(status="quarantined", reason=str(exc))
                continue
            if outcome.status != "processed":
                report.update(status=outcome.status, reason=outcome.reason)
                continue
            assert outcome.decoded is not None and outcome.analysis is not None
            analysis, found = outcome.analysis, outcome.analysis.findings
            report.update(
                status="processed",
                modality=outcome.decoded.modality,
                probability=round(found.probability, 4),
                assessment=found.assessment,
                assessment_reason=found.assessment_reason,
                finding=found.finding,
                alert=found.alert,
                lesions=[lesion.to_dict() for lesion in found.lesions],
                class_probabilities={k: round(float(v), 4) for k, v in found.classes.items()},
                findings=[{"label": b.label, "score": round(b.score, 4),
                           "box": [round(v, 1) for v in (b.x0, b.y0, b.x1, b.y1)]}
                          for b in found.boxes],
                warnings=analysis.warnings,
                key_frame=found.key_frame,
                frames_inferred=analysis.frames_inferred,
                model_id=runner.package.model_id,
                backend=runner.backend_label,
                timings_ms={k: round(v, 2) for k, v in outcome.timings.items()},
            )
    sandbox.close()
    if args.json:
        json.dump(reports, sys.stdout, indent=2)
        print()
    else:
        print(_("model %(model)s on %(backend)s", model=runner.package.model_id,
                backend=runner.backend_label))
        print(_("intended use: %(use)s", use=wording.intended_use(
            runner.package.manifest.get("intended_use", "")) or "-"))
        for r in reports:
            _print_inferred(r)
    return EXIT_OK if all(r["status"] == "processed" for r in reports) else EXIT_FAIL


def _verdict_word(r: dict[str, Any]) -> str:
    if r["alert"]:
        return _("ALERT")
    return _("finding") if r["finding"] else _("no finding")


def _print_inferred(r: dict[str, Any]) -> None:
    """One analysed file of ``clinibox infer`` for a person."""
    if r["status"] != "processed":
        print(_("%(file)s: QUARANTINED — %(reason)s", file=r["file"], reason=r["reason"]))
        return
    if r["assessment"] == "not_assessable":
        print(_("%(file)s: NOT ASSESSABLE — %(reason)s (no result)", file=r["file"],
                reason=reasons.reason_text(r["assessment_reason"])))
        return
    if r["assessment"] == "outside_validated_range":
        print(_("%(file)s: OUTSIDE VALIDATED RANGE — %(reason)s (no result)", file=r["file"],
                reason=reasons.reason_text(r["assessment_reason"])))
        return
    print(_("%(file)s: %(verdict)s (lesion probability %(p)s, %(boxes)s box(es))",
            file=r["file"], verdict=_verdict_word(r), p=f"{r['probability']:.2f}",
            boxes=len(r["findings"])))
    for n, lesion in enumerate(r["lesions"], start=1):
        print("    " + _("lesion %(n)s: %(label)s p=%(p)s, %(size)s", n=n,
                label=labels.class_label(lesion["label"]),
                p=f"{lesion['probability']:.2f}", size=wording.size(lesion)))
    for w in r["warnings"]:
        print("    " + _("warning: %(message)s", message=reasons.reason_text(w["message"])))


def status_report(config: config_module.Config) -> dict[str, Any]:
    """What ``clinibox status`` prints: ``storage.status.box_status``, times made readable."""
    from firmware_app.storage.status import box_status

    conn = _open_db(config)
    try:
        report = box_status(conn, config.state_dir,
                            pacs_destinations=[d.name for d in config.pacs.destinations])
    finally:
        conn.close()
    report["disk_free_mb"] = report["disk"]["free_mb"]
    report["last_errors"] = [
        {**e, "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(e["at"]))}
        for e in report["last_errors"]]
    return report


def cmd_status(args: argparse.Namespace) -> int:
    """Print counts of received, queued, processed, quarantined and failed objects."""
    config = _load_config(args)
    report = status_report(config)
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    for key in ("received", "queued", "processed", "quarantined", "not_analysed", "failed",
                "duplicates_ignored", "studies", "outbox_pending", "disk_free_mb",
                "images_deleted_by_retention"):
        print(f"{rjust(_(STATUS_LABELS[key]), 20)}: {report[key]}")
    last_pass = report["last_retention_pass"] or _("never")
    print(f"{rjust(_(STATUS_LABELS['last_retention_pass']), 20)}: {last_pass}")
    if report["quarantine_reasons"]:
        print(_("held back (quarantined or failed), by reason:"))
        for reason, n in report["quarantine_reasons"].items():
            print(f"  {n:>5} × {reasons.reason_text(reason)}")
    _print_pacs(report["pacs"])
    if report["last_errors"]:
        print(_("last errors:"))
        for e in report["last_errors"]:
            print(f"  {e['at']} {e['level']:<7} {e['component']}: {e['message']}")
    return EXIT_OK


def _clock(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch))


def _print_pacs(destinations: list[dict[str, Any]]) -> None:
    """The DICOM outbox per PACS destination: backlog, last delivery, last error."""
    if not destinations:
        return
    print(_("PACS destinations (DICOM results waiting / sent):"))
    for d in destinations:
        name = d["name"] if d["configured"] else _(
            "%(name)s (not configured: its documents wait)", name=d["name"])
        line = "  " + _("%(name)s: %(waiting)s waiting, %(sent)s sent", name=name,
                        waiting=d["waiting"], sent=d["sent"])
        if d["waiting"]:
            line += _(", oldest since %(oldest)s, next try %(next)s (%(tries)s tries so far)",
                      oldest=_clock(d["oldest_waiting_at"]), next=_clock(d["next_attempt_at"]),
                      tries=d["attempts"])
        if d["last_sent_at"] is not None:
            line += _(", last sent %(when)s", when=_clock(d["last_sent_at"]))
        print(line)
        if d["last_error"]:
            at = f"{_clock(d['last_error_at'])} " if d["last_error_at"] is not None else ""
            print("    " + _("last error: %(error)s", error=f"{at}{d['last_error']}"))


def cmd_results(args: argparse.Namespace) -> int:
    """One object per received instance with its status, findings and warnings."""
    from firmware_app.storage.results import ResultStore

    config = _load_config(args)
    conn = _open_db(config)
    rows = ResultStore(conn).instances()
    conn.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for r in rows:
        status = _(RESULT_STATUSES.get(r["status"], r["status"]))
        print(f"{r['id']:>6} {r['modality'] or '-':<4} {ljust(status, 11)} {_result_detail(r)}")
    return EXIT_OK


def _result_detail(r: dict[str, Any]) -> str:
    """What ``clinibox results`` says of one instance after its status."""
    reason = reasons.reason_text
    if r["status"] == "processed" and r["assessment"] == "not_assessable":
        return _("not assessable: %(reason)s", reason=reason(r["assessment_reason"]))
    if r["status"] == "processed" and r["assessment"] == "outside_validated_range":
        return _("outside validated range: %(reason)s", reason=reason(r["assessment_reason"]))
    if r["status"] == "processed":
        detail = _("%(verdict)s, p=%(p)s, %(boxes)s box(es)", verdict=_verdict_word(r),
                   p=f"{r['probability']:.2f}", boxes=len(r["findings"]))
        if r["warnings"]:
            detail += _("; ") + _("; ").join(reason(w["message"]) for w in r["warnings"])
        return detail
    return reason(r["reason"] or "")


def cmd_keys(args: argparse.Namespace) -> int:
    """Make a key pair: model signing (Ed25519) or the hospital's telemetry key (X25519)."""
    from firmware_app.contracts import signing
    from firmware_app.contracts.envelope import generate_x25519_pair

    private = Path(args.out).with_suffix(".pem")
    public = private.with_suffix(".pub")
    for path in (private, public):
        if path.exists() and not args.force:
            print(f"{path} exists; refusing to overwrite it (--force to replace)",
                  file=sys.stderr)
            return EXIT_USAGE
    for path in (private, public):
        path.unlink(missing_ok=True)
    if args.kind == "hospital":
        generate_x25519_pair(private, public)
        print(f"hospital key: private {private} (keep it on the receiver: [keys] hospital_key), "
              f"public {public} (install it on each box: [telemetry] hospital_key)")
        return EXIT_OK
    key = signing.generate_key_pair(private, public)
    print(f"key {key}: private {private} (keep it on the workstation), public {public} "
          "(list it in [models] trusted_keys on each box)")
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    """Print the embedded defaults as an example file, or check a file."""
    if args.check:
        config_module.load(args.check)
        print(f"{args.check}: OK")
        return EXIT_OK
    print(config_module.describe_defaults())
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register the box's own commands: serve, web, infer, status, results, keys, config."""
    p = with_config(sub.add_parser("serve", help="run the appliance (and the viewer)"))
    p.add_argument("--no-web", action="store_true",
                   help="do not start the viewer (it runs as its own service)")
    p.set_defaults(func=cmd_serve)
    with_config(sub.add_parser("web", help="run the clinic viewer alone (HTTPS)")).set_defaults(
        func=cmd_web)
    p = with_config(sub.add_parser("infer", help="analyse files now, without the service"))
    p.add_argument("files", nargs="+")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_infer)
    p = with_config(sub.add_parser("status", help="counts, quarantine reasons, last errors"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    p = with_config(sub.add_parser("results", help="every received instance and its result"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_results)
    p = sub.add_parser("keys", help="make a key pair (model signing, or the hospital's)")
    p.add_argument("action", choices=["generate"])
    p.add_argument("--kind", choices=["signing", "hospital"], default="signing",
                   help="signing: Ed25519 for model packages; hospital: X25519 that boxes "
                        "encrypt telemetry to")
    p.add_argument("--out", required=True, help="key path without suffix: writes .pem and .pub")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_keys)
    p = sub.add_parser("config", help="print the example config, or --check FILE")
    p.add_argument("--check", metavar="FILE")
    p.set_defaults(func=cmd_config)
