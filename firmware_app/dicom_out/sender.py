"""The DICOM outbox's sender: a thread of the service that delivers due documents to the PACS.

Each pass takes every destination with documents due (``next_attempt_at <= now``)
and opens ONE link to it that carries all of them, oldest first: an association
for C-STORE (``scu``) or a kept-alive HTTP(S) connection for DICOMweb STOW-RS
(``stow``), by the destination's ``protocol`` (``LINKS``). A
document is marked ``sent`` when the destination stored it (its answer
committed at once, so a crash re-sends at most the one in flight, which the PACS
keeps once by its SOP Instance UID); every document of a batch the
destination could not be reached for (down, association rejected, credentials
refused, no answer, link lost) is marked failed with its error and retried after an
exponential backoff, for as long as it takes. A document the destination
refuses (a C-STORE failure status, a STOW-RS FailureReason) is retried the same way,
but only
``[pacs] max_refusals`` times: then it is held, with the status and the
destination's comment, until a technician re-queues it (``clinibox dicom-out
retry``). Failures are logged and recorded as events (once per new error,
again hourly while it lasts; each hold at once); successes are not.

``run`` gives each destination a thread of its own (``DicomSender(config, only=name)``),
so a PACS that answers slowly or not at all never delays another's documents. Each
sleeps until its next document is due, or until ``wake`` is set (the code that commits
new rows sets it; ``run`` passes it on to every destination's thread), and ends between
two documents when ``stop`` is set. Nothing in a pass may crash it: an unexpected error
is logged and the pass is tried again a little later. Once an hour ``run`` purges sent
and superseded rows older than the audit period (``[telemetry] audit_days``) with their
files.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from clinibox_common.contracts.statuses import DicomOutboxState
from firmware_app.dicom_out import scu, stow
from firmware_app.dicom_out.link import Document, Link, LinkFailed, StoreOutcome
from firmware_app.settings.box import Config
from firmware_app.settings.pacs import PacsConfig, PacsDestination, PacsProtocol
from firmware_app.storage import db, event_codes
from firmware_app.storage import dicom_outbox as rows

log = logging.getLogger(__name__)

#: the longest sleep between passes (rows committed by another process are seen by then)
POLL_SECONDS = 30.0
#: the shortest sleep between passes
MIN_PAUSE = 0.05
#: the pause after a pass that failed unexpectedly
ERROR_PAUSE = 5.0
PURGE_EVERY = 3600.0
#: a failure already recorded as an event is recorded again after this long
REPEAT_EVENT_SECONDS = 3600.0
#: documents carried by one association at most (a longer backlog continues at once)
BATCH_LIMIT = 1000
#: what opens a link to a destination, by its protocol
LINKS: dict[str, Callable[[PacsDestination, PacsConfig, str, list[Document]], Link]] = {
    PacsProtocol.DIMSE: scu.open_link,
    PacsProtocol.STOW_RS: stow.open_link,
}
#: what tries a destination as its link would, storing nothing (``clinibox dicom-out check``)
PROBES: dict[str, Callable[[PacsDestination, PacsConfig, str], str]] = {
    PacsProtocol.DIMSE: scu.probe,
    PacsProtocol.STOW_RS: stow.probe,
}


@dataclass
class Delivery:
    """What one association with one destination achieved."""

    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class DicomSender:
    """Delivers the DICOM outbox to the configured PACS destinations."""

    def __init__(self, config: Config, only: str | None = None) -> None:
        """``only``: the one destination this sender serves (all when None)."""
        self.config = config
        self.settings = config.pacs
        self.destinations = {d.name: d for d in config.pacs.destinations
                             if only is None or d.name == only}
        self.conn = db.connect(config.database_path)
        self.next_purge = 0.0
        self.failing: set[str] = set()

    # -- one pass ------------------------------------------------------------
    def send_due(self, stop: threading.Event | None = None,
                 now: float | None = None) -> dict[str, Delivery]:
        """Deliver what is due now to every configured destination (one association each)."""
        now = time.time() if now is None else now
        done: dict[str, Delivery] = {}
        for name in rows.due_destinations(self.conn, now):
            destination = self.destinations.get(name)
            if destination is None:  # no longer configured: its rows wait, shown in status
                continue
            if stop is not None and stop.is_set():
                break
            due = rows.due_documents(self.conn, now, name, limit=BATCH_LIMIT)
            if not due:
                continue
            try:
                done[name] = self.deliver(destination, due, stop)
            except Exception:  # one destination's fault never holds back the others
                log.exception("PACS %s (%s): the pass failed", name, destination.peer())
                self._postpone(destination, due)
        return done

    def _postpone(self, destination: PacsDestination, due: list[rows.DueDocument]) -> None:
        """A pass that failed unexpectedly: its documents wait out the backoff, as after a
        failure, so the next pass goes on to the others and this one is not hammered."""
        error = f"{destination.peer()}: the box failed while sending (see its log)"
        with db.transaction(self.conn):
            for item in due:
                rows.mark_failed(self.conn, item.id, error, self.settings.retry_min_seconds,
                                 self.settings.retry_max_seconds)
        self._record(destination, error, event_codes.code(event_codes.PACS_FAILED,
                                                          event_codes.PACS_LOST))

    def deliver(self, destination: PacsDestination, due: list[rows.DueDocument],
                stop: threading.Event | None = None) -> Delivery:
        """Send ``due`` to ``destination`` over one link; mark each row sent or failed."""
        delivery = Delivery()
        readable: list[tuple[rows.DueDocument, Document]] = []
        for item in due:
            try:
                syntax = str(read_file_meta_info(item.path).get("TransferSyntaxUID", ""))
            except (OSError, InvalidDicomError) as exc:
                self._failed(destination, item, f"cannot read {item.path}: {exc}", delivery,
                             failure=event_codes.PACS_UNREADABLE)
                continue
            readable.append((item, Document(Path(item.path), item.sop_class_uid,
                                            item.sop_instance_uid, syntax)))
        if not readable:
            return self._finish(destination, delivery)
        try:
            link = LINKS[destination.protocol](
                destination, self.settings, self.config.pacs_calling_ae_title,
                [document for _, document in readable])
        except LinkFailed as exc:
            for item, _ in readable:
                self._failed(destination, item, str(exc), delivery, record=False)
            self._record(destination, str(exc), event_codes.code(event_codes.PACS_FAILED,
                                                                 exc.failure))
            return self._finish(destination, delivery)
        try:
            self._send_batch(destination, link, readable, delivery, stop)
        finally:
            link.close()
        return self._finish(destination, delivery)

    def _send_batch(self, destination: PacsDestination, link: Link,
                    batch: list[tuple[rows.DueDocument, Document]], delivery: Delivery,
                    stop: threading.Event | None) -> None:
        lost = ""
        for item, document in batch:
            if stop is not None and stop.is_set():
                return  # the rest stays due for the next start
            if lost:
                self._failed(destination, item, lost, delivery, record=False)
                continue
            try:
                outcome = link.store(document)
            except (OSError, InvalidDicomError) as exc:
                self._failed(destination, item, f"cannot read {item.path}: {exc}", delivery,
                             failure=event_codes.PACS_UNREADABLE)
                continue
            if outcome.stored:
                with db.transaction(self.conn):
                    rows.mark_sent(self.conn, item.id)
                delivery.sent += 1
                if outcome.warning:
                    log.info("%s stored %s with a warning: %s", destination.peer(),
                             item.sop_instance_uid, outcome.detail)
                continue
            if outcome.status is not None:  # an answer: the destination refused it
                self._refused(destination, item, outcome, delivery)
                if outcome.association_lost:
                    lost = f"{destination.peer()}: association ended after a refusal"
                continue
            if outcome.association_lost:
                lost = f"{destination.peer()}: {outcome.detail}"
                self._failed(destination, item, lost, delivery, failure=outcome.failure)
                continue
            self._failed(destination, item,
                         f"{outcome.detail} (SOP Instance {item.sop_instance_uid})", delivery,
                         failure=outcome.failure)

    # -- bookkeeping ---------------------------------------------------------
    def _failed(self, destination: PacsDestination, item: rows.DueDocument, error: str,
                delivery: Delivery, record: bool = True,
                failure: str = event_codes.PACS_LOST) -> None:
        with db.transaction(self.conn):
            rows.mark_failed(self.conn, item.id, error, self.settings.retry_min_seconds,
                             self.settings.retry_max_seconds)
        delivery.failed += 1
        if error not in delivery.errors:
            delivery.errors.append(error)
        if record:
            failure = failure or event_codes.PACS_LOST
            self._record(destination, error, event_codes.code(event_codes.PACS_FAILED, failure))

    def _refused(self, destination: PacsDestination, item: rows.DueDocument,
                 outcome: StoreOutcome, delivery: Delivery) -> None:
        """The destination answered with a failure status: count a refusal; hold the
        document at ``[pacs] max_refusals`` (recorded as an event)."""
        assert outcome.status is not None
        error = f"{outcome.detail} (SOP Instance {item.sop_instance_uid})"
        with db.transaction(self.conn):
            state = rows.mark_refused(self.conn, item.id, error, outcome.status,
                                      self.settings.max_refusals,
                                      self.settings.retry_min_seconds,
                                      self.settings.retry_max_seconds)
        delivery.failed += 1
        if error not in delivery.errors:
            delivery.errors.append(error)
        if state == DicomOutboxState.HELD:
            log.error("PACS %s (%s) refused %s %d times: held (%s)", destination.name,
                      destination.peer(), item.sop_instance_uid,
                      self.settings.max_refusals, outcome.detail)
            self._record(destination, f"held after {self.settings.max_refusals} refusals: "
                                      f"{error}", event_codes.code(
                                          event_codes.PACS_HELD, self.settings.max_refusals,
                                          event_codes.pacs_failure(event_codes.PACS_REFUSED,
                                                                   outcome.status)), force=True)
        else:
            self._record(destination, error, event_codes.code(
                event_codes.PACS_FAILED,
                event_codes.pacs_failure(event_codes.PACS_REFUSED, outcome.status)))

    def _record(self, destination: PacsDestination, error: str, code: str,
                force: bool = False) -> None:
        """Record a failure as an event with its ``code`` (``storage.event_codes``), unless the
        destination said the same recently (even with another failure between, as a PACS
        that refuses and, once in a while, resets before its refusal is read) and not
        ``force``."""
        said = rows.last_said(self.conn, destination.name, error[:500])
        if not force and said is not None and time.time() - said < REPEAT_EVENT_SECONDS:
            return
        with db.transaction(self.conn):
            db.record_event(self.conn, "WARNING", rows.event_component(destination.name), error,
                            code)

    def _finish(self, destination: PacsDestination, delivery: Delivery) -> Delivery:
        name = destination.name
        if delivery.failed:
            waiting = rows.pending_count(self.conn, name)
            log.warning("PACS %s (%s): %d document(s) not delivered, %d waiting: %s", name,
                        destination.peer(), delivery.failed, waiting,
                        "; ".join(delivery.errors[:3]))
            self.failing.add(name)
        elif delivery.sent and name in self.failing:
            self.failing.discard(name)
            log.info("PACS %s (%s) takes documents again", name, destination.peer())
        if delivery.sent:
            log.debug("PACS %s: %d document(s) stored", name, delivery.sent)
        return delivery

    def purge(self, now: float | None = None) -> int:
        """Purge sent and superseded rows (and files) older than the audit period."""
        with db.transaction(self.conn):
            return rows.purge(self.conn, self.config.dicom_out_dir,
                              self.config.telemetry.audit_days * 86400, now)

    def seconds_to_wait(self, now: float | None = None) -> float:
        """How long to sleep before the next pass: until the next document is due, within
        MIN_PAUSE and POLL_SECONDS."""
        now = time.time() if now is None else now
        due = rows.next_due_at(self.conn, self.destinations)
        if due is None:
            return POLL_SECONDS
        return min(POLL_SECONDS, max(MIN_PAUSE, due - now))

    # -- the threads ---------------------------------------------------------
    def run(self, stop: threading.Event, wake: threading.Event) -> None:
        """A thread per destination until ``stop``; ``wake`` passed on to each; the hourly
        purge here."""
        log.info("DICOM outbox: sending to %s", ", ".join(
            f"{d.name} ({d.peer()})" for d in self.destinations.values()))
        wakes = {name: threading.Event() for name in self.destinations}
        threads = [threading.Thread(target=DicomSender(self.config, only=name).serve,
                                    args=(stop, wakes[name]), name=f"dicom-sender-{name}",
                                    daemon=True) for name in self.destinations]
        for thread in threads:
            thread.start()
        try:
            while not stop.is_set():
                if wake.wait(1.0):
                    wake.clear()
                    for event in wakes.values():
                        event.set()
                if time.time() >= self.next_purge:
                    self._purge_now()
        finally:
            for event in wakes.values():
                event.set()
            for thread in threads:
                thread.join(30)
            self.conn.close()

    def _purge_now(self) -> None:
        try:
            purged = self.purge()
            if purged:
                log.info("DICOM outbox: purged %d rows older than the audit period", purged)
        except Exception:  # keep the service running; the next hour tries again
            log.exception("DICOM outbox purge failed")
        self.next_purge = time.time() + PURGE_EVERY

    def serve(self, stop: threading.Event, wake: threading.Event) -> None:
        """Pass after pass for this sender's destinations until ``stop``; sleep until
        something is due or ``wake`` is set."""
        while not stop.is_set():
            wake.clear()
            try:
                self.send_due(stop)
                pause = self.seconds_to_wait()
            except Exception:  # keep the service running; the next pass tries again
                log.exception("DICOM outbox pass failed")
                pause = ERROR_PAUSE
            deadline = time.monotonic() + pause
            while not stop.is_set() and not wake.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wake.wait(min(left, 1.0))
        self.conn.close()
