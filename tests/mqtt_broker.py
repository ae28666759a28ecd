"""A real Mosquitto broker for tests: TLS, client certificates and a per-device ACL.

Identities (one certificate each, all issued by one throw-away CA):

* a device ``<clinic>/<device>`` (certificate CN ``clinic-a/box-1``) may publish only
  on ``clinibox/<clinic>/<device>/<kind>`` for the kinds in
  ``clinibox_common.contracts.egress.KINDS`` and may read only its own downlink,
  ``clinibox-downlink/<clinic>/<device>`` (the hospital's verdicts,
  ``clinibox_common.contracts.downlink``);
* ``central-receiver`` may read ``clinibox/#`` (also through a shared subscription
  such as ``$share/central/clinibox/+/+/+``) and write ``clinibox-downlink/#``;
* ``broker-auditor`` may read ``#``: the :class:`Auditor` uses it to capture every
  message the broker forwards.

The broker takes the username from the certificate's CN (``use_identity_as_username``)
and refuses clients without a certificate from the CA during the TLS handshake. The
ACL is one ``pattern write clinibox/%u/<kind>`` line per kind and one ``pattern read
clinibox-downlink/%u``: Mosquitto 2.0.11
substitutes a CN containing ``/`` into ``%u`` as it is, so ``clinic-a/box-1`` gets
``clinibox/clinic-a/box-1/alert`` and so on, and a device added later needs no ACL
change. Under MQTT v5 Mosquitto 2.0.11 answers a denied QoS 1 PUBLISH with PUBACK
reason code 0x87 (Not authorized) and grants every SUBSCRIBE (SUBACK with the
requested QoS) but forwards only the messages the ACL lets the client read.

Persistence, as Mosquitto 2.0.11 does it (``persistence true``, written on a clean
stop): a session survives a restart only if its CONNECT had clean start *off* and a
session expiry interval > 0 (clean start on, the session is dropped at restart,
whatever its expiry); the QoS 1 messages queued for it survive with it, and so do
its ordinary subscriptions, but not its shared (``$share/...``) subscriptions: until
the client subscribes again, a publish that only a shared subscription matched gets
PUBACK 0x10 (No matching subscribers) and is dropped. A receiver must therefore
subscribe again on every connection, session present or not.

Fixtures, for a test module to import (the function names end in ``_fixture``, the
fixture names do not, so the test arguments shadow no imported name)::

    from tests.mqtt_broker import auditor_fixture, broker_fixture, mqtt_pki_fixture

    def test_x(broker: Broker, auditor: Auditor, mqtt_pki: MqttPki) -> None: ...

* ``mqtt_pki`` (session): :func:`make_mqtt_pki` with :data:`DEFAULT_DEVICES`;
* ``broker`` (function): a started :class:`Broker` in the test's ``tmp_path``, stopped after;
* ``auditor`` (function): a connected :class:`Auditor` on that broker, closed after.

Helpers: :func:`client` (a connected paho v5 TLS client or :class:`ConnectFailed`),
:func:`publish_and_wait` (the PUBACK reason code), :func:`subscribe_and_wait` (the
SUBACK reason codes), :func:`close`, and :class:`MessageLog` to record what a client
receives.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from clinibox_common.contracts.egress import KINDS
from tests.ports import free_port
from tests.tls_certs import CertificateAuthority

MOSQUITTO = Path("/usr/sbin/mosquitto")
RECEIVER_CN = "central-receiver"
AUDITOR_CN = "broker-auditor"
#: The devices :func:`mqtt_pki_fixture` issues certificates for: two in one clinic, one in another.
DEFAULT_DEVICES: tuple[tuple[str, str], ...] = (
    ("clinic-a", "box-1"), ("clinic-a", "box-2"), ("clinic-b", "box-9"),
)
#: PUBACK/SUBACK reason code Mosquitto uses for an ACL denial under MQTT v5.
NOT_AUTHORIZED = 0x87


@dataclass(frozen=True)
class Identity:
    """A client certificate, its key and the common name in it."""

    cn: str
    cert: Path
    key: Path


@dataclass
class MqttPki:
    """The CA, the broker's server certificate and the clients' certificates."""

    folder: Path
    authority: CertificateAuthority
    server_cert: Path
    server_key: Path
    receiver: Identity
    auditor: Identity
    devices: dict[tuple[str, str], Identity] = field(default_factory=dict)

    @property
    def ca_cert(self) -> Path:
        """The CA certificate the broker and the clients trust."""
        return self.authority.cert_path

    def device(self, clinic: str, device: str) -> Identity:
        """The certificate of device ``clinic/device`` (issued by :meth:`add_device`)."""
        return self.devices[(clinic, device)]

    def add_device(self, clinic: str, device: str) -> Identity:
        """Issue (or return the existing) certificate with CN ``clinic/device``.

        The broker's ACL is a pattern on the CN, so a running broker accepts it as is.
        """
        if (clinic, device) not in self.devices:
            self.devices[(clinic, device)] = _issue_client(self.authority,
                                                           f"{clinic}/{device}", self.folder)
        return self.devices[(clinic, device)]


def _issue_client(authority: CertificateAuthority, cn: str, folder: Path) -> Identity:
    cert, key = authority.issue_client(cn, folder)
    return Identity(cn, cert, key)


def make_mqtt_pki(folder: Path, devices: list[tuple[str, str]] | tuple[tuple[str, str], ...]
                  = DEFAULT_DEVICES) -> MqttPki:
    """A CA, a server certificate for localhost/127.0.0.1, and the clients' certificates.

    One client certificate per ``(clinic, device)`` with CN ``clinic/device``, plus
    the receiver's (CN ``central-receiver``) and the auditor's (CN ``broker-auditor``).
    """
    authority = CertificateAuthority.create(folder, name="clinibox MQTT test CA")
    server_cert, server_key = authority.issue_server("localhost", folder, stem="server")
    pki = MqttPki(folder, authority, server_cert, server_key,
                  _issue_client(authority, RECEIVER_CN, folder),
                  _issue_client(authority, AUDITOR_CN, folder))
    for clinic, device in devices:
        pki.add_device(clinic, device)
    return pki


def acl_text() -> str:
    """The broker's ACL file: devices write their own topics and read their own downlink, the
    receiver reads the devices' topics and writes the downlinks, the auditor reads all."""
    device_lines = "\n".join(f"pattern write clinibox/%u/{kind}" for kind in KINDS)
    return (
        "# Devices (certificate CN <clinic>/<device>): publish on their own topics only,\n"
        "# read only their own downlink (the hospital's verdicts and model orders) and the\n"
        "# rollouts' package chunks.\n"
        f"{device_lines}\n"
        "pattern read clinibox-downlink/%u\n"
        "pattern read clinibox-packages/#\n\n"
        f"user {RECEIVER_CN}\n"
        "topic read clinibox/#\n"
        "topic write clinibox-downlink/#\n"
        "topic write clinibox-packages/#\n\n"
        f"user {AUDITOR_CN}\n"
        "topic read #\n"
    )


class Broker:
    """A Mosquitto process on 127.0.0.1 with TLS client certificates and the clinibox ACL.

    Everything lives in ``folder``: ``mosquitto.conf``, ``acl``, ``mosquitto.log``,
    ``stderr.log`` and the persistence file ``mosquitto.db``. The port stays the same
    across :meth:`restart`. Usable as a context manager (started on entry, stopped on exit).
    """

    host = "127.0.0.1"

    def __init__(self, folder: Path, pki: MqttPki, port: int | None = None, *,
                 extra_conf: str = "", extra_acl: str = "",
                 log_types: tuple[str, ...] = ("all",)) -> None:
        """Prepare (not start) a broker; ``port`` defaults to a free one. ``extra_acl`` is
        appended to :func:`acl_text`; ``log_types`` are Mosquitto's ``log_type`` lines (``all``
        writes a debug line for every message)."""
        self.folder = folder
        self.pki = pki
        self.port = port or free_port()
        #: a port we picked may be taken before Mosquitto binds it: pick another then
        self._may_move = port is None
        self.extra_conf = extra_conf
        self.extra_acl = extra_acl
        self.log_types = log_types
        self.conf_path = folder / "mosquitto.conf"
        self.acl_path = folder / "acl"
        self.log_path = folder / "mosquitto.log"
        self.stderr_path = folder / "stderr.log"
        self.db_path = folder / "mosquitto.db"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``mqtts://host:port`` of the listener."""
        return f"mqtts://{self.host}:{self.port}"

    def config_text(self) -> str:
        """The mosquitto.conf this broker runs with."""
        # Started as root, Mosquitto switches to user "mosquitto", which can read
        # neither pytest's tmp folders nor the keys; "user root" keeps it root.
        user = "user root\n" if os.geteuid() == 0 else ""
        log_types = "".join(f"log_type {kind}\n" for kind in self.log_types)
        return (
            f"{user}"
            "per_listener_settings false\n"
            "allow_anonymous false\n"
            f"acl_file {self.acl_path}\n"
            "persistence true\n"
            f"persistence_location {self.folder}/\n"
            f"log_dest file {self.log_path}\n"
            f"{log_types}"
            "log_timestamp_format %Y-%m-%dT%H:%M:%S\n"
            "max_queued_messages 100000\n"
            f"listener {self.port} {self.host}\n"
            f"cafile {self.pki.ca_cert}\n"
            f"certfile {self.pki.server_cert}\n"
            f"keyfile {self.pki.server_key}\n"
            "require_certificate true\n"
            "use_identity_as_username true\n"
            f"{self.extra_conf}"
        )

    def write_config(self) -> None:
        """Write mosquitto.conf and the ACL file into ``folder``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.acl_path.write_text(acl_text() + self.extra_acl)
        self.conf_path.write_text(self.config_text())

    @property
    def running(self) -> bool:
        """Whether the Mosquitto process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10) -> Broker:
        """Start Mosquitto and wait until it runs and the TLS port accepts TCP connections.

        "Runs" means its log shows this start's ``running`` line, so that another
        process already listening on the port is not taken for the broker.
        """
        if not MOSQUITTO.exists():
            pytest.fail(f"{MOSQUITTO} not found: install mosquitto (apt-get install "
                        "mosquitto), as .ci/run does")
        if self.running:
            raise RuntimeError("the broker is already running")
        self.write_config()
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.stderr_path.open("ab") as stderr:
            self.process = subprocess.Popen([str(MOSQUITTO), "-c", str(self.conf_path)],
                                            stdin=subprocess.DEVNULL,
                                            stdout=stderr, stderr=stderr)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if self._may_move and self._logged(log_offset, b"Address already in use"):
                    self.port = free_port()
                    return self.start(max(deadline - time.monotonic(), 1))
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}:\n"
                                   f"{self.log_tail()}")
            if self._logged(log_offset, b" running"):
                self._may_move = False  # restarts keep the port the clients know
                try:
                    with socket.create_connection((self.host, self.port), timeout=0.5):
                        return self
                except OSError:
                    pass
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s:\n"
                           f"{self.log_tail()}")

    def _logged(self, offset: int, text: bytes) -> bool:
        """Whether the log, from byte ``offset`` on, contains ``text``."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return text in log.read()
        except FileNotFoundError:
            return False

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM and wait: Mosquitto writes its persistence file on a clean stop."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise RuntimeError(f"mosquitto ignored SIGTERM for {timeout} s:\n"
                                   f"{self.log_tail()}") from None
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no persistence write, as after a power cut."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self, timeout: float = 10) -> Broker:
        """Stop cleanly and start again on the same port, with the same persistence."""
        self.stop(timeout)
        return self.start(timeout)

    def log_text(self) -> str:
        """Mosquitto's log file and its stderr so far."""
        parts = [p.read_text(errors="replace") for p in (self.log_path, self.stderr_path)
                 if p.exists()]
        return "".join(parts)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of :meth:`log_text`."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> Broker:
        """Start the broker."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop the broker (SIGKILL if it ignores SIGTERM)."""
        try:
            self.stop()
        finally:
            self.kill()


def receiver_settings(broker: Broker, pki: MqttPki, database: Path, hospital_key: Path,
                      client_id: str) -> dict:
    """The [mqtt], [database] and [keys] sections of a ``clinibox central`` config that
    receives from ``broker`` with the PKI's receiver certificate into SQLite ``database``."""
    return {
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "ca_file": str(pki.ca_cert),
                 "cert_file": str(pki.receiver.cert), "key_file": str(pki.receiver.key),
                 "group": "central", "client_id": client_id},
        "database": {"url": f"sqlite:///{database}"},
        "keys": {"hospital_key": str(hospital_key)},
    }

@dataclass(frozen=True)
class Seen:
    """One message as a subscriber received it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    duplicate: bool


class MessageLog:
    """A thread-safe record of the messages a client receives (its ``on_message``)."""

    def __init__(self) -> None:
        """An empty log."""
        self._seen: list[Seen] = []
        self._changed = threading.Condition()

    def record(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        """paho ``on_message`` callback: append the message."""
        seen = Seen(message.topic, bytes(message.payload), message.qos, bool(message.retain),
                    bool(message.dup))
        with self._changed:
            self._seen.append(seen)
            self._changed.notify_all()

    def messages(self) -> list[Seen]:
        """A copy of everything recorded so far, in arrival order."""
        with self._changed:
            return list(self._seen)

    def wait_for(self, count: int, timeout: float = 5) -> list[Seen]:
        """Wait until at least ``count`` messages are recorded; AssertionError if not."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._seen) >= count, timeout):
                raise AssertionError(f"{len(self._seen)} of {count} messages after "
                                     f"{timeout} s: {self._seen!r}")
            return list(self._seen)

    def wait_until(self, topic: str, payload: bytes, timeout: float = 5) -> list[Seen]:
        """Wait for a message with this topic and payload; AssertionError if none comes."""
        def arrived() -> bool:
            return any(m.topic == topic and m.payload == payload for m in self._seen)

        with self._changed:
            if not self._changed.wait_for(arrived, timeout):
                raise AssertionError(f"no {topic!r} {payload!r} after {timeout} s: "
                                     f"{self._seen!r}")
            return list(self._seen)

    def clear(self) -> None:
        """Forget everything recorded."""
        with self._changed:
            self._seen.clear()


class ConnectFailed(ConnectionError):
    """The broker refused the connection or the TLS handshake failed."""


class _State:
    """Per-client bookkeeping kept in paho's userdata: CONNACK, PUBACKs, SUBACKs."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.connack: ReasonCode | None = None
        self.session_present = False
        self.connects = 0
        self.failure: str | None = None
        self.pubacks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}

    def on_connect(self, _client: mqtt.Client, _userdata: Any, flags: mqtt.ConnectFlags,
                   reason: ReasonCode, _properties: Properties | None) -> None:
        with self.changed:
            self.connack = reason
            self.session_present = bool(flags.session_present)
            if reason.is_failure:
                self.failure = f"CONNACK {reason}"
            else:
                self.connects += 1
            self.changed.notify_all()

    def on_disconnect(self, _client: mqtt.Client, _userdata: Any,
                      _flags: mqtt.DisconnectFlags, reason: ReasonCode,
                      _properties: Properties | None) -> None:
        with self.changed:
            if self.connects == 0 and self.failure is None:
                self.failure = f"connection closed before CONNACK ({reason})"
            self.changed.notify_all()

    def on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int,
                   reason: ReasonCode, _properties: Properties) -> None:
        with self.changed:
            self.pubacks[mid] = reason
            self.changed.notify_all()

    def on_subscribe(self, _client: mqtt.Client, _userdata: Any, mid: int,
                     reasons: list[ReasonCode], _properties: Properties | None) -> None:
        with self.changed:
            self.subacks[mid] = list(reasons)
            self.changed.notify_all()


def _state(paho_client: mqtt.Client) -> _State:
    state = paho_client.user_data_get()
    if not isinstance(state, _State):
        raise TypeError("not a client made by tests.mqtt_broker.client()")
    return state


def client(broker: Broker, cert: Path | None, key: Path | None, *,
           ca_cert: Path | None = None, client_id: str = "",
           clean_start: mqtt.CleanStartOption = True,
           session_expiry: int = 0, messages: MessageLog | None = None,
           max_inflight: int | None = None, timeout: float = 5) -> mqtt.Client:
    """A paho MQTT v5 client connected over TLS, its network loop running.

    ``cert``/``key`` is the client certificate (None: none at all); ``ca_cert`` is the
    CA the client trusts for the broker (default: the broker's). ``session_expiry`` > 0
    with ``clean_start=False`` keeps a persistent session (``True`` starts clean on
    every reconnect too; ``mqtt.MQTT_CLEAN_START_FIRST_ONLY`` only the first time).
    Received messages go into ``messages`` if given. ``max_inflight``: QoS > 0 messages
    unacknowledged at once (paho's default, 20, if None; paho allows setting it only before
    the connection). Raises :class:`ConnectFailed` if no successful CONNACK comes.
    After a lost connection paho reconnects on its own (1–2 s back-off).
    """
    state = _State()
    paho = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                       protocol=mqtt.MQTTv5, userdata=state)
    paho.on_connect = state.on_connect
    paho.on_disconnect = state.on_disconnect
    paho.on_publish = state.on_publish
    paho.on_subscribe = state.on_subscribe
    if messages is not None:
        paho.on_message = messages.record
    paho.reconnect_delay_set(1, 2)
    if max_inflight is not None:
        paho.max_inflight_messages_set(max_inflight)
    paho.tls_set(ca_certs=str(ca_cert or broker.pki.ca_cert),
                 certfile=str(cert) if cert else None, keyfile=str(key) if key else None)
    properties = None
    if session_expiry:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = session_expiry
    try:
        paho.connect(broker.host, broker.port, keepalive=30, clean_start=clean_start,
                     properties=properties)
    except OSError as error:  # ssl.SSLError included: a TLS 1.2 handshake refused here
        raise ConnectFailed(f"connect failed: {error!r}") from error
    # Run the loop here until the CONNACK, so that a refused client is not left to
    # paho's background thread and its reconnect back-off.
    deadline = time.monotonic() + timeout
    while not (state.connects or state.failure):
        if time.monotonic() > deadline:
            paho.disconnect()
            paho.loop(0.1)
            raise ConnectFailed(f"no CONNACK within {timeout} s")
        rc = paho.loop(0.1)
        if rc != mqtt.MQTT_ERR_SUCCESS and not state.failure:
            state.failure = f"connection lost before CONNACK: {mqtt.error_string(rc)}"
    if state.failure:
        raise ConnectFailed(state.failure)
    paho.loop_start()
    return paho


def session_present(paho_client: mqtt.Client) -> bool:
    """The CONNACK's session-present flag of the client's latest connection."""
    return _state(paho_client).session_present


def close(paho_client: mqtt.Client) -> None:
    """Send DISCONNECT (a persistent session stays on the broker) and stop the loop."""
    paho_client.disconnect()
    paho_client.loop_stop()


def publish_and_wait(paho_client: mqtt.Client, topic: str, payload: bytes, qos: int = 1,
                     retain: bool = False, timeout: float = 5) -> ReasonCode:
    """Publish and return the broker's PUBACK reason code (QoS 0: Success when sent).

    Mosquitto 2.0.11 answers an ACL-denied QoS 1 publish under MQTT v5 with 0x87.
    """
    state = _state(paho_client)
    info = paho_client.publish(topic, payload, qos=qos, retain=retain)
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        raise ConnectionError(f"publish to {topic!r} not sent: {mqtt.error_string(info.rc)}")
    with state.changed:
        if not state.changed.wait_for(lambda: info.mid in state.pubacks, timeout):
            raise AssertionError(f"no PUBACK for {topic!r} within {timeout} s")
        return state.pubacks.pop(info.mid)


def subscribe_and_wait(paho_client: mqtt.Client, topic: str, qos: int = 1, *,
                       retain_as_published: bool = False,
                       timeout: float = 5) -> list[ReasonCode]:
    """Subscribe and return the SUBACK's reason codes (one per topic filter)."""
    state = _state(paho_client)
    options = SubscribeOptions(qos=qos, retainAsPublished=retain_as_published)
    rc, mid = paho_client.subscribe(topic, options=options)
    if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
        raise ConnectionError(f"subscribe to {topic!r} not sent: {mqtt.error_string(rc)}")
    with state.changed:
        if not state.changed.wait_for(lambda: mid in state.subacks, timeout):
            raise AssertionError(f"no SUBACK for {topic!r} within {timeout} s")
        return state.subacks.pop(mid)


class Auditor:
    """A client with CN ``broker-auditor`` subscribed to ``#`` at QoS 1.

    It records every message the broker forwards (topic, payload bytes, retain flag
    as published) from the moment :class:`Auditor` returns. Its session persists
    (client id ``broker-auditor``, clean start off, one hour expiry), so across a clean
    broker restart (:meth:`Broker.restart`) it keeps its subscription, reconnects on
    its own within about a second and receives what was queued for it meanwhile. A
    second auditor on the same broker needs another ``client_id``.
    """

    def __init__(self, broker: Broker, pki: MqttPki, *, topic: str = "#",
                 client_id: str = "broker-auditor", timeout: float = 5) -> None:
        """Connect, subscribe and wait for the SUBACK."""
        self.log = MessageLog()
        self.topic = topic
        cert, key = pki.auditor.cert, pki.auditor.key
        # End any session left under this client id (clean start, no expiry), then
        # open one with clean_start=False: Mosquitto 2.0.11 does not persist a session
        # whose CONNECT had clean start set, whatever its expiry interval.
        close(client(broker, cert, key, client_id=client_id, clean_start=True, timeout=timeout))
        self.client = client(broker, cert, key, client_id=client_id, clean_start=False,
                             session_expiry=3600, messages=self.log, timeout=timeout)
        reasons = subscribe_and_wait(self.client, topic, 1, retain_as_published=True,
                                     timeout=timeout)
        if [r.value for r in reasons] != [1]:
            close(self.client)
            raise AssertionError(f"auditor subscription to {topic!r} refused: {reasons}")

    def messages(self) -> list[Seen]:
        """Everything captured so far, in arrival order."""
        return self.log.messages()

    def wait_for(self, count: int, timeout: float = 5) -> list[Seen]:
        """Wait until at least ``count`` messages are captured; AssertionError if not."""
        return self.log.wait_for(count, timeout)

    def wait_until(self, topic: str, payload: bytes, timeout: float = 5) -> list[Seen]:
        """Wait for one message with this topic and payload; AssertionError if none."""
        return self.log.wait_until(topic, payload, timeout)

    def clear(self) -> None:
        """Forget what was captured."""
        self.log.clear()

    def close(self) -> None:
        """Disconnect."""
        close(self.client)

    def __enter__(self) -> Auditor:
        """The auditor itself (already connected)."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Disconnect."""
        self.close()


@pytest.fixture(name="mqtt_pki", scope="session")
def mqtt_pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> MqttPki:
    """Certificates for :data:`DEFAULT_DEVICES`, the receiver and the auditor."""
    return make_mqtt_pki(tmp_path_factory.mktemp("mqtt-pki"), DEFAULT_DEVICES)


@pytest.fixture(name="broker")
def broker_fixture(tmp_path: Path, mqtt_pki: MqttPki) -> Iterator[Broker]:
    """A started broker in ``tmp_path / "broker"``; stopped after the test."""
    with Broker(tmp_path / "broker", mqtt_pki) as running:
        yield running


@pytest.fixture(name="auditor")
def auditor_fixture(broker: Broker, mqtt_pki: MqttPki) -> Iterator[Auditor]:
    """An :class:`Auditor` connected to ``broker``; closed after the test."""
    with Auditor(broker, mqtt_pki) as connected:
        yield connected
