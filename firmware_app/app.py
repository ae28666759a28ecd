"""The wiring of the appliance, written out in one place.

    DICOM SCP ─┐
    USB import ┴─> Lander (spool fsync + queue commit) ─> ACK
    Worker: queue → decode → quality → ModelRunner → aggregate → ResultStore
    TelemetryProducer: results → alerts, summaries, heartbeats → Outbox (SQLite)
    Publisher: Outbox → seal (encrypt + sign) → MQTT over TLS → hospital
    ViewerProcess: `clinibox web` (Flask + gunicorn, HTTPS) as a restarted child process

``Appliance.start`` brings the parts up in order (database, spool recovery,
model verification and backend choice, worker, then the listeners, so that
nothing is accepted before it can be stored) and ``stop`` takes them down in
reverse.
"""

from __future__ import annotations

import logging
import signal
import threading

from firmware_app import db
from firmware_app.config import Config
from firmware_app.inference.runner import ModelRunner
from firmware_app.ingest.dicom_scp import StorageSCP
from firmware_app.ingest.landing import Lander
from firmware_app.ingest.usb import FolderImporter
from firmware_app.models import ModelPackage, find_package, load_package
from firmware_app.queue import JobQueue
from firmware_app.runtime.selection import select_backend
from firmware_app.spool import Spool
from firmware_app.telemetry.envelope import load_x25519_public
from firmware_app.telemetry.identity import load_identity
from firmware_app.telemetry.messages import ModelFacts
from firmware_app.telemetry.mqtt import Publisher
from firmware_app.telemetry.service import TelemetryProducer
from firmware_app.viewer_process import ViewerProcess
from firmware_app.worker import Worker

log = logging.getLogger(__name__)


def load_runner(config: Config) -> ModelRunner:
    """Find, verify and load the configured model package on the best backend."""
    root = find_package(config.models_dir, config.models.name, config.models.version)
    package = load_package(root, config.trusted_key_paths)
    loaded = select_backend(package, config.runtime)
    runner = ModelRunner(package, loaded.backend, loaded.artifact.label)
    log.info("model %s on %s (%s)", package.model_id, runner.backend_label, loaded.reason)
    return runner


def model_facts(package: ModelPackage) -> ModelFacts:
    """What telemetry says about the running model."""
    return ModelFacts(package.model_id, tuple(package.manifest.get("labels") or ["finding"]),
                      package.thresholds.get("alert", 1.0))


def make_spool(config: Config) -> Spool:
    """The spool with the configured free-space floor."""
    return Spool(config.spool_dir, config.quarantine_dir, config.storage.min_free_mb * 2**20)


class Appliance:
    """Every component of one box, started and stopped together."""

    def __init__(self, config: Config, viewer: ViewerProcess | None = None) -> None:
        self.config = config
        self.viewer = viewer
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.outbound = threading.Event()
        self.threads: list[threading.Thread] = []
        self.scp: StorageSCP | None = None
        self.worker: Worker | None = None

    def start(self) -> None:
        """Bring up storage, model, worker and listeners, in that order."""
        config = self.config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        conn = db.connect(config.database_path)
        db.initialise(conn)
        spool = make_spool(config)
        known = {row[0] for row in conn.execute("SELECT local_id FROM instances")}
        leftovers = spool.clean_temporary() + spool.remove_orphans(known)
        requeued, failed = JobQueue(conn).recover(config.worker.max_attempts)
        if leftovers or requeued or failed:
            log.info("recovery: %d partial files removed, %d jobs requeued, %d failed",
                     leftovers, requeued, failed)
        conn.close()

        if config.worker.enabled:
            self.worker = Worker(config, spool, load_runner(config))
            self._thread("worker", self.worker.run, self.stop_event, self.wake)
            package = self.worker.runner.package
        else:
            package = load_package(find_package(config.models_dir, config.models.name,
                                                config.models.version), config.trusted_key_paths)
        self._start_telemetry(model_facts(package))

        lander = Lander(spool, config.database_path, config.storage.max_object_mb * 2**20)
        if config.dicom.enabled:
            self.scp = StorageSCP(config.dicom, lander, on_stored=self.wake.set)
            self.scp.start()
        if config.usb.enabled:
            importer = FolderImporter(
                config.import_dir, lander, config.database_path,
                settle_seconds=config.usb.settle_seconds, max_depth=config.usb.max_depth,
            )
            self._thread("usb-import", importer.run, self.stop_event, config.usb.poll_seconds,
                         self.wake.set)
        if self.viewer is not None:
            self._thread("viewer", self.viewer.run, self.stop_event)

    def _start_telemetry(self, model: ModelFacts) -> None:
        """The outbox producer always runs; the publisher only with a broker and hospital key."""
        config = self.config
        identity = load_identity(config)
        producer = TelemetryProducer(config, identity, model, on_queued=self.outbound.set)
        self._thread("telemetry", producer.run, self.stop_event)
        if not (config.mqtt.host and config.telemetry.hospital_key):
            log.info("telemetry: no broker configured; messages wait in the outbox")
            return
        publisher = Publisher(config, identity, load_x25519_public(config.telemetry.hospital_key),
                              model, producer.started)
        self._thread("publisher", publisher.run, self.stop_event, self.outbound)
        log.info("telemetry: %s/%s to %s:%d", identity.clinic, identity.device,
                 config.mqtt.host, config.mqtt.port)

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
        for thread in self.threads:
            thread.join(timeout=30)

    def serve_forever(self) -> None:
        """Start, then run until SIGTERM or SIGINT."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_event.set())
        self.start()
        config = self.config
        log.info(
            "clinibox ready: state %s, DICOM %s:%d (AE %s), import folder %s",
            config.state_dir, config.dicom.host, config.dicom.port, config.dicom.ae_title,
            config.import_dir,
        )
        while not self.stop_event.wait(1.0):
            pass
        log.info("stopping")
        self.stop()
