"""The box's end of the hospital's downlink: a radiologist's verdict, or a rollout offer or
rollback order for the box's model, arrives and is kept.

The publisher (``mqtt.py``) subscribes to ``clinibox-downlink/<clinic>/<device>`` at
QoS 1 on every connection, in a persistent session (the broker keeps what comes while
the box is away), and hands each message to :meth:`DownlinkReceiver.handle` on paho's
network thread. The message is opened with the box's keys (``contracts/downlink.py``:
signed by the hospital's downlink signing key, encrypted to the box's downlink key,
for this box):

* refused: an event in the technician's log (``code`` ``downlink_<reason>``, at most
  :data:`EVENTS_PER_HOUR` of one code an hour) and dropped (acknowledged: sending it
  again would not make it acceptable);
* accepted: the review, its audit row and any note of an unknown study are written in
  ONE transaction before the message is acknowledged, so nothing acknowledged is lost;
  a redelivery (a sequence number kept already) writes nothing;
* late: an authentic message built more than ``MAX_AGE_DAYS`` ago (the box was offline
  for over a month) is still the radiologist's verdict: it is kept like any other, marked
  ``late`` (the study page says it arrived late), its sequence number settles the
  watermark (so the hospital stops sending it, and nothing after it waits on a gap), and
  an event (:data:`LATE`) tells the technician. Only authentic messages get this far:
  forged, another box's and bad-schema ones are refused as before;
* the study is found by its keyed reference (``identity.find_study``: only the box can
  resolve it). A reference no study on the box has (its study was deleted by retention,
  or the database was replaced) is kept with the study empty and an event says so: the
  study cannot come back, so it is not looked for again.

A link check (``clinibox central check-box``, the console's "test the link") is kept by its
sequence number (``storage/link_checks.py``) with an event, before it is acknowledged, and
:attr:`DownlinkReceiver.on_link_check` asks for a status at once: its watermark is the box's
answer, so the hospital knows within seconds that both directions work.

The hospital's time (a ``clock`` downlink: its receiver saw the box's status behind its own
clock) is kept the same way, by its sequence number, with an event. Any authentic message whose
signed ``created_at`` is ahead of the box's clock (``telemetry/hospital_time.py``) is handed to
the clock's helper, which moves the clock forward; such a message is not refused as "from the
future": the box's clock is the one that is wrong.

A rollout offer or rollback order is kept the same way, in ``model_offers`` with its audit row
in one transaction, before it is acknowledged; the updater (``models/updates.py``) acts on it.

A failure to store (the database busy past its timeout, the disk full) leaves the message
unacknowledged and asks for the link to be dropped: the broker delivers it again on the
next connection.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from clinibox_common.contracts import downlink, signing
from clinibox_common.contracts.downlink import DownlinkRefused
from clinibox_common.contracts.software_release import is_release
from firmware_app.settings.box import Config
from firmware_app.storage import db, hospital_clock, hospital_reviews, link_checks, model_offers
from firmware_app.telemetry import hospital_time
from firmware_app.telemetry.identity import DeviceIdentity, find_study

log = logging.getLogger(__name__)

#: the event-log component of the downlink's events
COMPONENT = "downlink"
#: events of one code written an hour at most (a flood of forgeries must not fill the log)
EVENTS_PER_HOUR = 10
#: the event code of a kept review whose study reference names no study on the box
UNKNOWN_STUDY = "downlink_unknown_study"
#: the event code of a review kept although it arrived after the freshness window
LATE = "downlink_late"
#: the event code of a link check kept (the hospital tested the link)
LINK_CHECK = "downlink_link_check"
#: the event code of the hospital's time kept (it saw the box's clock behind its own)
CLOCK = "downlink_clock"
#: what :meth:`DownlinkReceiver.handle` returns for a review kept now, one kept now that
#: arrived late, and a repeat
KEPT, KEPT_LATE, REPEAT = "kept", "kept-late", "repeat"


def refusal_code(reason: str) -> str:
    """The stable event code of a refused downlink (``downlink_bad-signature`` …)."""
    return f"downlink_{reason}"


def load_signing_key(path: str | Path) -> Ed25519PublicKey:
    """The hospital's downlink signing key (Ed25519 public key, PEM) at ``path``."""
    return signing.load_public_key(Path(path).expanduser().resolve())


class DownlinkReceiver:
    """Opens, checks and keeps the hospital's downlink messages (any thread)."""

    def __init__(self, config: Config, identity: DeviceIdentity,
                 hospital_key: Ed25519PublicKey) -> None:
        self.config = config
        self.identity = identity
        self.hospital_key = hospital_key
        self.topic = downlink.topic(identity.clinic, identity.device)
        self._local = threading.local()
        #: called after a rollout offer or rollback order is kept (wakes the updater)
        self.on_order: Callable[[], None] | None = None
        #: called after a link check is kept (queues a status at once: the box's answer)
        self.on_link_check: Callable[[], None] | None = None
        #: called with the connection, the study's key and the verdict's sequence number inside
        #: the transaction that keeps a verdict on a study the box has (the service queues
        #: the study's report for the clinic's records there), then ``on_verdict_kept``
        self.on_verdict: Callable[[sqlite3.Connection, str, int], None] | None = None
        self.on_verdict_kept: Callable[[], None] | None = None
        #: the box's clock (epoch seconds), which the hospital's signed time may be ahead of
        self.clock: Callable[[], float] = time.time

    def _conn(self) -> sqlite3.Connection:
        """This thread's own connection (paho calls back on its network thread)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = db.connect(self.config.database_path)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close the calling thread's connection, if it has one."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def handle(self, envelope: bytes) -> str:
        """Open and keep one message; :data:`KEPT`, :data:`KEPT_LATE`, :data:`REPEAT` or the
        refusal's reason.

        Raises (sqlite3.Error, OSError) only when the review could not be stored: the
        caller must then not acknowledge the message.
        """
        conn = self._conn()
        try:
            header, payload, late = downlink.open_downlink(
                envelope, clinic=self.identity.clinic, device=self.identity.device,
                hospital_key=self.hospital_key, box_key=self.identity.downlink_key,
                accept_stale=True, trust_hospital_clock=True)
        except DownlinkRefused as exc:
            log.warning("downlink message refused: %s (%s)", exc.reason, exc)
            with db.transaction(conn):
                self._note(conn, refusal_code(exc.reason),
                           f"a downlink message was refused: {exc.reason}")
            return exc.reason
        self._clock_ahead(envelope, payload["created_at"])
        if header.kind == downlink.KIND_CLOCK:
            return self._keep_time(conn, header.seq, payload)
        if header.kind in (downlink.KIND_ROLLOUT, downlink.KIND_ROLLBACK):
            return self._keep_order(conn, header.seq, header.kind, payload, late)
        if header.kind == downlink.KIND_LINK_CHECK:
            return self._keep_link_check(conn, header.seq, payload)
        return self._keep(conn, header.seq, payload, late)

    def _clock_ahead(self, envelope: bytes, created_at: float) -> None:
        """Hand an authentic message whose signed time is ahead of the box's clock to the
        clock's helper (``telemetry/hospital_time.py``); a failure only costs the time."""
        if not hospital_time.is_ahead(created_at, self.clock()):
            return
        try:
            hospital_time.hand_over(self.config.clock_incoming_dir, envelope, created_at)
        except OSError as exc:
            log.warning("the hospital's time could not be handed to the clock's helper: %s",
                        exc)

    def _keep_time(self, conn: sqlite3.Connection, seq: int, payload: dict[str, Any]) -> str:
        """Keep the hospital's time by its sequence number (the watermark moves on); the clock
        itself is moved by the helper it was handed to."""
        with db.transaction(conn):
            kept = hospital_clock.add(conn, seq=seq, created_at=payload["created_at"])
            if kept:
                self._note(conn, CLOCK, f"the hospital sent its time (downlink {seq}): the "
                           f"box's clock was {payload['behind_s']} s behind it")
        if not kept:
            return REPEAT
        log.info("hospital time %d kept (the box was %d s behind)", seq, payload["behind_s"])
        return KEPT

    def _keep_link_check(self, conn: sqlite3.Connection, seq: int,
                         payload: dict[str, Any]) -> str:
        """Keep the hospital's link check and ask for a status at once (the answer). A late
        one is kept too: its sequence number must settle the watermark like any other."""
        with db.transaction(conn):
            kept = link_checks.add(conn, seq=seq, created_at=payload["created_at"])
            if kept:
                self._note(conn, LINK_CHECK, f"the hospital tested the link (downlink {seq}); "
                           "the box answered with its status")
        if self.on_link_check is not None:  # a repeat is answered too: the hospital asks again
            self.on_link_check()
        if not kept:
            return REPEAT
        log.info("hospital link check %d kept; answering with a status", seq)
        return KEPT

    def _keep_order(self, conn: sqlite3.Connection, seq: int, kind: str,
                    payload: dict[str, Any], late: bool) -> str:
        """Keep a rollout offer or rollback order for the updater (``models/updates.py``).

        An order for another package than the box's own (``[models] name``, or a release
        of its software: no rollback order for one, the box goes back by itself) or a late one
        (the hospital's rollout has long moved on) is kept closed, refused: its sequence
        number still settles the watermark. A newer order for the package closes the
        older rollout offers still open. The updater tells the hospital of both."""
        own = payload["name"] == self.config.models.name or (
            is_release(payload["name"]) and kind == downlink.KIND_ROLLOUT)
        refusal = "invalid" if not own else "stale" if late else ""
        with db.transaction(conn):
            kept = model_offers.add(conn, seq=seq, kind=kind, payload=payload,
                                    step="refused" if refusal else "offered",
                                    reason=refusal, done=bool(refusal))
            if kept and not refusal:
                model_offers.finish_older(conn, payload["name"], seq, "replaced")
            if kept and refusal:
                self._note(conn, f"downlink_order_{refusal}",
                           f"the hospital's {kind} {seq} (rollout {payload['rollout']}, "
                           f"{payload['name']}@{payload['version']}) is not for this box's "
                           f"model or came too late; it is kept, not acted on")
        if not kept:
            return REPEAT
        log.info("hospital %s %d kept (rollout %d, %s@%s)%s", kind, seq, payload["rollout"],
                 payload["name"], payload["version"], f": refused, {refusal}" if refusal else "")
        if self.on_order is not None:  # the updater acts on it, or tells of its refusal
            self.on_order()
        return KEPT

    def _keep(self, conn: sqlite3.Connection, seq: int, payload: dict[str, Any],
              late: bool) -> str:
        ref = payload["study_ref"]
        key = find_study(conn, self.identity, ref)
        with db.transaction(conn):
            kept = hospital_reviews.add(
                conn, seq=seq, study_key=key, study_ref=ref, alert_seq=payload["alert_seq"],
                verdict=payload["verdict"], follow_up_months=payload.get("follow_up_months"),
                note=payload["note"], reviewed_at=payload["reviewed_at"], late=late)
            if kept and key is not None and self.on_verdict is not None:
                self.on_verdict(conn, key, seq)
            if kept and key is None:
                self._note(conn, UNKNOWN_STUDY, f"the hospital's verdict {seq} names a study "
                           f"this box does not have (reference {ref}); it is kept")
            if kept and late:
                given = time.strftime("%Y-%m-%d", time.gmtime(payload["reviewed_at"]))
                self._note(conn, LATE, f"the hospital's verdict {seq} arrived late (given "
                           f"{given} UTC, sent more than {downlink.MAX_AGE_DAYS:g} days ago); "
                           "it is kept and shown as late")
        if not kept:
            return REPEAT
        log.info("hospital verdict %d kept%s: %s", seq, " (late)" if late else "",
                 payload["verdict"])
        if key is not None and self.on_verdict_kept is not None:
            self.on_verdict_kept()
        return KEPT_LATE if late else KEPT

    @staticmethod
    def _note(conn: sqlite3.Connection, code: str, message: str) -> None:
        """An event in the technician's log, at most EVENTS_PER_HOUR of ``code`` an hour (in
        the caller's transaction)."""
        level = "INFO" if code in (UNKNOWN_STUDY, LINK_CHECK, CLOCK) else "WARNING"
        db.record_event_capped(conn, level, COMPONENT, message, code, EVENTS_PER_HOUR)


def downlink_receiver(config: Config, identity: DeviceIdentity) -> DownlinkReceiver | None:
    """The receiver of the hospital's verdicts, or None (logged once) when ``[telemetry]
    hospital_signing_key`` is empty: then no verdict can arrive."""
    if not config.telemetry.hospital_signing_key:
        log.info("downlink: no [telemetry] hospital_signing_key; the hospital's verdicts "
                 "cannot arrive on this box")
        return None
    return DownlinkReceiver(config, identity,
                            load_signing_key(config.telemetry.hospital_signing_key))
