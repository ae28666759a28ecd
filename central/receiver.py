"""Take envelopes off the broker, check them, keep the good ones, log the rest.

:meth:`Receiver.handle` decides about one message, in this order: the topic
is a clinibox topic → the envelope header parses → topic and header agree →
the claimed ``clinic/device`` is enrolled and not revoked → the device's
signature verifies and the payload decrypts with the hospital key → the
payload is exactly a message of the egress schema (a status whose ``created_at`` is behind
the receiver's clock queues the hospital's time for the box, :mod:`central.box_clock`, even
when it is refused next as too old) → it is not older than
``[receiver] max_message_age_days`` and not made more than a day in the future
(:data:`FUTURE_SECONDS`: its ``created_at``, and a summary's ``period_start`` and
``period_end``) → it is stored, once per
``(clinic, device, seq)``. A box is known by its clinic and device together:
``clinic-b/box-1`` is not ``clinic-a/box-1``. Every refusal is recorded
(reason, topic, claimed clinic and device, size) and logged, its bytes kept
in the dead-letter table (``[receiver] keep_dead_letters``,
``dead_letter_max_mb``), and the receiver carries on. Reading is total: a
message that breaks the receiver itself (a fault of ours, not the sender's)
is recorded as ``internal-error`` with its bytes, so one message can never
stop the queue; only a database fault (:class:`StoreError`) leaves a
message unacknowledged.

:class:`MqttService` runs the broker link (MQTT v5 over TLS, persistent
session, shared subscription, QoS 1). It reads the link in short slices and
*takes in* what came: a message larger than any envelope may be
(:data:`MAX_ENVELOPE_BYTES`) is refused by its size before anything reads it
(``too-big``, its first :data:`TOO_BIG_KEPT` bytes kept); the others are held
in the database's intake (:mod:`central.intake`), a batch in one transaction,
and acknowledged once that committed. Between slices it handles the held
messages in turns across the boxes, so a box that floods the hospital takes
one box's share and another box's message is handled within a turn of
arriving; what a box sent beyond its share stays held, never dropped. When
the database fails it acknowledges nothing more, disconnects and comes back
once the database answers, so the broker delivers again what was not held.
Should ``handle`` raise anything else, the message is recorded as
``internal-error``; only if even that record fails does it stay held.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from central.config import CentralConfig, MqttConfig
from central.intake import Held, Intake
from central.store import Store, StoreError
from clinibox_common.contracts import topics
from clinibox_common.contracts.egress import EgressRefused, check_message
from clinibox_common.contracts.envelope import (
    MAX_ENVELOPE_BYTES,
    EnvelopeError,
    open_envelope,
    read_header,
)

log = logging.getLogger("clinibox.central")

STORED, DUPLICATE = "stored", "duplicate"
#: A message whose times lie more than :data:`FUTURE_SECONDS` ahead of the receiver's clock.
FROM_THE_FUTURE = "from-the-future"
#: How far ahead of the receiver's clock a message's times may be (a box's clock a little
#: fast is fine; a year 36812 is not).
FUTURE_SECONDS = 86_400.0
#: The payload fields that are times, by kind, checked against :data:`FUTURE_SECONDS`.
_TIME_FIELDS = {"summary": ("created_at", "period_start", "period_end")}
#: A message that broke the receiver itself: recorded, kept as a dead letter, acknowledged.
INTERNAL_ERROR = "internal-error"
#: A message larger than any envelope may be (:data:`MAX_ENVELOPE_BYTES`): refused by its
#: size before anything reads it, only its first :data:`TOO_BIG_KEPT` bytes kept.
TOO_BIG = "too-big"
#: The bytes of a too-big message kept as its dead letter (enough to see what it was).
TOO_BIG_KEPT = 4096
#: Every word :meth:`Receiver.handle` may answer with.
OUTCOMES = (STORED, DUPLICATE, "bad-topic", "malformed", "unknown-device", "revoked",
            "topic-mismatch", "bad-signature", "undecryptable", "schema", "too-old",
            FROM_THE_FUTURE, INTERNAL_ERROR, TOO_BIG)
__all__ = ["FROM_THE_FUTURE", "FUTURE_SECONDS", "INTERNAL_ERROR", "OUTCOMES", "TOO_BIG",
           "MqttService", "Receiver"]


class Receiver:
    """Verifies, decrypts, checks and stores one envelope at a time."""

    def __init__(self, config: CentralConfig, store: Store,
                 hospital_key: X25519PrivateKey) -> None:
        """Use ``store`` for devices and messages and ``hospital_key`` to decrypt."""
        self.config = config
        self.store = store
        self._hospital_key = hospital_key
        self.counts: Counter[str] = Counter()

    def handle(self, topic: str, payload: bytes, received_at: float | None = None) -> str:
        """Decide about one message and record the outcome; return the outcome word.

        Raises :class:`StoreError` only when the database cannot record the
        outcome: the caller must then not acknowledge the message.
        """
        received_at = time.time() if received_at is None else received_at
        payload = bytes(payload)
        try:
            outcome = self._handle(topic, payload, received_at)
        except StoreError:
            raise
        except Exception as exc:  # a fault of ours: recorded, so it cannot block the queue
            log.exception("could not handle a %d-byte message on %r", len(payload),
                          str(topic)[:200])
            outcome = self.record_internal_error(topic, payload, received_at, exc)
            return outcome
        self.counts[outcome] += 1
        return outcome

    def receive_waiting(self, clinic: str, device: str) -> Counter:
        """Take again what a box sent before it was enrolled: each of its dead letters refused
        as ``unknown-device`` is handled as if it arrived now (with its own arrival time, so the
        age checks hold), and replaced by that outcome. A box provisioned before the hospital
        enrolled it loses nothing it sent meanwhile (its first status, with its downlink key,
        or an alert), and the hospital need not wait for its next heartbeat. The outcomes,
        counted."""
        outcomes: Counter = Counter()
        record = self.store.device(clinic, device)
        if record is None or record.revoked_at is not None:
            return outcomes  # not (or no longer) enrolled: the letters stay as they are
        for letter_id, topic, received_at, payload in self.store.waiting_letters(clinic, device):
            outcomes[self.handle(topic, payload, received_at)] += 1
            self.store.drop_dead_letter(letter_id)
        return outcomes

    def record_internal_error(self, topic: str, payload: bytes, received_at: float | None = None,
                              exc: BaseException | None = None) -> str:
        """Record a message that broke the receiver as ``internal-error``, bytes kept.

        Raises whatever the database raises (the caller then keeps the message).
        """
        parsed = topics.parse_topic(topic) if isinstance(topic, str) else None
        claimed = None if parsed is None else (parsed[0], parsed[1])
        detail = type(exc).__name__ if exc is not None else "unexpected fault"
        self._refuse(INTERNAL_ERROR, str(topic), claimed, len(payload), detail,
                     bytes(payload), time.time() if received_at is None else received_at)
        self.counts[INTERNAL_ERROR] += 1
        return INTERNAL_ERROR

    def _handle(self, topic: str, payload: bytes, received_at: float) -> str:
        size = len(payload)
        if size > MAX_ENVELOPE_BYTES:
            return self.refuse_too_big(topic, payload[:TOO_BIG_KEPT], size, received_at)
        parsed = topics.parse_topic(topic)

        def refuse(reason: str, claimed: tuple[str, str] | None, detail: str) -> str:
            return self._refuse(reason, topic, claimed, size, detail, payload, received_at)

        if parsed is None:
            return refuse("bad-topic", None, "not a clinibox topic")
        clinic, device, kind = parsed
        try:
            header = read_header(payload)
        except EnvelopeError as exc:
            return refuse("malformed", (clinic, device), str(exc))
        claimed = (header.clinic, header.device)
        if (clinic, device, kind) != (header.clinic, header.device, header.kind):
            return refuse("topic-mismatch", claimed,
                          f"signed header says {header.clinic}/{header.device}/{header.kind}")
        record = self.store.device(*claimed)
        if record is None:
            return refuse("unknown-device", claimed,
                          f"{header.clinic}/{header.device} is not enrolled")
        if record.revoked_at is not None:
            return refuse("revoked", claimed, "device's enrolment was revoked")
        try:
            opened = open_envelope(payload, record.public_key(), self._hospital_key)
        except EnvelopeError as exc:
            return refuse(exc.reason, claimed, str(exc))
        except ValueError as exc:  # an enrolled key that no longer parses
            return refuse("bad-signature", claimed, str(exc))
        try:
            check_message(header.kind, opened.payload, None)
        except EgressRefused as exc:
            return refuse("schema", claimed, str(exc))
        if header.kind == "status" and self.config.keys.hospital_signing_key:
            self.store.notice_clock(header, opened.payload, received_at)
        limit = self.config.receiver.max_message_age_days
        age_days = (received_at - float(opened.payload.get("created_at", 0))) / 86400
        if age_days > limit:  # a replay of old traffic, or a clock gone wrong
            return refuse("too-old", claimed,
                          f"created {age_days:.0f} days ago, over [receiver] "
                          f"max_message_age_days ({limit:g})")
        for name in _TIME_FIELDS.get(header.kind, ("created_at",)):
            value = opened.payload.get(name)
            ahead = float(value) - received_at if isinstance(value, int | float) else 0.0
            if ahead > FUTURE_SECONDS:  # a clock gone wrong, or a box making trouble
                return refuse(FROM_THE_FUTURE, claimed,
                              f"{name} is {ahead / 86400:.0f} days ahead of the receiver's "
                              f"clock (at most {FUTURE_SECONDS / 86400:g})")
        if self.store.store(header, opened.payload, received_at):
            log.debug("stored %s/%s %s #%d", header.clinic, header.device, header.kind,
                      header.seq)
            return STORED
        log.info("duplicate %s/%s #%d ignored (already stored)", header.clinic, header.device,
                 header.seq)
        return DUPLICATE

    def refuse_too_big(self, topic: str, head: bytes, size: int, received_at: float) -> str:
        """Refuse a message of ``size`` bytes, over :data:`MAX_ENVELOPE_BYTES`, by its size
        alone (nothing parsed); ``head``: its first bytes, kept as its dead letter."""
        parsed = topics.parse_topic(topic)
        claimed = None if parsed is None else (parsed[0], parsed[1])
        return self._refuse(TOO_BIG, topic, claimed, size,
                            f"{size} bytes, over the {MAX_ENVELOPE_BYTES} an envelope may have",
                            head[:TOO_BIG_KEPT], received_at)

    def _refuse(self, reason: str, topic: str, claimed: tuple[str, str] | None, size: int,
                detail: str, payload: bytes, received_at: float) -> str:
        settings = self.config.receiver
        self.store.reject(reason, topic, claimed, size, received_at,
                          dead_letter=payload if settings.keep_dead_letters else None,
                          dead_letter_max_bytes=settings.dead_letter_max_mb << 20)
        log.warning("refused %d-byte message on %r: %s (%s)", size, topic[:200], reason, detail)
        return reason


#: MQTT v5 DISCONNECT reason: another connection used our client id.
SESSION_TAKEN_OVER = 0x8E
#: Seconds a connection must last (without a failed message) to count as healthy.
HEALTHY_AFTER = 10.0
#: Messages held in the intake (then acknowledged) in one transaction at most.
TAKE_IN_BATCH = 500
#: Their bytes at most: with the broker's ``message_size_limit`` and the too-big refusal,
#: this bounds what the receiver holds in memory of the messages it takes in.
TAKE_IN_BYTES = 16 << 20
#: Seconds of reading the link before what came in is held (and acknowledged).
READ_SLICE = 0.05
#: Seconds of handling held messages before the link is read again.
HANDLE_SLICE = 0.1
#: The most unacknowledged messages the broker may send the receiver at once (MQTT v5
#: Receive Maximum).
RECEIVE_MAXIMUM = 1000


def mqtt_client(settings: MqttConfig, client_id: str, *, manual_ack: bool) -> mqtt.Client:
    """An MQTT v5 client over TLS with ``settings``' CA, certificate and key (the receiver's
    and the downlink publisher's), not yet connected; ``manual_ack``: the caller acknowledges
    each message."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    client.tls_set(ca_certs=settings.ca_file or None, certfile=settings.cert_file or None,
                   keyfile=settings.key_file or None)
    return client


class MqttService:
    """The broker link: feeds messages to a :class:`Receiver`, acknowledging after commit."""

    def __init__(self, config: CentralConfig, receiver: Receiver, *,
                 max_backoff: float = 60.0, report_every: float = 300.0) -> None:
        """Connect with ``config.mqtt`` and hand every message to ``receiver``."""
        self.config = config
        self.receiver = receiver
        self.max_backoff = max_backoff
        self.report_every = report_every
        self.client_id = config.mqtt.resolved_client_id()
        self.connected = threading.Event()
        self._store_failed = False
        self._acked = False
        self.intake = Intake(receiver.store.database, self.client_id)
        #: taken off the link, not yet held: (topic, payload, received_at, mid, qos)
        self._taken: list[tuple[str, bytes, float, int, int]] = []
        self._taken_bytes = 0
        #: too big to take: (topic, first bytes, size, received_at, mid, qos)
        self._too_big: list[tuple[str, bytes, int, float, int, int]] = []
        #: the rest of the turn being handled (a slice may end in the middle of one)
        self._turn: list[Held] = []
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        client = mqtt_client(self.config.mqtt, self.client_id, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    # -- callbacks (all run in the serve() thread) --------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.error("broker %s:%d refused the connection: %s", self.config.mqtt.host,
                      self.config.mqtt.port, reason)
            return
        log.info("connected to %s:%d as %s (session %s)", self.config.mqtt.host,
                 self.config.mqtt.port, self.client_id,
                 "resumed" if flags.session_present else "new")
        client.subscribe(topics.subscription(self.config.mqtt.group), qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        if any(r.is_failure for r in reasons):
            log.error("the broker refused the subscription: %s", reasons)
            client.disconnect()
            return
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.connected.clear()
        if getattr(reason, "value", None) == SESSION_TAKEN_OVER:
            log.error("another client connected with our client id %r and took the session "
                      "over: give each receiver its own [mqtt] client_id", self.client_id)
        else:
            log.info("disconnected from the broker: %s", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """Take a message in hand (held and acknowledged by :meth:`take_in`); one larger than
        an envelope may be is refused by its size, only its first bytes kept."""
        if self._store_failed:
            return  # not acknowledged: the broker sends it again after the reconnect
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = "<topic is not UTF-8>"
        payload, now = message.payload, time.time()
        if len(payload) > MAX_ENVELOPE_BYTES:
            self._too_big.append((topic, bytes(payload[:TOO_BIG_KEPT]), len(payload), now,
                                  message.mid, message.qos))
            return
        self._taken.append((topic, bytes(payload), now, message.mid, message.qos))
        self._taken_bytes += len(payload)

    def take_in(self, client: mqtt.Client) -> int:
        """Hold what was taken off the link in the intake, in one transaction, then
        acknowledge it (a too-big one once its refusal is recorded); how many. When the
        database fails nothing more is acknowledged: the broker sends it again."""
        taken, too_big = self._taken, self._too_big
        self._taken, self._too_big, self._taken_bytes = [], [], 0
        try:
            for topic, head, size, at, mid, qos in too_big:
                self.receiver.refuse_too_big(topic, head, size, at)
                self.receiver.counts[TOO_BIG] += 1
                client.ack(mid, qos)
            self.intake.put((topic, payload, at) for topic, payload, at, _, _ in taken)
        except Exception as exc:  # the database, or a fault of ours: left with the broker
            log.error("could not hold %d messages, left with the broker: %s", len(taken), exc)
            self._store_failed = True
            return 0
        for *_, mid, qos in taken:
            client.ack(mid, qos)
        if taken or too_big:
            self._acked = True
        return len(taken) + len(too_big)

    def handle_held(self, budget: float = HANDLE_SLICE) -> bool:
        """Handle held messages in turns across the boxes (:meth:`central.intake.Intake.
        next_turn`) for about ``budget`` seconds; whether any are still waiting."""
        deadline = time.monotonic() + budget
        try:
            while True:
                if not self._turn:
                    self._turn = self.intake.next_turn()
                    if not self._turn:
                        return False
                held = self._turn[0]
                if not self._handle_one(held.topic, held.payload, held.received_at):
                    self._turn = []
                    return True  # the database failed: the message stays held
                self.intake.done(held.id)
                del self._turn[0]
                if time.monotonic() >= deadline:
                    return True
        except StoreError as exc:
            self._turn = []
            log.error("database unavailable, messages stay held: %s", exc)
            self._store_failed = True
            return True

    def _handle_one(self, topic: str, payload: bytes, received_at: float) -> bool:
        """Handle one message; False when its outcome could not be recorded."""
        try:
            self.receiver.handle(topic, payload, received_at)
        except StoreError as exc:
            log.error("database unavailable, message stays held: %s", exc)
            self._store_failed = True
            return False
        except Exception as exc:  # a fault of ours that handle did not catch
            log.exception("could not handle a message on %r", topic)
            try:
                self.receiver.record_internal_error(topic, payload, received_at, exc=exc)
            except Exception as failure:  # not even recorded: as if the database failed
                log.error("could not record it either, message stays held: %s", failure)
                self._store_failed = True
                return False
        return True

    def _read_more(self, rc: MQTTErrorCode) -> MQTTErrorCode:
        """Go on reading while messages keep coming, up to a batch or :data:`READ_SLICE`."""
        deadline = time.monotonic() + READ_SLICE
        while (rc == MQTTErrorCode.MQTT_ERR_SUCCESS and not self._store_failed
               and len(self._taken) < TAKE_IN_BATCH and self._taken_bytes < TAKE_IN_BYTES
               and time.monotonic() < deadline):
            before = len(self._taken) + len(self._too_big)
            rc = self._client.loop(timeout=0.0)
            if len(self._taken) + len(self._too_big) == before:
                break
        return rc

    # -- the loop ------------------------------------------------------------
    def serve(self, stop: threading.Event) -> None:
        """Receive until ``stop`` is set, reconnecting with backoff after any failure."""
        backoff = 1.0
        last_report = time.monotonic()
        while not stop.is_set():
            if not self._wait_for_database(stop):
                break
            try:
                self._connect()
            except (OSError, ValueError) as exc:
                log.warning("cannot reach broker %s:%d (%s); retrying in %.0f s",
                            self.config.mqtt.host, self.config.mqtt.port, exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            self._store_failed = self._acked = False
            self._taken, self._too_big, self._taken_bytes, self._turn = [], [], 0, []
            since = time.monotonic()
            busy = True  # held messages of an earlier run are handled first thing
            while not stop.is_set() and not self._store_failed:
                rc = self._read_more(self._client.loop(timeout=0.0 if busy else 0.5))
                taken = self.take_in(self._client)
                if (busy or taken) and not self._store_failed:  # idle: no query at all
                    busy = self.handle_held()
                if self._acked or (self.connected.is_set()
                                   and time.monotonic() - since > HEALTHY_AFTER):
                    backoff = 1.0  # the link works: the next failure starts a fresh backoff
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    log.warning("lost the broker (%s); reconnecting in %.0f s",
                                mqtt.error_string(rc), backoff)
                    break
                if time.monotonic() - last_report >= self.report_every:
                    self._log_counts()
                    last_report = time.monotonic()
            self._disconnect()
            if not stop.is_set():
                stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
        self._log_counts()

    def _connect(self) -> None:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.config.mqtt.session_expiry
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        self._client.connect(self.config.mqtt.host, self.config.mqtt.port,
                             keepalive=self.config.mqtt.keepalive, clean_start=False,
                             properties=properties)

    def _disconnect(self) -> None:
        self.connected.clear()
        try:
            self._client.disconnect()
            self._client.loop(timeout=0.1)
        except (OSError, ValueError):
            pass  # the link is gone already; the session stays with the broker

    def _wait_for_database(self, stop: threading.Event) -> bool:
        backoff = 1.0
        while not self.receiver.store.ping():
            log.error("database %s does not answer; retrying in %.0f s",
                      self.receiver.store.where, backoff)
            if stop.wait(backoff):
                return False
            backoff = min(backoff * 2, self.max_backoff)
        return True

    def _log_counts(self) -> None:
        counts = self.receiver.counts
        if counts:
            log.info("messages so far: %s",
                     ", ".join(f"{word} {counts[word]}" for word in sorted(counts)))
