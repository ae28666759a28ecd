"""Take envelopes off the broker, check them, keep the good ones, log the rest.

:meth:`Receiver.handle` decides about one message, in this order: the topic
is a clinibox topic → the envelope header parses → topic and header agree →
the claimed ``clinic/device`` is enrolled and not revoked → the device's
signature verifies and the payload decrypts with the hospital key → the
payload is exactly a message of the egress schema, not older than
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
session, shared subscription, QoS 1) and acknowledges a message only after
``handle`` has committed its outcome to the database; when the database
fails it acknowledges nothing, disconnects and comes back once the database
answers, so the broker delivers the message again. Should ``handle`` raise
anything else, the message is recorded as ``internal-error`` and
acknowledged; only if even that record fails is it left with the broker.
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
from central.store import Store, StoreError
from firmware_app.contracts import topics
from firmware_app.contracts.egress import EgressRefused, check_message
from firmware_app.contracts.envelope import EnvelopeError, open_envelope, read_header

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
#: Every word :meth:`Receiver.handle` may answer with.
OUTCOMES = (STORED, DUPLICATE, "bad-topic", "malformed", "unknown-device", "revoked",
            "topic-mismatch", "bad-signature", "undecryptable", "schema", "too-old",
            FROM_THE_FUTURE, INTERNAL_ERROR)
__all__ = ["FROM_THE_FUTURE", "FUTURE_SECONDS", "INTERNAL_ERROR", "OUTCOMES", "MqttService",
           "Receiver"]


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
        if self._store_failed:
            return  # not acknowledged: the broker sends it again after the reconnect
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = "<topic is not UTF-8>"
        try:
            self.receiver.handle(topic, message.payload)
        except StoreError as exc:
            log.error("database unavailable, message left with the broker: %s", exc)
            self._store_failed = True
            return
        except Exception as exc:  # a fault of ours that handle did not catch
            log.exception("could not handle a message on %r", topic)
            try:
                self.receiver.record_internal_error(topic, message.payload, exc=exc)
            except Exception as failure:  # not even recorded: as if the database failed
                log.error("could not record it either, message left with the broker: %s",
                          failure)
                self._store_failed = True
                return
        client.ack(message.mid, message.qos)
        self._acked = True

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
            since = time.monotonic()
            while not stop.is_set() and not self._store_failed:
                rc = self._client.loop(timeout=0.5)
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
