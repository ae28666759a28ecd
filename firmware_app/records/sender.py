"""The records sender: a thread per clinic information system that delivers its reports.

Each receiver of ``[[records.receivers]]`` gets a thread of its own (``RecordsSender.run``),
so a system that is down or slow never delays another's reports. A pass takes the
receiver's due reports, oldest first, over one link (``LINKS``, by its ``protocol``): the
HL7 v2 message or FHIR Bundle is made from the stored report at each try (the same each
time; its control ID is ``control_id``). The answer is committed at once:

* accepted: the row is ``sent``;
* refused (HL7 AE/AR, a FHIR 4xx): a refusal counted, held at ``[records] max_refusals``;
* the link failed (down, no answer, lost, a set-up fault): every report left in the pass
  waits out the backoff and is tried again, for as long as it takes;
* the message could not be made from the report (a bug, never the receiver's fault): the
  row is held at once, with why.

Failures are logged and recorded as events of ``records <name>`` (once per new error, again
hourly while it lasts; each hold at once). Sent and superseded rows older than the audit
period are purged hourly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from clinibox_common.contracts.statuses import RecordState, ReportKind
from firmware_app.records.link import Delivered, Link, LinkFailed
from firmware_app.settings.box import Config
from firmware_app.settings.records import RecordsConfig, RecordsProtocol, RecordsReceiver
from firmware_app.storage import db, event_codes
from firmware_app.storage import records_outbox as rows

log = logging.getLogger(__name__)

#: the longest sleep between passes (rows committed by another process are seen by then)
POLL_SECONDS = 30.0
MIN_PAUSE = 0.05
ERROR_PAUSE = 5.0
PURGE_EVERY = 3600.0
REPEAT_EVENT_SECONDS = 3600.0
#: reports carried by one pass at most (a longer backlog continues at once)
BATCH_LIMIT = 100


def control_id(report: rows.DueReport) -> str:
    """The HL7 message control ID (MSH-10) of a report: the same at every try, and never the
    same for two reports, even after the outbox is purged or the box is installed anew
    (when it was queued, in milliseconds, then its row): at most 20 characters."""
    return f"C{int(report.created_at * 1000):x}.{report.id}"


# hl7apy and the FHIR models are the ``records`` extra: imported only when a receiver of
# theirs is configured (``settings/records.check_records`` refuses one without them)
def _mllp(receiver: RecordsReceiver, settings: RecordsConfig) -> Link:
    from firmware_app.records.mllp import MllpLink

    return MllpLink(receiver.host, receiver.port, settings.timeout_seconds)


def _fhir(receiver: RecordsReceiver, settings: RecordsConfig) -> Link:
    from firmware_app.records.fhir_link import FhirLink

    return FhirLink(receiver, settings.timeout_seconds)


#: what opens a link to a receiver, by its protocol
LINKS: dict[str, Callable[[RecordsReceiver, RecordsConfig], Link]] = {
    RecordsProtocol.HL7_MLLP: _mllp,
    RecordsProtocol.FHIR: _fhir,
}


def message(receiver: RecordsReceiver, settings: RecordsConfig, report: rows.DueReport,
            corrected: bool) -> bytes:
    """The wire message of a stored report for ``receiver`` (ValueError when it cannot be
    made)."""
    if receiver.fhir:
        from firmware_app.records import fhir

        return fhir.encode(fhir.bundle(report.content, corrected=corrected,
                                       performer=settings.sending_facility,
                                       patient_id_system=settings.patient_id_system))
    from firmware_app.records import hl7

    sender = hl7.Sender(settings.sending_application, settings.sending_facility,
                        receiver.receiving_application, receiver.receiving_facility)
    return hl7.oru_r01(report.content, control_id=control_id(report), sender=sender,
                       corrected=corrected, patient_id_system=settings.patient_id_system)


class RecordsSender:
    """Delivers one receiver's reports."""

    def __init__(self, config: Config, receiver: RecordsReceiver) -> None:
        self.config = config
        self.settings = config.records
        self.receiver = receiver
        self.conn = db.connect(config.database_path)
        self.failing = False
        self.next_purge = 0.0

    def send_due(self, stop: threading.Event | None = None, now: float | None = None) -> int:
        """Send what is due now over one link; how many reports were accepted."""
        due = rows.due_reports(self.conn, self.receiver.name, now, BATCH_LIMIT)
        if not due:
            return 0
        try:
            link = LINKS[self.receiver.protocol](self.receiver, self.settings)
        except LinkFailed as exc:
            self._link_failed(due, exc)
            return 0
        sent = 0
        try:
            for number, report in enumerate(due):
                if stop is not None and stop.is_set():
                    break
                try:
                    sent += self._send_one(link, report)
                except LinkFailed as exc:
                    self._link_failed(due[number:], exc)
                    break
        finally:
            link.close()
        if sent and self.failing:
            self.failing = False
            log.info("records %s (%s) takes reports again", self.receiver.name,
                     self.receiver.peer())
        return sent

    def _send_one(self, link: Link, report: rows.DueReport) -> int:
        corrected = (report.kind == ReportKind.VERDICT
                     or rows.sent_before(self.conn, self.receiver.name, report.study_key,
                                         report.id))
        try:
            wire = message(self.receiver, self.settings, report, corrected)
        except Exception as exc:  # one report's fault never stops the others
            self._hold_unmade(report, exc)
            return 0
        try:
            outcome = link.send(wire, control_id(report))
        except LinkFailed:
            raise
        except Exception as exc:  # whatever the receiver made the link do: a failed try
            log.exception("records %s: the exchange failed", self.receiver.name)
            raise LinkFailed(f"{self.receiver.peer()}: the exchange failed "
                             f"({type(exc).__name__})", event_codes.RECORDS_LOST) from None
        if isinstance(outcome, Delivered):
            with db.transaction(self.conn):
                rows.mark_sent(self.conn, report.id)
            log.info("records %s accepted the report of study %s (%s %d): %s",
                     self.receiver.name, report.study_key, report.kind, report.version,
                     outcome.answer)
            return 1
        error = f"{outcome.detail} (report {report.id}, study {report.study_key})"
        with db.transaction(self.conn):
            state = rows.mark_refused(self.conn, report.id, error, outcome.status,
                                      self.settings.max_refusals,
                                      self.settings.retry_min_seconds,
                                      self.settings.retry_max_seconds)
        if state == RecordState.HELD:
            log.error("records %s refused report %d %d times: held (%s)", self.receiver.name,
                      report.id, self.settings.max_refusals, outcome.detail)
            self._record(f"held after {self.settings.max_refusals} refusals: {error}",
                         event_codes.code(event_codes.RECORDS_HELD,
                                          self.settings.max_refusals, outcome.status),
                         force=True)
        else:
            log.warning("records %s refused report %d: %s", self.receiver.name, report.id,
                        outcome.detail)
            self._record(error, event_codes.code(event_codes.RECORDS_FAILED,
                                                 event_codes.RECORDS_REFUSED, outcome.status))
        return 0

    def _hold_unmade(self, report: rows.DueReport, exc: Exception) -> None:
        """The message could not be made from the stored report: trying again would make
        the same error, so it is held at once (recorded)."""
        error = f"the report {report.id} could not be written as a message: {exc}"
        log.error("records %s: %s", self.receiver.name, error)
        with db.transaction(self.conn):
            rows.mark_refused(self.conn, report.id, error, event_codes.RECORDS_NOT_MADE, 1,
                              self.settings.retry_min_seconds, self.settings.retry_max_seconds)
        self._record(error, event_codes.code(event_codes.RECORDS_HELD, 1,
                                             event_codes.RECORDS_NOT_MADE), force=True)

    def _link_failed(self, waiting: list[rows.DueReport], exc: LinkFailed) -> None:
        with db.transaction(self.conn):
            for report in waiting:
                rows.mark_failed(self.conn, report.id, str(exc), self.settings.retry_min_seconds,
                                 self.settings.retry_max_seconds)
        if not self.failing:
            log.warning("records %s (%s): %d report(s) not delivered: %s", self.receiver.name,
                        self.receiver.peer(), len(waiting), exc)
        self.failing = True
        self._record(str(exc), event_codes.code(event_codes.RECORDS_FAILED, exc.failure))

    def _record(self, error: str, code: str, force: bool = False) -> None:
        said = rows.last_said(self.conn, self.receiver.name, error[:500])
        if not force and said is not None and time.time() - said < REPEAT_EVENT_SECONDS:
            return
        with db.transaction(self.conn):
            db.record_event(self.conn, "WARNING", rows.event_component(self.receiver.name),
                            error[:500], code)

    def seconds_to_wait(self, now: float | None = None) -> float:
        """Until the next report is due, within MIN_PAUSE and POLL_SECONDS."""
        now = time.time() if now is None else now
        due = rows.next_due_at(self.conn, self.receiver.name)
        if due is None:
            return POLL_SECONDS
        return min(POLL_SECONDS, max(MIN_PAUSE, due - now))

    def purge(self, now: float | None = None) -> int:
        """Forget this receiver's sent and superseded rows older than the audit period."""
        with db.transaction(self.conn):
            return rows.purge(self.conn, self.receiver.name,
                              self.config.telemetry.audit_days * 86400, now)

    def run(self, stop: threading.Event, wake: threading.Event) -> None:
        """Pass after pass until ``stop``; sleep until a report is due or ``wake`` is set."""
        log.info("records: sending to %s (%s)", self.receiver.name, self.receiver.peer())
        try:
            while not stop.is_set():
                wake.clear()
                try:
                    if time.time() >= self.next_purge:
                        self.purge()
                        self.next_purge = time.time() + PURGE_EVERY
                    self.send_due(stop)
                    pause = self.seconds_to_wait()
                except Exception:  # keep the service running; the next pass tries again
                    log.exception("records %s: the pass failed", self.receiver.name)
                    pause = ERROR_PAUSE
                deadline = time.monotonic() + pause
                while not stop.is_set() and not wake.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    wake.wait(min(left, 1.0))
        finally:
            self.conn.close()
