"""The box's own commands: serve, infer, status, results, keys, config.

The table of every ``clinibox`` command is ``clinibox/table.py``.
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

from clinibox_common.contracts.reasons import decode, records
from clinibox_common.contracts.statuses import AssessmentKind, InstanceStatus
from clinibox_common.errors import EXIT_OK, EXIT_USAGE
from clinibox_common.i18n import ENGLISH, N_, current, gettext, ngettext
from clinibox_common.i18n.text import display_width, ljust, rjust
from firmware_app.cli.infer_wording import verdict_word
from firmware_app.settings import box as config_module
from firmware_app.storage import db
from firmware_app.storage.audit_size import COMMANDS as AUDIT_COMMANDS
from firmware_app.storage.audit_size import alarm_text as audit_size_alarm
from firmware_app.words import event_words, labels, reasons, records_words, wording, worklist_words
from firmware_app.words import model_update_words as model_words

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



def _load_config(args: argparse.Namespace) -> config_module.Config:
    return config_module.load(getattr(args, "config", None))


def _open_db(config: config_module.Config):
    return db.open_database(config.database_path)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run every configured component until stopped."""
    from firmware_app.service.appliance import Appliance
    from firmware_app.service.live_process import LiveProcess
    from firmware_app.service.viewer_process import ViewerProcess
    from firmware_app.storage.live_frames import live_root

    config = _load_config(args)
    logging.getLogger().setLevel(config.logging.level)
    viewer = ViewerProcess(args.config) if config.web.enabled and not args.no_web else None
    live = [LiveProcess(args.config, source.name, live_root(config.state_dir))
            for source in config.live.sources]
    Appliance(config, viewer, live).serve_forever()
    return EXIT_OK


def cmd_infer(args: argparse.Namespace) -> int:
    """Analyse files, folders and DICOMDIRs directly, without the service, through the
    service's own path (``cli/infer.py``)."""
    from firmware_app.cli.infer import run_infer

    return run_infer(args)


def status_report(config: config_module.Config) -> dict[str, Any]:
    """What ``clinibox status`` prints: ``storage.status.box_status``, times made readable."""
    from firmware_app.storage.status import box_status

    conn = _open_db(config)
    try:
        report = box_status(conn, config.state_dir,
                            pacs_destinations=[d.name for d in config.pacs.destinations],
                            audit_max_mb=config.audit.max_mb,
                            records_receivers=[r.name for r in config.records.receivers])
    finally:
        conn.close()
    report["disk_free_mb"] = report["disk"]["free_mb"]
    peers = {d.name: d.peer() for d in config.pacs.destinations}
    for destination in report["pacs"]:
        destination["peer"] = peers.get(destination["name"])  # the address, never a password
    receivers = {r.name: r for r in config.records.receivers}
    for receiver in report["records"]:  # the address, never a password
        found = receivers.get(receiver["name"])
        receiver["peer"] = found.peer() if found else None
        receiver["protocol"] = found.protocol if found else ""
    report["live"] = live_report(config)
    report["worklist"]["enabled"] = config.worklist.enabled
    report["last_errors"] = [
        {**e, "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(e["at"]))}
        for e in report["last_errors"]]
    return report


def live_report(config: config_module.Config) -> list[dict[str, Any]]:
    """Each ``[[live.sources]]`` as its live process last wrote it (``storage/live_frames``):
    state code, detail, frames analysed a second, analysed and dropped, the open session."""
    from clinibox_common.redaction import redact_detail
    from firmware_app.storage.live_frames import live_root, read_state

    root = live_root(config.state_dir)
    out = []
    for source in config.live.sources:
        state = read_state(root, source.name) or {}
        out.append({"source": source.name, "state": state.get("state", "stopped"),
                    "detail": redact_detail(state.get("detail") or {}, source.secrets),
                    "fps": state.get("fps", 0.0),
                    "analysed": state.get("analysed", 0), "dropped": state.get("dropped", 0),
                    "session": (state.get("session") or {}).get("id"),
                    "written": _clock(state.get("wall"))})
    return out


def cmd_status(args: argparse.Namespace) -> int:
    """Print counts of received, queued, processed, quarantined and failed objects."""
    config = _load_config(args)
    report = status_report(config)
    if args.json:  # the held-back reasons as codes with their counts
        held = [{"reasons": records(decode(stored)), "count": n}
                for stored, n in report["quarantine_reasons"].items()]
        print(json.dumps({**report, "quarantine_reasons": held}, indent=2))
        return EXIT_OK
    if report["model_waiting"]:
        print(_waiting_line(report["model_waiting"], report["queued"]))
    for key in ("received", "queued", "processed", "quarantined", "not_analysed", "failed",
                "duplicates_ignored", "studies", "outbox_pending", "disk_free_mb",
                "images_deleted_by_retention"):
        print(f"{rjust(_(STATUS_LABELS[key]), 20)}: {report[key]}")
    last_pass = report["last_retention_pass"] or _("never")
    print(f"{rjust(_(STATUS_LABELS['last_retention_pass']), 20)}: {last_pass}")
    if report["quarantine_reasons"]:
        print(_("held back (quarantined or failed), by reason:"))
        for reason, n in report["quarantine_reasons"].items():
            print(f"  {n:>5} × {reasons.explained_text(reason)}")
    _print_model_orders(report["model_orders"], report["download"])
    _print_pacs(report["pacs"])
    _print_records(report["records"])
    _print_live(report["live"])
    _print_worklist(report["worklist"])
    if report["audit"]["over_limit"]:
        print(audit_size_alarm(report["audit"]))
        for command in AUDIT_COMMANDS:
            print(f"  {command}")
    if report["last_errors"]:
        print(_("last errors:"))
        for e in report["last_errors"]:
            print(f"  {e['at']} {event_words.level(e['level'])} "
                  f"{event_words.component(e['component'])}: {event_words.message(e)[0]}")
    return EXIT_OK


def _clock(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch))


def _waiting_line(waiting: dict[str, Any], held: int) -> str:
    """The line at the top of ``clinibox status`` while the box has no model it may run."""
    return _("model: WAITING FOR A MODEL — %(reason)s since %(since)s; %(held)s (the "
             "hospital's rollout, or `clinibox model install`)",
             reason=model_words.reason(waiting["reason"]), since=_clock(waiting["since"]),
             held=model_words.held_images(held))


def _print_model_orders(orders: list[dict[str, Any]], download: dict[str, Any] | None
                        ) -> None:
    """The hospital's latest model rollouts and the step the box reached in each, with the
    download's progress under the order being downloaded."""
    if not orders:
        return
    print(_("model updates from the hospital (newest first):"))
    for order in orders:
        print(f"  {_clock(order['updated_at'])} {model_words.order_line(order)}")
        if download is not None and download["seq"] == order["seq"] and not order["done"]:
            print(f"  {' ' * 19} {model_words.progress(download, time.time())}")


def _print_live(sources: list[dict[str, Any]]) -> None:
    """The live sources: each one's state (a LiveState code), rate, counts and why."""
    if not sources:
        return
    print(_("live sources (state, frames analysed a second, analysed / dropped):"))
    english = current() == ENGLISH
    for s in sources:
        # the live process's own English words (an error, why no model) only in English: a
        # state's words say it in the reader's language
        why = (s["detail"].get("error") or s["detail"].get("why") or "") if english else ""
        session = _(", session %(id)s open", id=s["session"]) if s["session"] else ""
        print(f"  {s['source']}: {labels.live_state(s['state'])}, {s['fps']}/s, "
              f"{s['analysed']} / {s['dropped']}{session} ({s['written']})"
              f"{' — ' + why if why else ''}")


def _print_worklist(found: dict[str, Any]) -> None:
    """The clinic's worklist (its appointment list): where it stands, when it last answered;
    nothing when ``[worklist]`` is off."""
    if not found["enabled"]:
        return
    answered = (wording.local_time(found["answered_at"]) if found["answered_at"] is not None
                else _("never"))
    print(_("Today's appointment list (worklist)"))
    print(f"  {_('State')}: "
          f"{worklist_words.state_text(found['state'], found['reason'], found['items'])}")
    print(f"  {_('Last answered')}: {answered}")


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
        if d.get("peer"):
            print("    " + _("Destination") + _(": ") + d["peer"])
        if d.get("held"):
            held = event_words.pacs_held_error(d.get("held_status"), d["held_error"] or "-")
            print("    " + _("held, no longer retried (refused by the PACS): %(held)s, last: "
                          "%(error)s; fix the cause with the PACS administrator, then send "
                          "them again:", held=d["held"], error=held))
            print(f"      clinibox dicom-out retry --destination {d['name']}")
        if d["last_error"]:
            at = f"{_clock(d['last_error_at'])} " if d["last_error_at"] is not None else ""
            said = event_words.pacs_error(d.get("last_error_code"), d["last_error"])[0]
            print("    " + _("last error: %(error)s", error=f"{at}{said}"))


def _print_records(receivers: list[dict[str, Any]]) -> None:
    """The records outbox per clinic information system: its protocol and address, backlog,
    last delivery, what is held and why, the last error."""
    if not receivers:
        return
    print(_("Clinic records systems (reports waiting / sent):"))
    for r in receivers:
        name = r["name"] if r["configured"] else _(
            "%(name)s (not configured: its reports wait)", name=r["name"])
        line = "  " + _("%(name)s: %(waiting)s report(s) waiting, %(sent)s sent", name=name,
                        waiting=r["waiting"], sent=r["sent"])
        if r["waiting"]:
            line += _(", oldest since %(oldest)s, next try %(next)s (%(tries)s tries so far)",
                      oldest=_clock(r["oldest_waiting_at"]), next=_clock(r["next_attempt_at"]),
                      tries=r["attempts"])
        if r["last_sent_at"] is not None:
            line += _(", last sent %(when)s", when=_clock(r["last_sent_at"]))
        print(line)
        if r.get("peer"):
            print("    " + _("Address") + _(": ")
                  + f"{records_words.protocol(r.get('protocol', ''))} {r['peer']}")
        if r["held"]:
            print("    " + ngettext(
                "%(num)s report held (no longer sent again by itself), refused with answer "
                "code %(code)s", "%(num)s reports held (no longer sent again by itself), "
                "refused with answer code %(code)s", r["held"], code=r["held_status"] or "-"))
            if r["held_error"]:
                print("      " + records_words.receiver_said(r["held_error"]))
            print("    " + _("Fix the cause with that system's administrator, then send them "
                          "again:"))
            print(f"      clinibox records held --receiver {r['name']}")
            print(f"      clinibox records retry --receiver {r['name']}")
        if r["last_error"]:
            at = f"{_clock(r['last_error_at'])} " if r["last_error_at"] is not None else ""
            said = records_words.error(r.get("last_error_code"), r["last_error"])
            print("    " + _("last error: %(error)s", error=f"{at}{said}"))


def cmd_results(args: argparse.Namespace) -> int:
    """One object per received instance with its status, findings and warnings."""
    from firmware_app.storage.results import ResultStore

    config = _load_config(args)
    if args.studies:
        return _study_results(config, args.json)
    conn = _open_db(config)
    rows = ResultStore(conn).instances()
    conn.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    statuses = [labels.status(r["status"]) for r in rows]  # words/labels.py
    width = max(map(display_width, statuses), default=0)
    for r, status in zip(rows, statuses, strict=True):
        print(f"{r['id']:>6} {r['modality'] or '-':<4} {ljust(status, width)} "
              f"{_result_detail(r)}")
    return EXIT_OK


def _study_results(config: config_module.Config, as_json: bool) -> int:
    """``clinibox results --studies``: one object (or line) per study, in clinical order."""
    from firmware_app.storage.hospital_reviews import latest_by_study_id
    from firmware_app.storage.studies import study_results

    conn = _open_db(config)
    try:
        studies = study_results(conn)
        reviews = latest_by_study_id(conn, (s["id"] for s in studies))
    finally:
        conn.close()
    for s in studies:  # the hospital's verdict on the study's alert (downlink), or None
        review = reviews.get(s["id"])
        s["hospital_review"] = None if review is None else review.as_json()
    if as_json:
        print(json.dumps(studies, indent=2))
        return EXIT_OK
    levels = [labels.level(s["level"]) for s in studies]
    width = max(map(display_width, levels), default=0)
    for s, level in zip(studies, levels, strict=True):
        line = (f"{s['id']:>6} {s['modality'] or '-':<4} {ljust(level, width)} "
                + ngettext("%(num)d lesion", "%(num)d lesions", s["lesion_count"]))
        volumes = [f"{lesion['volume_mm3']:.0f} mm³" for series in s["series"]
                   for lesion in series["lesions"]]
        review = s["hospital_review"]
        verdict = "" if review is None else "; " + _(
            "Hospital reviewed: %(verdict)s", verdict=labels.hospital_verdict(
                review["verdict"], review["follow_up_months"]))
        print(line + (f" ({', '.join(volumes)})" if volumes else "") + verdict)
    return EXIT_OK


def _result_detail(r: dict[str, Any]) -> str:
    """What ``clinibox results`` says of one instance after its status."""
    reason = reasons.explained_text
    processed = r["status"] == InstanceStatus.PROCESSED
    if processed and r["assessment"] == AssessmentKind.NOT_ASSESSABLE:
        return _("not assessable: %(reason)s", reason=reason(r["assessment_reason"]))
    if processed and r["assessment"] == AssessmentKind.OUTSIDE_VALIDATED_RANGE:
        return _("outside validated range: %(reason)s", reason=reason(r["assessment_reason"]))
    if processed:
        detail = _("%(verdict)s, p=%(p)s, %(boxes)s box(es)", verdict=verdict_word(r),
                   p=f"{r['probability']:.2f}", boxes=len(r["findings"]))
        if r["warnings"]:
            detail += _("; ") + reason(r["warnings"])
        return detail
    return reason(r["reason"])


def cmd_keys(args: argparse.Namespace) -> int:
    """Make a key pair: model signing (Ed25519), the hospital's telemetry key (X25519) or the
    hospital's downlink signing key (Ed25519)."""
    from clinibox_common.contracts import signing
    from clinibox_common.contracts.envelope import generate_x25519_pair

    private = Path(args.out).with_suffix(".pem")
    public = private.with_suffix(".pub")
    for path in (private, public):
        if path.exists() and not args.force:
            print(_("%(path)s exists; refusing to overwrite it (--force to replace)", path=path),
                  file=sys.stderr)
            return EXIT_USAGE
    for path in (private, public):
        path.unlink(missing_ok=True)
    if args.kind == "hospital":
        generate_x25519_pair(private, public)
        print(_("hospital key: private %(private)s (keep it on the receiver: %(receiver)s), "
                "public %(public)s (install it on each box: %(box)s)", private=private,
                receiver="[keys] hospital_key", public=public,
                box="[telemetry] hospital_key"))
        return EXIT_OK
    key = signing.generate_key_pair(private, public)
    if args.kind == "hospital-signing":
        print(_("hospital signing key %(key)s: private %(private)s (keep it on the receiver: "
                "%(receiver)s), public %(public)s (%(bundle)s; on each box %(box)s)", key=key,
                private=private, receiver="[keys] hospital_signing_key", public=public,
                bundle="clinibox central bundle --hospital-signing-key",
                box="[telemetry] hospital_signing_key"))
        return EXIT_OK
    print(_("key %(key)s: private %(private)s (keep it on the workstation), public %(public)s "
            "(list it in %(setting)s on each box)", key=key, private=private, public=public,
            setting="[models] trusted_keys"))
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    """Print the embedded defaults as an example file, or check a file."""
    if args.check:
        config_module.load(args.check)
        print(gettext("%(path)s: OK", path=args.check))
        return EXIT_OK
    print(config_module.describe_defaults())
    return EXIT_OK


#: what ``clinibox infer --help`` says after its options
INFER_EPILOG = """\
PATH: DICOM or PNG/JPEG files, folders (walked recursively; files whose content is
DICOM or a PNG/JPEG picture are taken, hidden and other files skipped) and DICOMDIR
files (their image records). Progress goes to stderr.

--labels CSV: UTF-8 with a header row naming the columns 'study' (a Study Instance
UID, or the path of one of the study's files, absolute or relative to the labels
file's folder or to the current folder) and 'label' (1: the study has a lesion,
0: it has none); other columns are ignored. Only studies the model gave a result
for are scored (predicted positive when the study's assessment is 'finding', at
the package's operating threshold); studies not assessable, outside the validated
range or not analysed are listed apart, never counted as negatives. Intervals are
95 %: Wilson score for sensitivity and specificity, DeLong for the AUC.

exit status: 0 every file was analysed; 1 some paths or files gave no result
(not found, not readable, not an image, not analysed), the others were analysed
and the outputs written; 2 nothing could be analysed, or a usage error (bad
option, config or labels file, an output folder that does not exist).
"""


def _add_infer_parser(sub: argparse._SubParsersAction,
                      with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
                      ) -> None:
    """Register ``clinibox infer``."""
    p = with_config(sub.add_parser(
        "infer", help="analyse files and folders now, without the service",
        epilog=INFER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("files", nargs="+", metavar="PATH",
                   help="DICOM/PNG/JPEG files, folders (recursive) or DICOMDIR files")
    p.add_argument("--json", action="store_true",
                   help="print one JSON record per file or path on stdout (English; the "
                        "studies and accuracy go to --summary-json)")
    p.add_argument("--csv", metavar="FILE",
                   help="write one row per study, per lesion and per path without a result")
    p.add_argument("--html", metavar="FILE",
                   help="write a self-contained HTML summary with charts")
    p.add_argument("--labels", metavar="CSV",
                   help="truth per study (see below): adds sensitivity, specificity and AUC")
    p.add_argument("--summary-json", metavar="FILE",
                   help="write the whole batch as JSON: files, studies, accuracy")
    p.add_argument("--no-progress", action="store_true", help="print no progress on stderr")
    p.set_defaults(func=cmd_infer)


def add_parsers(sub: argparse._SubParsersAction,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register the box's own commands: serve, infer, status, results, keys, config."""
    p = with_config(sub.add_parser("serve", help="run the appliance (and the viewer)"))
    p.add_argument("--no-web", action="store_true",
                   help="do not start the viewer (it runs as its own service)")
    p.set_defaults(func=cmd_serve)
    _add_infer_parser(sub, with_config)
    p = with_config(sub.add_parser("status", help="counts, quarantine reasons, last errors"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    p = with_config(sub.add_parser("results", help="every received instance and its result"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--studies", action="store_true",
                   help="one object per study instead: its level, lesions counted once in 3-D "
                        "(a CT or MR series read as a volume) with their volumes")
    p.set_defaults(func=cmd_results)
    p = sub.add_parser("keys", help="make a key pair (model signing, or the hospital's)")
    p.add_argument("action", choices=["generate"])
    p.add_argument("--kind", choices=["signing", "hospital", "hospital-signing"],
                   default="signing",
                   help="signing: Ed25519 for model packages; hospital: X25519 that boxes "
                        "encrypt telemetry to; hospital-signing: Ed25519 the hospital signs "
                        "its verdicts to the boxes with")
    p.add_argument("--out", required=True, help="key path without suffix: writes .pem and .pub")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_keys)
    p = sub.add_parser("config", help="print the example config, or --check FILE")
    p.add_argument("--check", metavar="FILE")
    p.set_defaults(func=cmd_config)
