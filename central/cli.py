"""``clinibox central``: run the hospital receiver and look at what it received.

Subcommands: ``serve``, ``enrol``, ``enrol-code``, ``bundle``, ``revoke``,
``report``, ``alerts``, ``review`` (a verdict, sent back to the box), ``clinic``
(names and counties), ``dead-letters`` (refused messages kept
with their bytes), ``audit-heads`` (the boxes' audit-trail heads as witnessed,
and a device's witness file), ``check-box`` (a signed test sent down, answered by the box)
``check-broker`` (Mosquitto's set-up checked before it starts) and ``config`` (print the
defaults). Exit
status: 0 done, 1 failed, 2 bad usage or configuration (explained in one line).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from central import config as config_module
from central.sql import Database
from central.store import Store
from central.store_open import open_store
from clinibox_common.contracts import downlink
from clinibox_common.errors import EXIT_OK, EXIT_USAGE, CliniboxError
from clinibox_common.i18n import gettext as _
from clinibox_common.i18n import ngettext
from clinibox_common.i18n.error_words import error_words

log = logging.getLogger("clinibox.central")


def cmd_serve(args: argparse.Namespace, config: config_module.CentralConfig) -> int:
    """Receive from the broker until SIGINT/SIGTERM."""
    from central.receiver import MqttService, Receiver
    from clinibox_common.contracts.envelope import load_x25519_private

    if not config.keys.hospital_key:
        raise CliniboxError("[keys] hospital_key: the receiver needs the hospital's X25519 "
                            "private key to decrypt (clinibox keys generate --kind hospital)",
                            exit_status=EXIT_USAGE)
    try:
        hospital_key = load_x25519_private(Path(config.keys.hospital_key))
    except (OSError, ValueError) as exc:
        raise CliniboxError(f"[keys] hospital_key: cannot load {config.keys.hospital_key}: {exc}",
                            exit_status=EXIT_USAGE) from exc
    store = open_store(config)
    _check_downlink_key(config, store)
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)
    try:
        service = MqttService(config, Receiver(config, store, hospital_key))
    except (OSError, ValueError) as exc:  # unreadable certificate or key files
        raise CliniboxError(f"[mqtt] cannot set up TLS: {exc}", exit_status=EXIT_USAGE) from exc
    workers, databases = _side_workers(config, stop)
    log.info("receiving into %s", store.where)
    service.serve(stop)
    stop.set()
    workers.join(timeout=15)
    for database in databases:
        database.close()
    store.close()
    return EXIT_OK


def _check_downlink_key(config: config_module.CentralConfig, store: Store) -> None:
    """Refuse to serve without ``[keys] hospital_signing_key`` while boxes expect verdicts
    (they reported a downlink key: their bundles carry the hospital's downlink signing key);
    without such boxes, warn with the fix (boxes enrolled later would wait in silence)."""
    if config.keys.hospital_signing_key:
        return
    waiting = [f"{b['clinic']}/{b['device']}" for b in store.box_states() if b["downlink_key"]]
    fix = ("make it once with clinibox keys generate --kind hospital-signing --out "
           "/etc/clinibox-central/hospital-signing and set [keys] hospital_signing_key to its "
           ".pem (its .pub is the --hospital-signing-key of every bundle)")
    if waiting:
        shown = ", ".join(waiting[:5]) + (f" and {len(waiting) - 5} more" if len(waiting) > 5
                                          else "")
        raise CliniboxError(f"[keys] hospital_signing_key is not set, but {shown} expect the "
                            "hospital's verdicts and rollouts: nothing could reach them. "
                            f"{fix[0].upper()}{fix[1:]}", exit_status=EXIT_USAGE)
    log.warning("[keys] hospital_signing_key is not set: no verdict or rollout can go down "
                "to any box; %s", fix)


class Supervisor:
    """The side workers of ``serve``, each in a thread of its own, started again should it
    die: a fault of ours logged with its traceback, the worker restarted after
    ``first_wait`` seconds, doubling while it keeps dying, at most ``max_wait``.

    Restarting the one thread (rather than exiting for systemd to restart the process)
    keeps the receiver taking messages meanwhile and needs no ``Restart=`` in the unit;
    the publisher and the notifier keep their state in the database, so a new run of
    either picks up where the dead one stopped.
    """

    def __init__(self, stop: threading.Event, *, first_wait: float = 5.0,
                 max_wait: float = 300.0) -> None:
        """Supervise until ``stop`` is set."""
        self.stop = stop
        self.first_wait = first_wait
        self.max_wait = max_wait
        self.restarts: dict[str, int] = {}
        self._targets: dict[str, Callable[[threading.Event], None]] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._started: dict[str, float] = {}
        self._due: dict[str, float] = {}
        self._deaths: dict[str, int] = {}

    def add(self, name: str, target: Callable[[threading.Event], None]) -> None:
        """Run ``target(stop)`` as the worker ``name`` (started by :meth:`start`)."""
        self._targets[name] = target
        self.restarts[name] = 0
        self._deaths[name] = 0

    def _run(self, name: str) -> None:
        try:
            self._targets[name](self.stop)
        except Exception:  # a fault of ours: logged; check() starts the worker again
            log.exception("the %s thread died", name)

    def _launch(self, name: str, now: float) -> None:
        thread = threading.Thread(target=self._run, args=(name,), name=name, daemon=True)
        self._threads[name] = thread
        self._started[name] = now
        self._due.pop(name, None)
        thread.start()

    def start(self, *, watch: bool = True) -> None:
        """Start every worker, and (``watch``) a thread that calls :meth:`check` every
        ``first_wait`` seconds."""
        now = time.monotonic()
        for name in self._targets:
            self._launch(name, now)
        if watch and self._targets:
            threading.Thread(target=self._watch, name="supervisor", daemon=True).start()

    def _watch(self) -> None:
        while not self.stop.wait(self.first_wait):
            try:
                self.check()
            except Exception:  # never let the watcher die either
                log.exception("the supervisor failed a round")

    def check(self, now: float | None = None) -> list[str]:
        """Note workers that died and start again those whose wait is over; their names."""
        now = time.monotonic() if now is None else now
        started: list[str] = []
        for name, thread in list(self._threads.items()):
            if thread.is_alive() or self.stop.is_set():
                continue
            if name not in self._due:
                lived = now - self._started[name]
                self._deaths[name] = 1 if lived >= self.max_wait else self._deaths[name] + 1
                wait = min(self.first_wait * 2.0 ** (self._deaths[name] - 1), self.max_wait)
                self._due[name] = now + wait
                log.error("the %s thread stopped; starting it again in %.0f s", name, wait)
            if now >= self._due[name]:
                self.restarts[name] += 1
                self._launch(name, now)
                started.append(name)
        return started

    def join(self, timeout: float) -> None:
        """Wait for the workers to end (after ``stop``), at most ``timeout`` seconds each."""
        for thread in list(self._threads.values()):
            thread.join(timeout=timeout)


def _side_workers(config: config_module.CentralConfig,
                  stop: threading.Event) -> tuple[Supervisor, list[Database]]:
    """Start the downlink publisher and the webhook notifier (each on its own connection to
    the database ``cmd_serve`` made ready), supervised; the workers and their connections."""
    from central.downlink_publisher import DownlinkPublisher
    from central.notify import Notifier, load_secret
    from clinibox_common.contracts.signing import load_private_key

    workers = Supervisor(stop)
    databases: list[Database] = []
    if config.keys.hospital_signing_key:
        try:
            signing_key = load_private_key(Path(config.keys.hospital_signing_key))
        except (OSError, ValueError, CliniboxError) as exc:
            raise CliniboxError(f"[keys] hospital_signing_key: cannot load "
                                f"{config.keys.hospital_signing_key}: {exc}",
                                exit_status=EXIT_USAGE) from exc
        databases.append(Database(config.database.url))
        publisher = DownlinkPublisher(config, databases[-1], signing_key)
        workers.add("downlink", publisher.serve)
    if config.notify.url:
        databases.append(Database(config.database.url))
        secret = load_secret(config.notify.secret_file)
        notifier = Notifier(databases[-1], config.notify, secret)
        workers.add("webhook", notifier.serve)
        if config.notify.format == "fhir":  # the verdicts too, as DiagnosticReports
            databases.append(Database(config.database.url))
            workers.add("webhook-verdicts", Notifier(databases[-1], config.notify, secret,
                                                     table="webhook_verdicts").serve)
    workers.start()
    return workers, databases


def cmd_enrol(args: argparse.Namespace, config: config_module.CentralConfig) -> int:
    """Trust a device's signing key for its clinic (re-enrolling replaces the key)."""
    try:
        pem = Path(args.key).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliniboxError(_("cannot read the device key %(path)s: %(why)s", path=args.key,
                              why=error_words(exc)), exit_status=EXIT_USAGE) from exc
    store = open_store(config)
    try:
        record = store.enrol(args.clinic, args.device, pem, replace=args.replace)
    except ValueError as exc:
        raise CliniboxError(str(exc), exit_status=EXIT_USAGE) from exc
    print(_("enrolled %(box)s with key %(key)s", box=f"{record.clinic}/{record.device}",
            key=record.key_id))
    _receive_waiting(config, store, record.clinic, record.device)
    return EXIT_OK


def _receive_waiting(config: config_module.CentralConfig, store: Store, clinic: str,
                     device: str) -> None:
    """Take in what the box sent before it was enrolled (its dead letters refused as an
    unknown device), and say what came of it."""
    from central.receiver import STORED, Receiver
    from clinibox_common.contracts.envelope import load_x25519_private

    if not config.keys.hospital_key or not store.waiting_letters(clinic, device):
        return
    try:
        hospital_key = load_x25519_private(Path(config.keys.hospital_key))
    except (OSError, ValueError) as exc:
        log.warning("[keys] hospital_key: cannot load %s (%s): the box's messages sent before "
                    "its enrolment stay refused", config.keys.hospital_key, exc)
        if not _english():  # the log line is the journal's: the reader hears it in words
            print(_("%(setting)s %(path)s cannot be read (%(why)s): the messages %(box)s sent "
                    "before it was enrolled stay refused", setting="[keys] hospital_key",
                    path=config.keys.hospital_key, why=error_words(exc),
                    box=f"{clinic}/{device}"), file=sys.stderr)
        return
    from central import labels

    outcomes = Receiver(config, store, hospital_key).receive_waiting(clinic, device)
    others = _(", ").join(_("%(n)s %(why)s", n=n,
                            why=why if _english() else labels.outcome(why))
                         for why, n in sorted(outcomes.items()) if why != STORED)
    said = _("received %(n)s message(s) %(box)s sent before it was enrolled",
             n=outcomes[STORED], box=f"{clinic}/{device}")
    print(_("%(event)s (%(reason)s)", event=said, reason=others) if others else said)


def cmd_enrol_code(args: argparse.Namespace, config: config_module.CentralConfig) -> int:
    """Enrol a device from the code ``clinibox provision`` printed (typed, pasted or scanned)."""
    from clinibox_common.contracts.enrolment import EnrolmentError, parse_code

    text = sys.stdin.readline() if args.code == "-" else args.code
    try:
        code = parse_code(text)
    except EnrolmentError as exc:
        raise CliniboxError(str(exc), exit_status=EXIT_USAGE) from exc
    try:
        store = open_store(config)
        record = store.enrol(code.clinic, code.device, code.public_key_pem,
                             replace=args.replace)
    except ValueError as exc:
        raise CliniboxError(str(exc), exit_status=EXIT_USAGE) from exc
    print(_("enrolled %(box)s with key %(key)s", box=f"{record.clinic}/{record.device}",
            key=record.key_id))
    _receive_waiting(config, store, record.clinic, record.device)
    return EXIT_OK


def cmd_bundle(args: argparse.Namespace, config: config_module.CentralConfig) -> int:
    """Issue a box's client certificate with the hospital CA and write its enrolment bundle."""
    from central.bundle import check_for_receiver, make_bundle, write_and_describe
    from clinibox_common.contracts.enrolment import EnrolmentError

    try:
        bundle = make_bundle(
            ca_cert_path=Path(args.ca_cert), ca_key_path=Path(args.ca_key), clinic=args.clinic,
            device=args.device, broker_host=args.broker_host, broker_port=args.broker_port,
            hospital_key_path=Path(args.hospital_key),
            signing_key_paths=[Path(k) for k in args.signing_key], days=args.days,
            hospital_signing_key_path=(Path(args.hospital_signing_key)
                                       if args.hospital_signing_key else None),
            model_name=args.model or "")
        check_for_receiver(bundle, downlink=not args.no_downlink,
                           hospital_signing_key=config.keys.hospital_signing_key,
                           hospital_key=config.keys.hospital_key,
                           rollout_keys=tuple(config.rollouts.trusted_keys))
        print(write_and_describe(bundle, Path(args.out), overwrite=args.force))
    except EnrolmentError as exc:
        raise CliniboxError(_("no bundle written: %(why)s", why=str(exc))) from exc
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace, config: config_module.CentralConfig) -> int:
    """Refuse a device's messages from now on."""
    where = f"{args.clinic}/{args.device}"
    if not open_store(config).revoke(args.clinic, args.device):
        raise CliniboxError(_("device %(box)s is not enrolled", box=repr(where)))
    print(_("revoked %(box)s: its messages will be refused", box=where))
    return EXIT_OK


def cmd_report(args: argparse.Namespace, config: config_module.CentralConfig) -> int:
    """Print the per-device health report."""
    from central.report import build_report, render_table

    rows = build_report(open_store(config), config.health, time.time())
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        sys.stdout.write(render_table(rows))
    return EXIT_OK


def cmd_alerts(args: argparse.Namespace, config: config_module.CentralConfig) -> int:
    """List alerts, newest first."""
    from central import labels
    from central.report import format_time

    alerts = open_store(config).alerts(waiting=args.waiting, limit=args.limit)
    if args.json:
        print(json.dumps(alerts, indent=2))
        return EXIT_OK
    if not alerts:
        print(_("no alerts waiting for review") if args.waiting else _("no alerts"))
        return EXIT_OK
    english = _english()
    print(_row([(_("ID"), 6, True), (_("RECEIVED (UTC)"), 16), (_("CLINIC/DEVICE"), 24),
                (_("FINDING"), 12), (_("SCORE"), 5, True), (_("MOD"), 4), (_("STUDY"), 12),
                (_("STATE"), 12), (_("VERDICT"), 12), (_("REVIEWED"), 0)]))
    for a in alerts:
        where = f"{a['clinic']}/{a['device']}"
        if english:
            verdict = a["verdict"] or "-"
            if a["follow_up_months"]:
                verdict += f" {a['follow_up_months']}m"
            finding, state = a["finding"], a["state"]
        else:
            verdict = labels.verdict(a["verdict"], a["follow_up_months"])
            finding, state = labels.finding(a["finding"]), labels.state(a["state"])
        print(_row([(str(a["id"]), 6, True), (format_time(a["received_at"]), 16), (where, 24),
                    (finding, 12), (f"{a['score']:5.2f}", 5, True), (a["modality"], 4),
                    (a["study_ref"][:12], 12), (state, 12), (verdict, 12),
                    (format_time(a["reviewed_at"]) if a["reviewed_at"] else _("waiting"), 0)]))
    return EXIT_OK


def _english() -> bool:
    """Whether the command speaks English (its tables then show the codes, as always)."""
    from clinibox_common.i18n import ENGLISH, current

    return current() == ENGLISH


def _row(cells: list[tuple[Any, ...]]) -> str:
    """A table's line: each cell (text, columns[, right-aligned]) padded to its terminal
    columns (a Chinese character takes two), two spaces between; the last one unpadded."""
    from central.report import pad

    return "  ".join(pad(str(cell[0]), cell[1], len(cell) > 2 and cell[2])
                     for cell in cells).rstrip()


def cmd_review(args: argparse.Namespace, config: config_module.CentralConfig) -> int:
    """Give alerts a verdict; each goes back to its box. The verdict, note and months are
    checked by the one rule (``downlink.review_problem``), refused in the command's words
    (``reviews.refusal``)."""
    from central.reviews import refusal

    problem = downlink.review_problem(args.verdict, args.note, args.months)
    if problem is not None:
        raise CliniboxError(refusal(problem, args.verdict), exit_status=EXIT_USAGE)
    from central import labels

    account = args.account or f"cli:{getpass.getuser()}"
    store = open_store(config)
    unknown = sorted(set(args.ids) - store.existing_alert_ids(args.ids))
    done = 0
    for alert_id in sorted(set(args.ids) - set(unknown)):
        store.review_alert(alert_id, args.verdict, args.note, account,
                           follow_up_months=args.months, address="cli")
        done += 1
    # nothing reviewed: the refusal below says why, with no "reviewed 0 alerts" before it
    if done and _english():
        print(f"reviewed {done} alert{'s' if done != 1 else ''}: {args.verdict}"
              f"{f' in {args.months} months' if args.months else ''} (sent back to the box)")
    elif done:
        print(ngettext("reviewed %(num)d alert: %(verdict)s (sent back to the box)",
                       "reviewed %(num)d alerts: %(verdict)s (sent back to the box)", done,
                       verdict=labels.verdict(args.verdict, args.months)))
    if unknown:
        raise CliniboxError(_("no such alert: %(ids)s",
                              ids=_(", ").join(str(i) for i in unknown)))
    return EXIT_OK


def cmd_clinic(args: argparse.Namespace, config: config_module.CentralConfig) -> int:
    """Name a clinic and its county, or list the named clinics."""
    store = open_store(config)
    if args.action == "set":
        if not args.clinic:
            raise CliniboxError(_("clinic set needs CLINIC"), exit_status=EXIT_USAGE)
        try:
            store.set_clinic(args.clinic, args.name or "", args.county or "")
        except ValueError as exc:
            raise CliniboxError(str(exc), exit_status=EXIT_USAGE) from exc
        print(_("clinic %(clinic)s: %(name)s (%(county)s)", clinic=args.clinic,
                name=args.name or "-", county=args.county or "-"))
        return EXIT_OK
    clinics = store.clinics()
    if args.json:
        print(json.dumps(clinics, indent=2, ensure_ascii=False))
    elif not clinics:
        print(_("no clinics named"))
    else:
        print(_row([(_("CLINIC"), 24), (_("COUNTY"), 20), (_("NAME"), 0)]))
        for c in clinics:
            print(_row([(c["clinic"], 24), (c["county"], 20), (c["name"], 0)]))
    return EXIT_OK


def cmd_dead_letters(args: argparse.Namespace, config: config_module.CentralConfig) -> int:
    """List the refused messages kept with their bytes, newest first; save one's bytes."""
    from central import labels
    from central.report import format_time

    store = open_store(config)
    if args.save is not None:
        letter_id, out = args.save
        data = store.dead_letter_bytes(int(letter_id)) if letter_id.isdigit() else None
        if data is None:
            raise CliniboxError(_("no such dead letter: %(id)s", id=letter_id))
        try:
            Path(out).write_bytes(data)
        except OSError as exc:
            raise CliniboxError(_("cannot write %(path)s: %(why)s", path=out,
                                  why=error_words(exc))) from exc
        print(_("wrote dead letter %(id)s (%(n)s bytes) to %(path)s", id=letter_id,
                n=len(data), path=out))
        return EXIT_OK
    letters = store.dead_letters(limit=args.limit)
    if args.json:
        print(json.dumps(letters, indent=2))
        return EXIT_OK
    count, size = store.dead_letter_totals()
    if not letters:
        print(_("no dead letters"))
        return EXIT_OK
    english = _english()
    print(_row([(_("ID"), 6, True), (_("RECEIVED (UTC)"), 16), (_("REASON"), 15),
                (_("BYTES"), 7, True), (_("TOPIC"), 0)]))
    for letter in letters:
        reason = letter["reason"] if english else labels.outcome(letter["reason"])
        print(_row([(str(letter["id"]), 6, True), (format_time(letter["received_at"]), 16),
                    (reason, 15), (str(letter["size"]), 7, True), (letter["topic"], 0)]))
    print("\n" + ngettext("%(num)d dead letter kept, %(bytes)s bytes",
                          "%(num)d dead letters kept, %(bytes)s bytes", count, bytes=size))
    return EXIT_OK


def _device_arg(text: str) -> tuple[str, str]:
    clinic, _, device = text.partition("/")
    if not clinic or not device:
        raise CliniboxError(_("--device: expected CLINIC/DEVICE, got %(text)s", text=repr(text)),
                            exit_status=EXIT_USAGE)
    return clinic, device


def cmd_check_box(args: argparse.Namespace, config: config_module.CentralConfig) -> int:
    """Send a box a signed link check and wait for its answer (both directions, day one)."""
    from central import link_check
    from clinibox_common.i18n import formats

    clinic, device = _device_arg(args.box)
    if args.timeout <= 0:
        raise CliniboxError(_("--timeout must be more than 0 seconds"), exit_status=EXIT_USAGE)
    database = open_store(config).database
    problem = link_check.refusal(database, config, clinic, device)
    if problem is not None:
        raise CliniboxError(_("no test sent to %(box)s: %(why)s")
                            % {"box": f"{clinic}/{device}",
                               "why": link_check.problem_words(problem)},
                            exit_status=EXIT_USAGE)
    account = args.account or f"cli:{getpass.getuser()}"
    seq = link_check.queue(database, clinic, device, account=account)
    print(_("test %(seq)d queued for %(box)s; waiting up to %(seconds)d s for the box's answer")
          % {"seq": seq, "box": f"{clinic}/{device}", "seconds": int(args.timeout)}, flush=True)
    found = link_check.wait(database, clinic, device, seq, timeout=args.timeout)
    if found.confirmed:
        print(_("%(box)s: %(state)s (%(seconds)s s after the test was queued)")
              % {"box": f"{clinic}/{device}",
                 "state": link_check.state_words(found.state),
                 "seconds": formats.decimal(time.time() - found.queued_at)})
        return EXIT_OK
    seen = formats.moment(found.box_last_seen) if found.box_last_seen else _("never")
    why = link_check.diagnosis(found)
    assert why is not None
    raise CliniboxError(_("%(box)s: %(state)s. %(why)s The box's last status: %(seen)s.")
                        % {"box": f"{clinic}/{device}",
                           "state": link_check.state_words(found.state),
                           "why": link_check.problem_words(why), "seen": seen})


def cmd_check_broker(args: argparse.Namespace, config: config_module.CentralConfig) -> int:
    """Check Mosquitto's configuration before starting it: files, certificates, TLS, ACL."""
    from central import broker_check

    try:
        found = broker_check.check(Path(args.conf), receiver=args.receiver_user)
    except OSError as exc:
        raise CliniboxError(_("cannot read the broker's configuration %(path)s: %(why)s",
                              path=args.conf, why=error_words(exc)),
                            exit_status=EXIT_USAGE) from exc
    for finding in found:
        print(_("%(problem)s: %(fix)s", problem=broker_check.problem_words(finding.problem),
                fix=finding.fix))
    if found:
        raise CliniboxError(_("the broker is not ready: %(n)s problem(s) above", n=len(found)),
                            exit_status=EXIT_USAGE)
    print(_("broker configuration %(path)s: files readable by the broker, certificates "
            "paired and from the CA, TLS with client certificates, ACL complete",
            path=args.conf))
    return EXIT_OK


def cmd_audit_heads(args: argparse.Namespace, config: config_module.CentralConfig) -> int:
    """Each device's latest witnessed audit head and every alarming verdict; a witness file."""
    from central import labels
    from central.audit_witness import ALARMS, witness_document
    from central.report import format_time

    store = open_store(config)
    where = _device_arg(args.device) if args.device else None
    if args.witness_file:
        if where is None:
            raise CliniboxError(_("--witness-file needs --device CLINIC/DEVICE"),
                                exit_status=EXIT_USAGE)
        document = witness_document(*where, store.audit_heads(*where))
        Path(args.witness_file).write_text(json.dumps(document, indent=2) + "\n",
                                           encoding="utf-8")
        print(_("wrote %(n)s witnessed heads of %(box)s to %(path)s",
                n=len(document["heads"]), box=f"{where[0]}/{where[1]}", path=args.witness_file))
        return EXIT_OK
    latest = store.latest_audit_heads()
    heads = store.audit_heads(*where) if where else store.audit_heads()
    if where:
        latest = {key: head for key, head in latest.items() if key == where}
    alarms = [h for h in heads if h["verdict"] in ALARMS]
    if args.json:
        print(json.dumps({"latest": list(latest.values()), "alarms": alarms}, indent=2))
        return EXIT_OK
    if not latest:
        print(_("no audit heads witnessed"))
        return EXIT_OK
    english = _english()

    def table(rows: list[dict]) -> None:
        from central.report import width

        verdicts = [head["verdict"] if english else labels.audit_verdict(head["verdict"])
                    for head in rows]
        columns = max([9, *(width(verdict) for verdict in verdicts)])
        print(_row([(_("CLINIC/DEVICE"), 24), (_("SEQ"), 8, True), (_("ROW"), 8, True),
                    (_("HASH"), 16), (_("VERDICT"), columns), (_("RECEIVED (UTC)"), 0)]))
        for head, verdict in zip(rows, verdicts, strict=True):
            print(_row([(head["clinic"] + "/" + head["device"], 24), (head["seq"], 8, True),
                        (head["row"], 8, True), (head["hash"][:16], 16), (verdict, columns),
                        (format_time(head["received_at"]), 0)]))

    table(list(latest.values()))
    if alarms:
        print("\n" + _("verdicts to look at (%(verdicts)s):", verdicts=_(", ").join(
            v if english else labels.audit_verdict(v) for v in ALARMS)))
        table(alarms)
    return EXIT_OK


def cmd_config(args: argparse.Namespace, config: config_module.CentralConfig) -> int:
    """Print the embedded defaults as a commented TOML file."""
    print(config_module.describe_defaults())
    return EXIT_OK


#: commands that run as services: their logs stay English whatever the terminal's language
def add_commands(command: Callable[[str, Callable[..., int], str], argparse.ArgumentParser]
                 ) -> None:
    """Register the receiver's commands with ``command(name, func, help)``, which gives each its
    ``--config`` and ``--verbose``; ``clinibox/central_command.py`` assembles the command line."""
    command("serve", cmd_serve, "receive messages from the broker until stopped")
    enrol = command("enrol", cmd_enrol, "trust a device's signing key")
    enrol.add_argument("--clinic", required=True, help="clinic id (as in the box's topic)")
    enrol.add_argument("--device", required=True, help="device id")
    enrol.add_argument("--key", required=True, help="the device's Ed25519 public key (PEM)")
    enrol.add_argument("--replace", action="store_true",
                       help="replace the key of an enrolled clinic/device (the box was replaced)")
    code = command("enrol-code", cmd_enrol_code,
                   "trust a device from the code (or QR code) clinibox provision printed")
    code.add_argument("code", help="the CBX1:… code; - reads one line from stdin (a scanner)")
    code.add_argument("--replace", action="store_true",
                      help="replace the key of an enrolled clinic/device (the box was replaced)")
    bundle = command("bundle", cmd_bundle,
                     "issue a box's client certificate and write its enrolment bundle")
    bundle.add_argument("--ca-cert", required=True, help="the hospital CA's certificate (PEM)")
    bundle.add_argument("--ca-key", required=True, help="the hospital CA's private key (PEM)")
    bundle.add_argument("--clinic", required=True, help="clinic id")
    bundle.add_argument("--device", required=True, help="device id")
    bundle.add_argument("--broker-host", required=True, help="broker host the box connects to")
    bundle.add_argument("--broker-port", type=int, default=8883, help="broker TLS port")
    bundle.add_argument("--hospital-key", required=True, metavar="HOSPITAL.pub",
                        help="the hospital's X25519 public key (PEM)")
    bundle.add_argument("--hospital-signing-key", metavar="HOSPITAL-SIGNING.pub",
                        help="the hospital's Ed25519 public key that signs its verdicts and "
                             "rollouts to the box (clinibox keys generate --kind "
                             "hospital-signing); required unless --no-downlink")
    bundle.add_argument("--no-downlink", action="store_true",
                        help="make a box that only sends alerts up: no verdict or rollout can "
                             "ever reach it")
    bundle.add_argument("--model", metavar="NAME",
                        help="the model package the box is to run (its name in the package's "
                             "manifest): the box takes it as its [models] name, so the "
                             "hospital's rollouts of it reach a box nobody configured by hand")
    bundle.add_argument("--signing-key", required=True, action="append", metavar="KEY.pub",
                        help="an Ed25519 model-signing public key the box trusts (repeatable)")
    bundle.add_argument("--days", type=int, default=3 * 365,
                        help="days the client certificate is valid")
    bundle.add_argument("--out", required=True, help="the bundle file to write (mode 0600)")
    bundle.add_argument("--force", action="store_true", help="overwrite --out")
    revoke = command("revoke", cmd_revoke, "refuse a device's messages from now on")
    revoke.add_argument("--clinic", required=True, help="clinic id")
    revoke.add_argument("--device", required=True, help="device id")
    report = command("report", cmd_report, "health of every device")
    report.add_argument("--json", action="store_true", help="machine-readable output")
    alerts = command("alerts", cmd_alerts, "list alerts, newest first")
    alerts.add_argument("--waiting", action="store_true", help="only unreviewed alerts")
    alerts.add_argument("--limit", type=int, default=None, help="show at most this many")
    alerts.add_argument("--json", action="store_true", help="machine-readable output")
    review = command("review", cmd_review,
                     "give alerts a verdict, sent back to each alert's box")
    review.add_argument("ids", nargs="+", type=int, metavar="ID", help="alert id")
    review.add_argument("--verdict", required=True,
                        choices=downlink.VERDICTS,
                        help="refer the patient, follow up in --months, no action, or ask the "
                             "clinic to send the de-identified case")
    review.add_argument("--note", default="", help="a short note for the clinic (no names)")
    review.add_argument("--months", type=int, default=None,
                        help="months until the follow-up (--verdict follow_up only)")
    review.add_argument("--as", dest="account", default=None, metavar="NAME",
                        help="who reviewed, for the audit trail (default cli:<unix user>)")
    clinic = command("clinic", cmd_clinic, "name clinics and their counties, or list them")
    clinic.add_argument("action", choices=["set", "list"])
    clinic.add_argument("clinic", nargs="?", help="clinic id (set)")
    clinic.add_argument("--name", help="the clinic's name")
    clinic.add_argument("--county", help="the clinic's county")
    clinic.add_argument("--json", action="store_true", help="machine-readable output (list)")
    letters = command("dead-letters", cmd_dead_letters,
                      "list refused messages kept with their bytes, newest first")
    letters.add_argument("--limit", type=int, default=100, help="show at most this many")
    letters.add_argument("--json", action="store_true", help="machine-readable output")
    letters.add_argument("--save", nargs=2, metavar=("ID", "FILE"),
                         help="write one dead letter's bytes to FILE")
    heads = command("audit-heads", cmd_audit_heads,
                    "the boxes' audit-trail heads as witnessed, and alarming verdicts")
    heads.add_argument("--device", metavar="CLINIC/DEVICE", help="only this device")
    heads.add_argument("--json", action="store_true", help="machine-readable output")
    heads.add_argument("--witness-file", metavar="OUT.json",
                       help="write the device's witnessed heads for clinibox audit --verify "
                            "--witness (needs --device)")
    check = command("check-box", cmd_check_box,
                    "send a box a signed test and wait for its answer: proves that messages "
                    "go down to the box and come back up")
    check.add_argument("box", metavar="CLINIC/DEVICE", help="the box, as enrolled")
    check.add_argument("--timeout", type=float, default=120.0,
                       help="seconds to wait for the box's answer (default 120)")
    check.add_argument("--as", dest="account", default=None, metavar="NAME",
                       help="who tested, for the audit trail (default cli:<unix user>)")
    broker = command("check-broker", cmd_check_broker,
                     "check Mosquitto's configuration for the boxes before starting it")
    broker.add_argument("--conf", default="/etc/mosquitto/mosquitto.conf",
                        help="Mosquitto's configuration (its include_dir is read too)")
    broker.add_argument("--receiver-user", default="central-receiver",
                        help="the receiver certificate's CN, the ACL's user")
    command("config", cmd_config, "print the default configuration")
