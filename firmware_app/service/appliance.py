"""The wiring of the appliance, written out in one place.

    DICOM SCP ─┐
    USB import ┴─> Lander (spool fsync + queue commit) ─> ACK
    Worker: queue → decode → quality → ModelRunner → aggregate → ResultStore
            (at a lower CPU weight than receiving: priority.py)
    StudyCompleter: stable studies → SR / SEG / key image → DICOM outbox; their alert may go
    TelemetryProducer: results → alerts, summaries, heartbeats → Outbox (SQLite)
    Publisher: Outbox → seal (encrypt + sign) → MQTT over TLS → hospital
    DicomSender: DICOM outbox (files + SQLite) → C-STORE → the clinic's PACS destinations
    RecordsSender: records outbox (SQLite) → HL7 v2 (MLLP) or FHIR → each clinic information
                   system, a thread each; fed at study completion and by the hospital's verdicts
    ViewerProcess: `clinibox web` (Flask + gunicorn, HTTPS) as a restarted child process
    LiveProcess: `clinibox live SOURCE` per [[live.sources]], a restarted child process each
    WorklistPoller: the clinic's Modality Worklist (C-FIND) → worklist rows the live page reads
    PriorsFetcher: a study with a finding → its earlier studies from the PACS (C-FIND, C-GET)

``Appliance.start`` brings the parts up in order: first the intake (database,
spool recovery, then the listeners: accepting an object needs only the spool
and the queue, so nothing is accepted before it can be stored), then the
analysis (model verification, backend choice and golden cases, worker,
telemetry, study completion, PACS sender); ``stop`` takes them down in
reverse. ``serve`` runs it under systemd's notify protocol: ``READY=1`` once
the box receives (the model's timing and golden cases follow; objects wait in
the queue meanwhile), ``STATUS=`` when the model runs, ``WATCHDOG=1`` only
while the worker's loop and every component thread are alive, and it returns ``"reload"`` when
``clinibox model install`` or ``rollback`` (or the trial) switched the model. A stop asked for
while the model is still being verified and timed ends that work at once (its timing process
killed, nothing of it kept) instead of waiting for it: a technician's ``systemctl restart``
after a model install does not wait out the runtime timing.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import threading
import time
from collections.abc import Callable

from clinibox_common.contracts.egress import EVENT_REASONS, MODEL_ID, MODEL_REF
from clinibox_common.contracts.envelope import load_x25519_public
from clinibox_common.contracts.manifest import ModelPackage, PackageError
from clinibox_common.contracts.signing import manifest_digest
from engine.golden import load_verified
from engine.inference.runner import ModelRunner
from engine.model_package import load_package
from engine.model_stages import load_stage
from firmware_app.dicom_out.sender import DicomSender
from firmware_app.dicom_out.source import ModelIdentity
from firmware_app.ingest.dicom_scp import StorageSCP
from firmware_app.ingest.landing import Lander
from firmware_app.ingest.native_receiver import NativeStorageSCP, ReceiverFailed
from firmware_app.ingest.priors import PriorsFetcher
from firmware_app.ingest.usb import FolderImporter
from firmware_app.ingest.worklist import WorklistPoller
from firmware_app.models import calibration
from firmware_app.models.install import report_event
from firmware_app.models.store import (
    manifest_model_id,
    package_config,
    resolve_package_root,
    routed_names,
    runtime_timings_path,
    store_for,
)
from firmware_app.models.trial import ModelTrial
from firmware_app.models.updates import Updater
from firmware_app.records.queue import queue_verdict
from firmware_app.records.sender import RecordsSender
from firmware_app.service.arrivals import Arrivals
from firmware_app.service.live_process import LiveProcess
from firmware_app.service.priority import lower_new_native_threads, native_threads
from firmware_app.service.study_completion import StudyCompleter
from firmware_app.service.systemd_notify import Notifier
from firmware_app.service.viewer_process import ViewerProcess
from firmware_app.service.worker import Worker
from firmware_app.settings.box import Config
from firmware_app.settings.dicom import DicomConfig
from firmware_app.settings.models import DEMO_TRUST_WARNING
from firmware_app.storage import db, event_codes, model_offers
from firmware_app.storage.queue import JobQueue
from firmware_app.storage.spool import Spool, make_spool
from firmware_app.telemetry.downlink import downlink_receiver
from firmware_app.telemetry.identity import load_identity
from firmware_app.telemetry.messages import ModelFacts
from firmware_app.telemetry.mqtt import Publisher
from firmware_app.telemetry.package_fetch import ChunkFetcher
from firmware_app.telemetry.service import TelemetryProducer

log = logging.getLogger(__name__)


def load_runner(config: Config) -> ModelRunner:
    """Find, verify and load the model package (and its second stage), check their golden
    cases on the chosen backends."""
    package = load_package(resolve_package_root(config), config.trusted_key_paths)
    loaded, golden = load_verified(package, config.runtime,
                                   runtime_timings_path(config, package.name))
    try:
        stage = load_stage(package, config.runtime, loaded.backend.key)
    except Exception:
        loaded.close()
        raise
    runner = ModelRunner(package, loaded.backend, loaded.artifact.label, stage,
                         package.thresholds_for(loaded.artifact))
    runner.validation = dict(loaded.artifact.validation)
    apply_kept_threshold(config, runner)
    log.info("model %s on %s (%s); %s", package.model_id, runner.backend_label, loaded.reason,
             golden.describe())
    runner.fell_back = bool(loaded.fell_back_from)
    if loaded.fell_back_from:
        # the box falls back only after the candidate it chose and loaded failed its golden
        # cases (one that does not load at all is a PackageError, load_failed, above); the
        # fallbacks that failed after it are in the note
        report_event(config, "runtime_fallback", "golden_cases_failed", package.model_id,
                     running=package.model_id,
                     note=f"model {package.model_id} runs on {runner.backend_label}: "
                          + "; ".join(f"{label} failed ({why})"
                                      for label, why in loaded.fell_back_from.items()))
    return runner


def apply_kept_threshold(config: Config, runner: ModelRunner) -> None:
    """Give ``runner`` the clinic's own finding threshold the box last set
    (``models/calibration.py``); the package's when calibration is off, when none was set,
    or when it cannot be read. Read-only: loading a model never makes a database."""
    if config.models.calibration == "off" or not config.database_path.exists():
        return
    try:
        conn = sqlite3.connect(f"{config.database_path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            calibration.apply_kept(conn, runner, config.models)
        finally:
            conn.close()
    except sqlite3.Error as exc:  # an older schema (not migrated yet), or unreadable
        log.warning("the clinic's threshold could not be read (the package's stands): %s", exc)


#: a model the routing rules name that stays unavailable is reported once a day, not at
#: every start (a box restarted in a loop would otherwise repeat it each time)
UNAVAILABLE_REPORT_INTERVAL = 24 * 3600.0


def report_unavailable_model(config: Config, name: str, running: str,
                             exc: PackageError) -> None:
    """Tell the hospital that the model ``name``, which the routing rules name, is not
    running (a ``model_unavailable`` device event; the box runs ``running``).

    The event names the model by its id, ``name@version`` of the package the box
    would load, or by its name alone when no version of it is on the box
    (reason ``not_installed``); else the reason is the refusal's code
    (``signature``, ``tampered``, ``golden_cases_failed``, ``load_failed`` …).
    The refusal's words, which may hold paths, stay in the box's event log. The same
    event is queued at most once in :data:`UNAVAILABLE_REPORT_INTERVAL`.
    """
    try:
        version = resolve_package_root(package_config(config, name)).name
    except PackageError:
        version = ""
    subject = f"{name}@{version}" if MODEL_ID.fullmatch(f"{name}@{version}") else name
    reason = ("not_installed" if not version
              else exc.code if exc.code in EVENT_REASONS else "load_failed")
    if not MODEL_REF.fullmatch(subject):
        log.warning("model %r named by the routing rules is not a package name; the hospital "
                    "is not told", name)
        return
    report_event(config, "model_unavailable", reason, subject, running=running,
                 note=f"model_unavailable ({reason}): {subject}, named by the routing rules",
                 once_per_s=UNAVAILABLE_REPORT_INTERVAL)


def load_runner_on_trial(config: Config, trial: ModelTrial) -> ModelRunner:
    """``load_runner``, rolling back to the previous package when the one on trial fails."""
    trial.before_load()
    try:
        runner = load_runner(config)
    except PackageError as exc:
        reason = "golden_cases_failed" if exc.code == "golden_cases_failed" else "load_failed"
        log.error("model package failed to start: %s", exc)
        if not trial.load_failed(reason):
            raise
        runner = load_runner(config)
    trial.started(runner.package.version)
    return runner


def _labels(package: ModelPackage) -> list[str]:
    return list(package.manifest.get("labels") or ["finding"])


def model_facts(package: ModelPackage, *others: ModelPackage,
                runner: ModelRunner | None = None) -> ModelFacts:
    """What telemetry says about the running model (the box's own); the finding labels of
    every running model (``others``: those the routing rules name) pass the egress gate,
    and each one's alert names its own labels and alert threshold. With ``runner`` (the box
    analyses), the runtime it runs on and whether that is a fallback."""
    labels = [label for p in (package, *others) for label in _labels(p)]
    return ModelFacts(package.model_id, tuple(dict.fromkeys(labels)),
                      package.thresholds.get("alert", 1.0),
                      tuple(ModelFacts(p.model_id, tuple(_labels(p)),
                                       p.thresholds.get("alert", 1.0)) for p in others),
                      runtime=runner.backend.key if runner is not None else "",
                      runtime_fallback=runner.fell_back if runner is not None else False,
                      manifest_digest=manifest_digest(package.manifest))


def start_storage_scp(config: DicomConfig, lander: Lander,
                      on_stored: Callable[[], None]) -> StorageSCP | NativeStorageSCP:
    """Start the DICOM receiver ``[dicom] receiver`` names and return it: the native front
    (``auto``: where it is built and starts), else pynetdicom. Both land through the same
    ``Lander`` and ack rule."""
    if config.receiver != "pynetdicom":
        native = NativeStorageSCP(config, lander, on_stored)
        try:
            native.start()
            return native
        except ReceiverFailed as exc:  # not built here, or it cannot run (its libraries?)
            if config.receiver == "native":
                raise
            log.warning("DICOM: %s; pynetdicom receives", exc)
    scp = StorageSCP(config, lander, on_stored=on_stored)
    scp.start()
    return scp


class Appliance:
    """Every component of one box, started and stopped together."""

    def __init__(self, config: Config, viewer: ViewerProcess | None = None,
                 live: list[LiveProcess] | None = None) -> None:
        self.config = config
        self.viewer = viewer
        #: one restarted child per ``[[live.sources]]`` (``service/live_process.py``)
        self.live = list(live or [])
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        #: when objects last arrived: the worker waits for a burst to pass (arrivals.py)
        self.arrivals = Arrivals(self.wake)
        self.outbound = threading.Event()
        #: set after committing rows to the DICOM outbox: the sender sends them at once
        self.pacs_wake = threading.Event()
        #: one per records sender (``_start_records_senders``)
        self.records_wakes: list[threading.Event] = []
        self.threads: list[threading.Thread] = []
        self.scp: StorageSCP | NativeStorageSCP | None = None
        self.spool: Spool | None = None
        #: fetches the earlier studies from the PACS (``[priors]`` enabled)
        self.priors: PriorsFetcher | None = None
        self.worker: Worker | None = None
        self.trial = ModelTrial(config)
        self.package: ModelPackage | None = None
        #: every package running (the box's own first), by name, with its trial
        self.running: dict[str, tuple[ModelPackage, ModelTrial]] = {}
        #: a stop signal interrupts the model's loading (``serve``) while this is set
        self._loading = False
        #: why the box runs no model (a reason code), "" while it analyses
        self.waiting = ""
        #: set when the hospital's downlink brings a rollout offer or rollback order
        self.updates_wake = threading.Event()

    def start(self) -> None:
        """Bring up the intake, then the analysis (``start_intake``, ``start_analysis``)."""
        self.start_intake()
        self.start_analysis()

    def start_intake(self) -> None:
        """Storage and its recovery, then the listeners (DICOM receiver, import folder) and
        the viewer: receiving needs only the spool and the queue, so the box accepts
        images while its model is still being verified and timed."""
        config = self.config
        db.private_state_dir(config.state_dir)
        conn = db.connect(config.database_path)
        db.initialise(conn)
        spool = self.spool = make_spool(config)
        known = JobQueue(conn).local_ids()
        leftovers = spool.clean_temporary() + spool.remove_orphans(known)
        requeued, failed = JobQueue(conn).recover(config.worker.max_attempts)
        if leftovers or requeued or failed:
            log.info("recovery: %d partial files removed, %d jobs requeued, %d failed",
                     leftovers, requeued, failed)
        conn.close()

        lander = Lander(spool, config.database_path, config.storage.max_object_mb * 2**20)
        if config.dicom.enabled:
            self.scp = start_storage_scp(config.dicom, lander, on_stored=self.arrivals.stored)
        if config.usb.enabled:
            importer = FolderImporter(
                config.import_dir, lander, config.database_path,
                settle_seconds=config.usb.settle_seconds, max_depth=config.usb.max_depth,
            )
            self._thread("usb-import", importer.run, self.stop_event, config.usb.poll_seconds,
                         self.arrivals.stored)
        if self.viewer is not None:
            self._thread("viewer", self.viewer.run, self.stop_event)
        for live in self.live:
            self._thread(f"live-{live.source}", live.run, self.stop_event)
        self._start_worklist()
        if config.priors.enabled:
            self.priors = PriorsFetcher(config, lander, on_stored=self.arrivals.stored)
            self._thread("priors", self.priors.run, self.stop_event)

    def _start_worklist(self) -> None:
        """The worklist poller runs when ``[worklist]`` is enabled; otherwise the worklist is
        recorded ``off`` once (the live page then says the patient is typed)."""
        poller = WorklistPoller(self.config)
        if not self.config.worklist.enabled:
            poller.poll_once()
            return
        self._thread("worklist", poller.run, self.stop_event)

    def start_analysis(self) -> None:
        """The model (verified, its runtime chosen, its golden cases passed), the worker on
        what waits in the queue, telemetry, study completion and the PACS sender.

        Without a package of ``[models] name`` that the box may run (none installed, or the
        one there refused: an untrusted signature, a tampered file, golden cases failed) the
        box waits for one instead of exiting: it keeps receiving and holding what arrives,
        says "waiting for a model" (``model_waiting``: the worklist, the device page,
        ``clinibox status``, the self-test), tells the hospital (``model_unavailable``, once a
        day) and keeps its link, over which the hospital's rollout brings a package; the
        service reloads when one is installed and analyses what waited."""
        config = self.config
        assert self.spool is not None, "start_intake first"
        runner: ModelRunner | None = None
        package: ModelPackage | None = None
        before = native_threads()  # the runtime's own pool is made while the model loads
        try:
            if config.worker.enabled:
                runner = load_runner_on_trial(config, self.trial)
                package = runner.package
            else:
                package = load_package(resolve_package_root(config), config.trusted_key_paths)
        except PackageError as exc:
            self.waiting = self._wait_for_model(exc)
        if package is not None:
            self._set_waiting(None)
            self.running[package.name] = (package, self.trial)
        if runner is not None:
            more = self._load_routed_models(runner.package)
            # the runtime's threads analyse at the worker's lower weight (priority.py)
            lower_new_native_threads(before)
            self.worker = Worker(config, self.spool, runner, self.trial, more, self.arrivals)
            self._thread("worker", self.worker.run, self.stop_event, self.wake)
        self.package = package
        if package is None:
            facts = ModelFacts("", (), 1.0, waiting_for_model=self.waiting)
        else:
            facts = model_facts(package, *(p for p, _t in list(self.running.values())[1:]),
                                runner=runner)
        self._start_telemetry(facts)
        self._start_dicom_sender()
        self._start_records_senders()
        if package is None:
            return
        identities = {p.model_id: ModelIdentity.from_manifest(p.manifest)
                      for p, _t in self.running.values()}
        completer = StudyCompleter(
            config, identities, config.telemetry.device, self._study_completed,
            on_priors_asked=self.priors.wake.set if self.priors is not None else lambda: None)
        self._thread("study-completion", completer.run, self.stop_event)

    def _wait_for_model(self, exc: PackageError) -> str:
        """The box has no model it may run: note why, tell the hospital; the reason code."""
        try:
            found = resolve_package_root(self.config)
        except PackageError:
            found = None
        reason = ("not_installed" if found is None
                  else exc.code if exc.code in EVENT_REASONS else "load_failed")
        log.error("no model this box may run (%s): %s; receiving and holding images until one "
                  "is installed", reason, exc)
        self._set_waiting((reason, str(exc)))
        subject = manifest_model_id(found) if found is not None else self.config.models.name
        report_event(self.config, "model_unavailable", reason, subject, running="",
                     note=f"model_unavailable ({reason}): {subject or self.config.models.name}; "
                          "the box waits for a model", once_per_s=UNAVAILABLE_REPORT_INTERVAL)
        return reason

    def _set_waiting(self, why: tuple[str, str] | None) -> None:
        conn = db.connect(self.config.database_path)
        try:
            with db.transaction(conn):
                if why is None:
                    model_offers.clear_waiting(conn)
                else:
                    model_offers.set_waiting(conn, *why)
        finally:
            conn.close()

    def _start_telemetry(self, model: ModelFacts) -> None:
        """The outbox producer always runs; the publisher only with a broker and hospital key."""
        config = self.config
        identity = load_identity(config)
        producer = TelemetryProducer(config, identity, model, on_queued=self.outbound.set)
        self._thread("telemetry", producer.run, self.stop_event)
        if not (config.mqtt.host and config.telemetry.hospital_key):
            log.info("telemetry: no broker configured; messages wait in the outbox")
            self._thread("model-updates", Updater(config, None).run, self.stop_event,
                         self.updates_wake)
            return
        receiver = downlink_receiver(config, identity)
        fetcher = ChunkFetcher() if receiver is not None else None
        if receiver is not None:
            receiver.on_order = self.updates_wake.set
            receiver.on_link_check = producer.answer_link_check
            if config.records.receivers:
                receiver.on_verdict = self._queue_verdict_report
                receiver.on_verdict_kept = self._records_queued
        publisher = Publisher(config, identity, load_x25519_public(config.telemetry.hospital_key),
                              model, producer.started, receiver, fetcher)
        self._thread("publisher", publisher.run, self.stop_event, self.outbound)
        self._thread("model-updates", Updater(config, fetcher).run, self.stop_event,
                     self.updates_wake)
        log.info("telemetry: %s/%s to %s:%d", identity.clinic, identity.device,
                 config.mqtt.host, config.mqtt.port)

    def _load_routed_models(self, own: ModelPackage) -> dict[str, tuple[ModelRunner, ModelTrial]]:
        """Every other package a routing rule names, loaded on its own trial (a package that
        is not installed or does not load is logged, recorded and reported to the hospital
        as a device event: its series are then not analysed, the box keeps running)."""
        loaded: dict[str, tuple[ModelRunner, ModelTrial]] = {}
        for name in routed_names(self.config):
            if name == own.name:
                continue
            config = package_config(self.config, name)
            trial = ModelTrial(config)
            try:
                runner = load_runner_on_trial(config, trial)
            except PackageError as exc:
                log.error("model %s named by the routing rules is not running: %s", name, exc)
                conn = db.connect(self.config.database_path)
                try:
                    with db.transaction(conn):
                        db.record_event(conn, "ERROR", "models", f"routing rules name the model "
                                        f"{name}; it is not running: {exc}"[:300],
                                        event_codes.code(event_codes.ROUTED_MODEL_DOWN, name))
                finally:
                    conn.close()
                report_unavailable_model(self.config, name, own.model_id, exc)
                continue
            loaded[name] = (runner, trial)
            self.running[name] = (runner.package, trial)
        return loaded

    def _study_completed(self) -> None:
        """A study is complete: its DICOM results and report wait in their outboxes, its
        alert may go."""
        self.pacs_wake.set()
        self.outbound.set()
        self._records_queued()

    def _records_queued(self) -> None:
        """Wake every records sender: a report may wait."""
        for wake in self.records_wakes:
            wake.set()

    def is_demo(self, model_id: str) -> bool:
        """Whether a model id is a running demonstration package's (trained on phantoms)."""
        name = model_id.partition("@")[0]
        return any(p.name == name and ModelIdentity.from_manifest(p.manifest).demo
                   for p, _trial in list(self.running.values()))

    def _queue_verdict_report(self, conn, study_key: str, seq: int) -> None:
        """In the downlink's transaction: the study's report again, with the hospital's
        verdict, for the clinic's records. A report that cannot be made is logged and
        recorded; the verdict is kept all the same."""
        try:
            with db.savepoint(conn):
                queue_verdict(conn, self.config, study_key, seq, self.is_demo)
        except Exception as exc:  # the verdict must be kept whatever the report does
            log.exception("records: the report with the hospital's verdict %d could not be "
                          "queued", seq)
            db.record_event(conn, "ERROR", "records", f"the report of study {study_key} with "
                            f"the hospital's verdict {seq} could not be queued: "
                            f"{type(exc).__name__}", event_codes.code(
                                event_codes.RECORDS_NOT_QUEUED, seq))

    def _start_records_senders(self) -> None:
        """A records sender per clinic information system (none configured: none)."""
        for receiver in self.config.records.receivers:
            wake = threading.Event()
            self.records_wakes.append(wake)
            self._thread(f"records-{receiver.name}", RecordsSender(self.config, receiver).run,
                         self.stop_event, wake)

    def _start_dicom_sender(self) -> None:
        """The DICOM outbox's sender runs when PACS destinations are configured."""
        if not self.config.pacs.destinations:
            log.info("PACS: no destinations configured; DICOM results are not sent")
            return
        sender = DicomSender(self.config)
        self._thread("dicom-sender", sender.run, self.stop_event, self.pacs_wake)

    def _thread(self, name: str, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop(self) -> None:
        """Stop listeners first (no new objects), then the worker and importer."""
        if self.scp is not None:
            self.scp.stop()
        self.stop_event.set()
        self.wake.set()
        self.outbound.set()
        self.pacs_wake.set()
        self.updates_wake.set()
        self._records_queued()
        for thread in self.threads:
            thread.join(timeout=30)
        if not any(t.is_alive() for t in self.threads):
            self.trial.stopped_cleanly()
            for _package, trial in list(self.running.values())[1:]:
                trial.stopped_cleanly()

    def healthy(self, now: float | None = None, stale_after: float = 60.0) -> bool:
        """Every component thread is alive and the worker's loop passed recently."""
        now = time.monotonic() if now is None else now
        if not all(t.is_alive() for t in self.threads):
            return False
        return self.worker is None or now - self.worker.beat < stale_after

    def model_switched(self) -> bool:
        """Whether a store now names another package than the one running (any of them); while
        the box waits for a model, whether its own store now names one."""
        if self.package is None:
            return store_for(self.config).read().active != ""
        for name, (package, _trial) in self.running.items():
            try:
                root = resolve_package_root(package_config(self.config, name))
            except PackageError:
                continue
            if root.resolve() != package.root.resolve():
                return True
        return False

    def serve(self, notifier: Notifier | None = None) -> str:
        """Start, then run until SIGTERM/SIGINT ("stop") or a model switch ("reload")."""
        notifier = notifier or Notifier()
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        config = self.config
        self.start_intake()
        log.info("clinibox receiving: state %s, DICOM %s:%d (AE %s), import folder %s",
                 config.state_dir, config.dicom.host, config.dicom.port, config.dicom.ae_title,
                 config.import_dir)
        notifier.ready(f"receiving on DICOM port {config.dicom.port}; loading the model")
        try:
            self._loading = True
            self.start_analysis()
            self._loading = False
        except KeyboardInterrupt:  # a stop while loading; what was received waits, queued
            log.info("stopping while the model was loading")
            notifier.stopping()
            self.stop()
            return "stop"
        except BaseException:  # the service exits (systemd starts it again): close the door
            if self.scp is not None:
                self.scp.stop()
            self.stop_event.set()
            raise
        model = self.package.model_id if self.package else "-"
        if self.package is None:
            log.warning("clinibox receiving and holding images: waiting for a model (%s)",
                        self.waiting)
        else:
            log.info("clinibox ready: model %s", model)
        if config.trusts_demo_key:
            log.warning("WARNING: %s", DEMO_TRUST_WARNING)
        notifier.status(f"model {model}; DICOM port {config.dicom.port}" if self.package else
                        f"waiting for a model ({self.waiting}); DICOM port {config.dicom.port}")
        interval = notifier.watchdog_seconds
        stale_after = max(interval, 10.0) if interval else 60.0
        stores = [store_for(package_config(config, name)) for name in self.running] or \
            [store_for(config)]
        stamp = [store.state_stamp() for store in stores]
        outcome = "stop"
        while not self.stop_event.wait(min(1.0, interval / 2) if interval else 1.0):
            if interval and self.healthy(stale_after=stale_after):
                notifier.watchdog()
            elif interval:
                log.error("not feeding the watchdog: a component stopped or the worker is stuck")
            current = [store.state_stamp() for store in stores]
            if current != stamp:
                stamp = current
                if self.model_switched():
                    log.info("the model package was switched; reloading")
                    notifier.reloading()
                    outcome = "reload"
                    break
        log.info("stopping")
        notifier.stopping()
        self.stop()
        return outcome

    def _on_stop_signal(self, *_signal) -> None:
        """SIGTERM / SIGINT: stop. While the model loads, end its loading at once: a
        KeyboardInterrupt (as Python's own SIGINT handler raises; no ``except Exception``
        on the loading path takes it for a failure) unwinds ``start_analysis``, and a
        timing child is killed by ``call_child``."""
        self.stop_event.set()
        if self._loading:
            self._loading = False  # once: the unwinding itself is not interrupted again
            raise KeyboardInterrupt

    def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT, reloading in place when the model is switched."""
        notifier = Notifier()
        appliance: Appliance = self
        while appliance.serve(notifier) == "reload":
            appliance = Appliance(self.config, self.viewer, self.live)
