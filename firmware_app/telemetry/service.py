"""The telemetry producer: turns the box's state into outbox messages on schedule.

Each tick it queues the alerts complete studies owe (one per study and
alerting model), a heartbeat when one is due, a summary when a period has ended (periods
follow each other without gaps, across restarts), and purges messages older
than the audit window. Sending is the publisher's job (``mqtt.py``); this
thread only writes the outbox, so it works the same with the link down.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from clinibox_common.contracts.egress import EgressRefused
from firmware_app.settings.box import Config
from firmware_app.storage import audit_witness, db
from firmware_app.storage import telemetry as telemetry_rows
from firmware_app.storage.outbox import Outbox
from firmware_app.telemetry.identity import DeviceIdentity
from firmware_app.telemetry.messages import (
    ModelFacts,
    build_status,
    build_summary,
    queue_alerts,
    status_downlink_key,
)

log = logging.getLogger(__name__)

TICK_SECONDS = 0.5
#: How often the running service notes that it is alive (the viewer's device page reads it).
SEEN_EVERY = 10.0
PURGE_EVERY = 3600.0


class TelemetryProducer:
    """Writes alerts, summaries and heartbeats into the outbox."""

    def __init__(self, config: Config, identity: DeviceIdentity, model: ModelFacts,
                 on_queued: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.identity = identity
        self.model = model
        self.on_queued = on_queued
        self.started = time.time()
        self.conn = db.connect(config.database_path)
        self.outbox = Outbox(self.conn, config.telemetry.outbox_max_messages, set(model.labels))
        # the first period starts at the first result, so nothing goes unreported
        telemetry_rows.start_summaries(self.conn, self.started)
        self.next_heartbeat = self.started + config.telemetry.heartbeat_seconds
        self.next_purge = self.started
        self.last_seen_note = 0.0
        #: why the last summary was refused ("" when it was not), so it is logged once
        self.summary_refused = ""

    def uptime(self) -> float:
        """Seconds since the service started."""
        return time.time() - self.started

    def answer_link_check(self) -> None:
        """Send a status at the next tick (any thread): the answer to the hospital's link
        check, whose watermark confirms it."""
        self.next_heartbeat = 0.0

    def status(self, state: str) -> dict:
        """A status payload (heartbeats; the publisher makes online/offline itself)."""
        return build_status(self.conn, self.outbox, self.model, state, self.uptime(),
                            status_downlink_key(self.config, self.identity),
                            audit_keep_days=self.config.audit.keep_days)

    def _summary_start(self) -> float:
        end = telemetry_rows.state_value(self.conn, "summary_end")
        assert end is not None, "start_summaries wrote it when the service started"
        return end

    def tick(self, now: float | None = None) -> int:
        """Do whatever is due; return how many messages were queued."""
        now = time.time() if now is None else now
        if now - self.last_seen_note >= SEEN_EVERY:
            telemetry_rows.set_state(self.conn, "appliance_seen_at", now)
            self.last_seen_note = now
        queued = queue_alerts(self.conn, self.outbox, self.identity, self.model)
        queued += self._summary(now)
        if now >= self.next_heartbeat:
            with db.transaction(self.conn):  # the audit head and the row it follows: one snapshot
                audit_witness.remember_acknowledged(self.conn)
                self.outbox.add("status", self.status("heartbeat"))
            self.next_heartbeat = now + self.config.telemetry.heartbeat_seconds
            queued += 1
        if now >= self.next_purge:
            with db.transaction(self.conn):
                audit_witness.remember_acknowledged(self.conn)  # before its message is purged
                purged = self.outbox.purge(self.config.telemetry.audit_days * 86400)
            if purged:
                log.info("purged %d messages older than the audit window", purged)
            self.next_purge = now + PURGE_EVERY
        if queued:
            self.on_queued()
        return queued

    def _summary(self, now: float) -> int:
        """Queue the period's summary when it is due; 1 when it was queued. A summary the
        outbox refuses is logged (once for each reason) and tried again later: it never holds
        the heartbeat or anything else back."""
        start = self._summary_start()
        if now - start < self.config.telemetry.summary_seconds:
            return 0
        try:
            with db.transaction(self.conn):
                payload = build_summary(self.conn, self.outbox, self.model, (start, now),
                                        self.uptime(), self.config.state_dir)
                self.outbox.add("summary", payload)
                telemetry_rows.set_state(self.conn, "summary_end", now)
        except EgressRefused as exc:
            if str(exc) != self.summary_refused:
                log.error("the summary from %s was not queued: %s", dt.datetime.fromtimestamp(
                    start, dt.timezone.utc).isoformat(timespec="seconds"), exc)
                self.summary_refused = str(exc)
            return 0
        self.summary_refused = ""
        return 1

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop``; an error is logged and the next tick tries again."""
        while not stop.wait(TICK_SECONDS):
            try:
                self.tick()
            except Exception:  # keep the box running; the next tick retries
                log.exception("telemetry tick failed")
        self.conn.close()
