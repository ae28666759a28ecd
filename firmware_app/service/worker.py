"""The processing worker: queued object → decode → quality → inference → result.

The decode (in the decoder sandbox) also writes the display previews the
viewer and the printed report show (``engine.imaging.preview``).

One job at a time per worker thread, with the next one's decode under way
in the sandbox while this one is analysed: the decoder child and the worker
each keep a core busy. A bad object is quarantined with a
readable reason and the worker moves on; an unexpected error puts the job
back for a later attempt (``max_attempts``) and is recorded for status.
Completed analyses and processing errors are reported to the model's trial
(``model_trial.py``), and every pass of the loop refreshes ``beat``, which the
service's watchdog reads. The worker thread, and the decoder sandbox it starts, run at a
lower CPU weight than receiving (``priority.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from clinibox_common.contracts.reasons import Reason, ReasonCode, decode, encode, english
from clinibox_common.contracts.statuses import InstanceStatus
from engine.imaging.decode import DecodedImage
from engine.imaging.sandbox import DecodeSandbox
from engine.inference.runner import ModelRunner
from firmware_app.analysis import Decoding, finish_object, start_object
from firmware_app.models.calibration import ThresholdWatch
from firmware_app.models.routing import Router
from firmware_app.models.trial import ModelTrial
from firmware_app.service.arrivals import Arrivals
from firmware_app.service.priority import WORKER_THREAD_NAME, lower_this_thread
from firmware_app.settings.box import Config
from firmware_app.storage import db
from firmware_app.storage.queue import Job, JobQueue
from firmware_app.storage.results import ResultStore
from firmware_app.storage.spool import Spool

log = logging.getLogger(__name__)


class Worker:
    """Takes jobs from the queue and stores their results."""

    def __init__(self, config: Config, spool: Spool, runner: ModelRunner,
                 trial: ModelTrial | None = None,
                 more: Mapping[str, tuple[ModelRunner, ModelTrial | None]] | None = None,
                 arrivals: Arrivals | None = None) -> None:
        """``runner`` (with its ``trial``) is the box's own model ([models] name); ``more``
        are the other packages the routing rules name, by package name; with ``arrivals``
        each job waits for a burst of arrivals to pass (``arrivals.py``)."""
        self.config = config
        self.arrivals = arrivals
        self.spool = spool
        self.runner = runner
        self.trial = trial
        #: every running model by package name: its runner and its trial
        self.models = {runner.package.name: (runner, trial), **(more or {})}
        #: time.monotonic() of the loop's last pass (the watchdog's proof of life)
        self.beat = time.monotonic()
        #: pixels are decoded in a limited child process, never in the service
        self.sandbox = DecodeSandbox(config.limits)
        self.conn = db.connect(config.database_path, acknowledging=False)
        self.queue = JobQueue(self.conn)
        self.results = ResultStore(self.conn)
        #: each model's clinic threshold, set again as analyses go (``calibration.py``)
        self.thresholds = ThresholdWatch(config, self.conn)
        #: the model that analysed the job last processed (its trial counts the analysis)
        self.last_runner: ModelRunner | None = None
        #: which model analyses an image (``[[routing.rules]]``)
        self.router = Router(config.routing.rules,
                             {name: r.package for name, (r, _t) in self.models.items()},
                             runner.package.name)

    def route(self, image: DecodedImage) -> ModelRunner | Reason:
        """The runner of the model that analyses ``image``, or why none does."""
        chosen = self.router.route(image)
        if chosen.model:
            return self.models[chosen.model][0]
        assert chosen.reason is not None
        return chosen.reason

    def trial_of(self, runner: ModelRunner | None) -> ModelTrial | None:
        """The trial of the package ``runner`` runs (None: none, or no trial)."""
        return self.models.get(runner.package.name, (None, None))[1] if runner else None

    def quarantine(self, job: Job, reasons: list[Reason]) -> InstanceStatus:
        """Move the object aside with its reasons; the row says why (the log in English)."""
        stored, words = encode(reasons), english(reasons)
        self.spool.quarantine(job.local_id, stored)
        with db.transaction(self.conn):
            self.queue.set_status(job.id, InstanceStatus.QUARANTINED, stored)
            db.record_event(self.conn, "WARNING", "worker", f"instance {job.id}: {words}",
                            db.object_code(InstanceStatus.QUARANTINED, job.id))
        log.warning("quarantined instance %d: %s", job.id, words)
        return InstanceStatus.QUARANTINED

    def not_analysed(self, job: Job, reason: Reason) -> InstanceStatus:
        """A good image no model here is meant for: it stays in the spool with its reason."""
        with db.transaction(self.conn):
            self.queue.set_status(job.id, InstanceStatus.NOT_ANALYSED, encode([reason]))
            db.record_event(self.conn, "INFO", "worker", f"instance {job.id}: not analysed: "
                            f"{reason.english()}", db.object_code(InstanceStatus.NOT_ANALYSED,
                                                                job.id))
        log.info("instance %d not analysed: %s", job.id, reason.english())
        return InstanceStatus.NOT_ANALYSED

    def start(self, job: Job) -> Decoding:
        """Hand ``job``'s object to the decoder sandbox (it writes the previews too)."""
        return start_object(job.spool_path, self.config, self.sandbox,
                            preview_to=self.spool.preview_path(job.local_id))

    def process(self, job: Job, decoding: Decoding) -> InstanceStatus:
        """Process one claimed job whose decode ``decoding`` was started; return its final
        status (``last_runner``: the model that analysed it, or None)."""
        self.last_runner = None
        try:
            outcome = finish_object(decoding, self.route, self.config)
        except FileNotFoundError:
            earlier = self.spool.quarantined_reason(job.local_id)
            if earlier is not None:  # quarantined just before a power cut undid the row
                return self.quarantine(job, decode(earlier))
            missing = Reason(ReasonCode.MISSING_FROM_SPOOL)
            with db.transaction(self.conn):
                self.queue.set_status(job.id, InstanceStatus.FAILED, encode([missing]))
                db.record_event(self.conn, "ERROR", "worker",
                                f"instance {job.id}: {missing.english()}",
                                db.object_code(InstanceStatus.FAILED, job.id))
            return InstanceStatus.FAILED
        if outcome.status == InstanceStatus.NOT_ANALYSED:
            assert outcome.reason is not None
            return self.not_analysed(job, outcome.reason)
        if outcome.status != InstanceStatus.PROCESSED:
            return self.quarantine(job, [outcome.reason] if outcome.reason else [])
        decoded, analysis = outcome.decoded, outcome.analysis
        assert decoded is not None and analysis is not None and outcome.runner is not None
        self.last_runner = outcome.runner
        self.results.complete(
            instance_id=job.id,
            identity={
                "study_instance_uid": decoded.study_instance_uid,
                "series_instance_uid": decoded.series_instance_uid,
                "modality": decoded.modality,
                **decoded.display,
            },
            findings=analysis.findings,
            warnings=analysis.warnings,
            model_id=outcome.runner.package.model_id,
            backend=outcome.runner.backend_label,
            frames_inferred=analysis.frames_inferred,
            timings=outcome.timings,
            intensity=analysis.intensity,
            geometry=decoded.geometry(),
            image_size=(decoded.rows, decoded.columns),
        )
        return InstanceStatus.PROCESSED

    def run_once(self) -> bool:
        """Process the next job if there is one; return whether one was taken."""
        job = self.queue.claim()
        if job is None:
            return False
        self.handle(job, self.start(job))
        return True

    def handle(self, job: Job, decoding: Decoding) -> None:
        """Process ``job`` and report it to its model's trial; an unexpected error puts it
        back in the queue for a later attempt."""
        try:
            outcome = self.process(job, decoding)
        except Exception as exc:  # keep the box running; the job is retried later
            log.exception("instance %d failed", job.id)
            error = Reason(ReasonCode.PROCESSING_ERROR,
                           {"detail": f"{type(exc).__name__}: {exc}"[:280]})
            self.queue.retry_later(job.id, error, self.config.worker.max_attempts)
            trial = self.trial_of(self.last_runner) or self.trial  # unrouted: the box's own
            if trial is not None:
                trial.worker_error()
            return
        trial = self.trial_of(self.last_runner)
        if outcome == InstanceStatus.PROCESSED and self.last_runner is not None:
            self.thresholds.processed(self.last_runner)
        if outcome == InstanceStatus.PROCESSED and trial is not None:
            trial.processed()

    def paused(self) -> bool:
        """Whether a model's trial rolled it back: the service is about to reload."""
        return any(t is not None and t.rolled_back for _r, t in self.models.values())

    def run(self, stop: threading.Event, wake: threading.Event) -> None:
        """Work until ``stop`` is set, sleeping on ``wake`` when the queue is empty, at the
        analysis's lower CPU weight (``priority.py``: receiving never waits for analysis)."""
        lower_this_thread(WORKER_THREAD_NAME)
        try:
            self._loop(stop, wake)
        finally:
            self.sandbox.close()

    def _loop(self, stop: threading.Event, wake: threading.Event) -> None:
        """Process jobs one after another, the next one's decode under way meanwhile.

        The next job is claimed without counting an attempt (``claim(attempt=False)``),
        and its attempt is counted when its analysis begins: a crash while this job is
        analysed does not count against the next one. A look-ahead job left over when the
        worker stops or pauses goes back to the queue.
        """
        ahead: tuple[Job, Decoding] | None = None
        try:
            while not stop.is_set():
                self.beat = time.monotonic()
                if self.paused():
                    if ahead is not None:
                        ahead[1].wait()  # the sandbox is free again for after the reload
                        self.queue.release(ahead[0].id)
                        ahead = None
                    stop.wait(self.config.worker.poll_seconds)  # the service reloads
                    continue
                if ahead is None:
                    job = self.queue.claim(attempt=False)
                    if job is None:
                        wake.wait(self.config.worker.poll_seconds)
                        wake.clear()
                        self.sandbox.stop_if_idle()  # an idle box gives its memory back
                        continue
                    ahead = (job, self.start(job))
                job, decoding = ahead
                decoding.wait()
                following = self.queue.claim(attempt=False)
                ahead = None if following is None else (following, self.start(following))
                if self.arrivals is not None:
                    self.arrivals.hold(stop)  # receiving never waits for analysis
                self.queue.count_attempt(job.id)
                self.handle(job, decoding)
        finally:
            if ahead is not None:  # not analysed: back to the queue as it was
                self.sandbox.cancel()
                self.queue.release(ahead[0].id)
