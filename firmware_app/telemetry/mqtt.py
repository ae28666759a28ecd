"""The publisher: drains the outbox to the hospital's broker over MQTT v5 with TLS.

* TLS with the box's client certificate; the broker's ACL lets the
  certificate publish only under ``clinibox/<clinic>/<device>/``.
* Every message is sealed (encrypted to the hospital, signed by the device)
  once, and the sealed bytes are kept, so a resend is byte-identical.
* QoS 1: a message is marked sent only when its PUBACK arrives with a success
  reason code. A refused publish (e.g. "not authorized"), or one no receiver
  subscribed to ("no matching subscribers"), stays waiting and is logged; the
  link is dropped and retried later.
* A broken link is retried with exponential backoff and full jitter
  (``retry_min_seconds`` … ``retry_max_seconds``); each attempt uses a fresh
  client, and whatever was in flight is simply sent again from the outbox.
* The broker holds a last-will "offline" status (sealed like any message and
  listed in the audit) that it publishes if the box vanishes.
* The hospital's downlink (``downlink.py``): with ``[telemetry] hospital_signing_key``
  set, every accepted connection subscribes to ``clinibox-downlink/<clinic>/<device>``
  at QoS 1. The session persists (clean start off, ``[mqtt] session_expiry_seconds``),
  so the broker keeps the hospital's verdicts while the box is away. A verdict is
  acknowledged only once it is stored (manual PUBACK); one that could not be stored
  drops the link, and the broker delivers it again on the next connection.
* A rollout's package chunks (``package_fetch.py``) come on the same link, one at a time,
  as the box's updater asks for them.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import socket
import sqlite3
import ssl
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from clinibox_common.contracts.egress import check_message
from clinibox_common.contracts.envelope import Header, seal
from clinibox_common.contracts.statuses import OutboxState
from clinibox_common.contracts.topics import topic
from clinibox_common.errors import CliniboxError
from firmware_app.settings.box import Config
from firmware_app.storage import db, event_codes
from firmware_app.storage import telemetry as telemetry_rows
from firmware_app.storage.outbox import Outbox, OutboxMessage
from firmware_app.telemetry.downlink import DownlinkReceiver
from firmware_app.telemetry.identity import DeviceIdentity
from firmware_app.telemetry.messages import ModelFacts, build_status, status_downlink_key
from firmware_app.telemetry.package_fetch import ChunkFetcher

log = logging.getLogger(__name__)

#: PUBACKs we wait for at once (MQTT "receive maximum" on the broker is larger)
WINDOW = 32
CONNECT_TIMEOUT = 15.0
NO_MATCHING_SUBSCRIBERS = 0x10


def _no_delay(client: mqtt.Client) -> None:
    """Send small packets at once on ``client``'s socket (TCP_NODELAY): without it, each
    chunk's SUBSCRIBE waits for the broker's delayed ACK of the UNSUBSCRIBE before it."""
    sock = client.socket()
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class LinkDown(CliniboxError):
    """The broker link broke or refused something; reconnect after a backoff."""

    kind = "MQTT link down"


class Backoff:
    """Exponential backoff with full jitter, reset after a success."""

    def __init__(self, low: float, high: float, rng: random.Random | None = None) -> None:
        self.low, self.high = low, high
        self.failures = 0
        self.rng = rng or random.Random()

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt (grows with each failure)."""
        cap = min(self.high, self.low * (2 ** min(self.failures, 30)))
        self.failures += 1
        return self.rng.uniform(self.low, max(self.low, cap))

    def reset(self) -> None:
        """The link works again."""
        self.failures = 0


class Publisher:
    """Connects, keeps the link, and sends what waits in the outbox."""

    def __init__(self, config: Config, identity: DeviceIdentity,
                 hospital_key: X25519PublicKey, model: ModelFacts, started: float,
                 downlink: DownlinkReceiver | None = None,
                 fetcher: ChunkFetcher | None = None) -> None:
        self.config = config
        #: the hospital's downlink, when the box takes it (None: no verdicts come down)
        self.downlink = downlink
        #: fetches a rollout's package chunks on this link (with the downlink only)
        self.fetcher = fetcher if downlink is not None else None
        self.identity = identity
        self.hospital_key = hospital_key
        self.conn = db.connect(config.database_path)
        self.outbox = Outbox(self.conn, config.telemetry.outbox_max_messages, set(model.labels))
        self.model = model
        self.started = started
        self.backoff = Backoff(config.telemetry.retry_min_seconds,
                               config.telemetry.retry_max_seconds)
        self.client: mqtt.Client | None = None
        self.connected = threading.Event()
        self.acks: queue.Queue[tuple[int, bool, str]] = queue.Queue()
        self.sent_total = 0
        self._will: bytes | None = None

    def status(self, state: str) -> dict[str, Any]:
        """An online or offline status payload, read on the publisher's own connection."""
        return build_status(self.conn, self.outbox, self.model, state,
                            time.time() - self.started,
                            status_downlink_key(self.config, self.identity),
                            audit_keep_days=self.config.audit.keep_days)

    # -- sealing -------------------------------------------------------------
    def seal(self, kind: str, seq: int, payload: dict[str, Any]) -> bytes:
        """Gate, encrypt and sign one message (the gate runs again right before encryption)."""
        check_message(kind, payload, self.outbox.labels)
        header = Header(self.identity.clinic, self.identity.device, kind, seq)
        return seal(header, payload, self.hospital_key, self.identity.signing_key)

    def _prepare(self, batch: list[OutboxMessage]) -> list[tuple[OutboxMessage, bytes]]:
        """Seal what is not sealed yet and count the attempt: one commit for the batch."""
        sealed = [(m, m.envelope or self.seal(m.kind, m.seq, m.payload)) for m in batch]
        with db.transaction(self.conn):
            for message, envelope in sealed:
                if message.envelope is None:
                    self.outbox.set_envelope(message.seq, envelope)
                self.outbox.note_attempt(message.seq)
        return sealed

    # -- the link ------------------------------------------------------------
    def _new_client(self) -> mqtt.Client:
        mqtt_config = self.config.mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"clinibox-{self.identity.clinic}-{self.identity.device}",
                             protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        client.tls_set(ca_certs=mqtt_config.ca_file, certfile=mqtt_config.cert_file,
                       keyfile=mqtt_config.key_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.max_inflight_messages_set(WINDOW)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        if self.downlink is not None:
            client.manual_ack_set(True)  # a verdict is acknowledged once it is stored
            client.on_message = self._on_message
        client.will_set(topic(self.identity.clinic, self.identity.device, "status"),
                        self._will_envelope(), qos=1, retain=False)
        return client

    def _will_envelope(self) -> bytes:
        """The sealed "offline" last will; a new one (new seq) after each accepted connection."""
        if self._will is None:
            with db.transaction(self.conn):
                will = self.status("offline")
                seq = self.outbox.add("status", will, state=OutboxState.WILL)
            self._will = self.seal("status", seq, will)
        return self._will

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        if self.downlink is not None:  # a resumed session has it already; asking again is cheap
            client.subscribe(self.downlink.topic, qos=1)
        if self.fetcher is not None:
            _no_delay(client)  # a chunk's UNSUBSCRIBE and the next SUBSCRIBE go out at once
            self.fetcher.attach(client)
        self.connected.set()

    def _on_message(self, client, userdata, message) -> None:
        """A downlink message (paho's network thread): acknowledge it once kept or refused."""
        assert self.downlink is not None
        if self.fetcher is not None and self.fetcher.wants(message.topic):
            self.fetcher.deliver(message.topic, message.payload)
            if message.qos > 0:
                client.ack(message.mid, message.qos)
            return
        try:
            self.downlink.handle(message.payload)
        except (sqlite3.Error, OSError) as exc:
            log.error("cannot keep a downlink message, it stays unacknowledged: %s", exc)
            self.connected.clear()  # the sender drops the link: the broker delivers it again
            self.acks.put((-1, False, f"cannot keep a downlink message: {exc}"))
            return
        if message.qos > 0:
            client.ack(message.mid, message.qos)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if self.fetcher is not None:
            self.fetcher.detach()
        self.acks.put((-1, False, f"disconnected: {reason_code}"))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # 0x10 "No matching subscribers" is a success code, but nobody at the
        # hospital took the message (e.g. the receiver has not resubscribed
        # since a broker restart): keep it and try again later.
        delivered = not reason_code.is_failure and reason_code.value != NO_MATCHING_SUBSCRIBERS
        self.acks.put((mid, delivered, str(reason_code)))

    def connect(self) -> None:
        """Open the TLS link and wait for the broker's CONNACK; raise LinkDown if it fails."""
        client = self._new_client()
        self.connected.clear()
        session = Properties(PacketTypes.CONNECT)
        session.SessionExpiryInterval = self.config.mqtt.session_expiry_seconds
        try:
            client.connect(self.config.mqtt.host, self.config.mqtt.port,
                           keepalive=self.config.mqtt.keepalive, clean_start=False,
                           properties=session)
        except (OSError, ssl.SSLError) as exc:
            raise LinkDown(f"cannot reach broker {self.config.mqtt.host}:"
                           f"{self.config.mqtt.port}: {exc}") from exc
        client.loop_start()
        if not self.connected.wait(CONNECT_TIMEOUT):
            client.loop_stop()
            client.disconnect()
            raise LinkDown("broker did not accept the connection")
        self.client = client
        self._will = None  # this one is now held by the broker
        self.acks = queue.Queue()
        self.outbox.enqueue("status", self.status("online"))
        self._note_link(True, "")
        log.info("connected to broker %s:%d", self.config.mqtt.host, self.config.mqtt.port)

    def _note_link(self, up: bool, problem: str) -> None:
        """Record a change of link state for the viewer's device page (and an event when down)."""
        known = telemetry_rows.state_value(self.conn, "link_up")
        if known is not None and bool(known) == up:
            return
        with db.transaction(self.conn):
            telemetry_rows.set_state(self.conn, "link_up", float(up))
            telemetry_rows.set_state(self.conn, "link_since", time.time())
            if not up:
                db.record_event(self.conn, "WARNING", "telemetry", f"broker link down: {problem}",
                                event_codes.LINK_DOWN)

    def close(self, send_offline: bool) -> None:
        """Say "offline" (if asked and possible) and disconnect cleanly."""
        if self.client is None:
            return
        if send_offline and self.connected.is_set():
            self.outbox.enqueue("status", self.status("offline"))
            with contextlib.suppress(LinkDown):  # it waits for the next start otherwise
                self.drain(deadline=time.monotonic() + 3.0)
        self.client.disconnect()
        self.client.loop_stop()
        self.client = None
        self.connected.clear()

    # -- draining ------------------------------------------------------------
    def drain(self, deadline: float | None = None) -> int:
        """Send what waits, keeping up to WINDOW unacknowledged; return how many were acked."""
        assert self.client is not None
        in_flight: dict[int, int] = {}
        done = 0
        while True:
            if not self.connected.is_set():
                raise LinkDown("link lost while sending")
            if len(in_flight) < WINDOW:
                skip = set(in_flight.values())
                batch = [m for m in self.outbox.waiting(WINDOW + len(skip))
                         if m.seq not in skip][: WINDOW - len(in_flight)]
                for message, envelope in self._prepare(batch):
                    info = self.client.publish(
                        topic(self.identity.clinic, self.identity.device, message.kind),
                        envelope, qos=1)
                    if info.rc != mqtt.MQTT_ERR_SUCCESS:
                        raise LinkDown(f"publish failed: {mqtt.error_string(info.rc)}")
                    in_flight[info.mid] = message.seq
            if not in_flight:
                return done
            if deadline is not None and time.monotonic() > deadline:
                return done
            done += self._collect_acks(in_flight)

    def _collect_acks(self, in_flight: dict[int, int]) -> int:
        try:
            first = self.acks.get(timeout=CONNECT_TIMEOUT)
        except queue.Empty as exc:
            raise LinkDown("no acknowledgement from the broker") from exc
        acked = 0
        with db.transaction(self.conn):
            item: tuple[int, bool, str] | None = first
            while item is not None:
                mid, ok, reason = item
                if mid == -1:
                    raise LinkDown(reason)
                seq = in_flight.pop(mid, None)
                if seq is not None:
                    if not ok:
                        raise LinkDown(f"broker refused message {seq}: {reason}")
                    self.outbox.mark_sent(seq)
                    acked += 1
                try:
                    item = self.acks.get_nowait()
                except queue.Empty:
                    item = None
        self.sent_total += acked
        return acked

    def run(self, stop: threading.Event, wake: threading.Event) -> None:
        """Keep the link and drain the outbox until ``stop``; back off while the link is down."""
        while not stop.is_set():
            try:
                if self.client is None:
                    self.connect()
                    self.backoff.reset()
                self.drain()
                wake.wait(1.0)
                wake.clear()
            except LinkDown as exc:
                self._drop_link()
                self._note_link(False, str(exc))
                delay = self.backoff.next_delay()
                log.warning("%s; retrying in %.1f s (%d waiting)", exc, delay,
                            self.outbox.pending_count())
                stop.wait(delay)
        self.close(send_offline=True)
        self.conn.close()

    def _drop_link(self) -> None:
        if self.fetcher is not None:
            self.fetcher.detach()
        if self.client is not None:
            self.client.loop_stop()
            try:
                self.client.disconnect()
            except Exception:  # the link is already gone; nothing to tell the broker
                log.debug("disconnect after a broken link failed", exc_info=True)
        self.client = None
        self.connected.clear()
