"""A rollout's package chunks, fetched one at a time over the box's own broker link.

Why over MQTT, and not HTTPS from the hospital: the box already holds one TLS connection to
the hospital's broker, authenticated by its client certificate and fenced by the broker's
ACL; a clinic's firewall lets that one port out and often nothing else, and the hospital
would otherwise run and expose a second server with its own certificate checks. The
pattern is AWS IoT's OTA over MQTT streams: the device asks for one block at a time.

The hospital publishes each chunk **retained** on ``clinibox-packages/<archive sha256>/<i>``
(``contracts.downlink.chunk_topic``); only it may write there, every box may read. To take
chunk *i* the box SUBSCRIBEs to its topic (the broker answers with the retained message),
keeps the bytes, and UNSUBSCRIBEs: the box sets the pace (``[updates] max_kbps``) and never
has more than one chunk in flight, so a slow link is never flooded and a broken one loses at
most one chunk. The chunk's hash is checked by the updater against the signed offer.

:class:`ChunkFetcher` is handed each new client by the publisher (``attach``) and forgotten
when the link drops (``detach``); :meth:`ChunkFetcher.fetch` is called from the updater's
thread and returns None when no link is up or the chunk did not come in time.
"""

from __future__ import annotations

import logging
import threading

import paho.mqtt.client as mqtt

from clinibox_common.contracts import downlink

log = logging.getLogger(__name__)


class ChunkFetcher:
    """One chunk at a time from the retained package topics (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._linked = threading.Condition(self._lock)
        self._wanted = ""
        self._got: bytes | None = None
        self._arrived = threading.Event()
        #: the last chunk that came after its fetch gave up (a big chunk on a slow link):
        #: the next fetch of its topic takes it instead of asking the link for it again
        self._late: tuple[str, bytes] | None = None

    def attach(self, client: mqtt.Client) -> None:
        """The publisher's connection is up: fetch through ``client``."""
        with self._lock:
            self._client = client
            self._linked.notify_all()

    def detach(self) -> None:
        """The link dropped: a fetch in progress gives up."""
        with self._lock:
            self._client = None
        self._arrived.set()

    @staticmethod
    def wants(topic: str) -> bool:
        """Whether a message on ``topic`` is a package chunk (not a downlink message)."""
        return topic.startswith(downlink.PACKAGE_ROOT + "/")

    def deliver(self, topic: str, payload: bytes) -> None:
        """A chunk arrived (paho's network thread); one not asked for is ignored."""
        with self._lock:
            if topic != self._wanted or self._got is not None:
                log.debug("package chunk on %s came late or unasked; kept aside", topic)
                if payload:
                    self._late = (topic, bytes(payload))
                return
            self._got = bytes(payload)
        self._arrived.set()

    def fetch(self, topic: str, timeout: float) -> bytes | None:
        """Subscribe to ``topic``, wait up to ``timeout`` s for its retained chunk, unsubscribe."""
        with self._lock:
            if self._late is not None and self._late[0] == topic:
                chunk, self._late = self._late[1], None
                return chunk
            if self._client is None:
                self._linked.wait(timeout)
            client = self._client
            if client is None:
                return None
            self._wanted, self._got = topic, None
            self._arrived.clear()
        try:
            result, _mid = client.subscribe(topic, qos=1)
            if result != mqtt.MQTT_ERR_SUCCESS:
                return None
            self._arrived.wait(timeout)
            with self._lock:
                chunk, self._wanted, self._got = self._got, "", None
            if self._client is client:
                client.unsubscribe(topic)
            return chunk
        except (OSError, ValueError) as exc:  # the client broke under us
            log.info("package chunk %s not fetched: %s", topic, exc)
            return None
