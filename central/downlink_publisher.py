"""The downlink publisher: the radiologists' verdicts sent, sealed and signed, to the boxes.

Run by ``clinibox central serve`` in a thread beside the receiver, on an MQTT connection
of its own (client id ``<[mqtt] client_id>-downlink``, same certificate): the receiver's
link stops and disconnects while the database is down and acknowledges by hand, and a
publisher that only publishes needs neither; keeping them apart lets each reconnect on its
own terms.

Each pass claims the ``downlinks`` rows due: never published, or published and not yet
covered by the ``downlink_seq`` the box reported in its latest status, once the resend wait
has passed — for boxes that reported their ``downlink_key`` and whose enrolment is not
revoked, whatever the row's age: a box offline for months keeps an authentic verdict that
arrives late (marked late, it settles its watermark), so a verdict is sent until the box
confirms it. The resend wait is :func:`resend_wait`: ``[downlink] resend_minutes`` after
the first publish, doubling with each attempt up to :data:`MAX_RESEND_SECONDS` (a day),
so a box that stays away costs one publish a day, not one every half hour. A row is
claimed by a conditional UPDATE that bumps ``attempts`` and sets ``sent_at`` to the claim
time (``WHERE attempts = <as read>``): two publishers sharing one PostgreSQL database never
publish one row at the same moment, and a publisher that dies after its claim leaves the
row to be published again after the resend wait. The claim is fair: the rows tried least
come first (by ``attempts``, then age), and one pass takes at most :data:`PER_BOX` rows of
one box, so a box whose rows keep failing, or that has hundreds waiting, cannot take every
pass from the others. The row
is sealed to the box's key (:func:`clinibox_common.contracts.downlink.seal_downlink`),
signed with ``[keys] hospital_signing_key``, published at QoS 1 on
``clinibox-downlink/<clinic>/<device>``, and ``sent_at`` set again on the broker's
PUBACK; without a PUBACK (a link failure) the claim is released (``sent_at`` back to NULL)
and the row is tried on the next pass. A row that cannot be sealed (a key or payload the
box's status should never have carried) keeps its claim: it waits the growing resend wait
like an unconfirmed one, with ``last_error`` saying why, rather than coming back at once.
A duplicate publish is harmless: the box keeps each sequence number once.

Each pass also moves the rollouts on (``central/rollouts.py``: ``advance`` offers a wave once
the one before is installed) and keeps every live rollout's package chunks **retained** on
``clinibox-packages/<archive sha256>/<i>``, published once per connection (a broker restarted
without its persistence file lost them), and clears them once a rollout has finished.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central import rollouts
from central.config import CentralConfig
from central.receiver import mqtt_client
from central.sql import Database, StoreError
from clinibox_common.contracts import downlink
from clinibox_common.contracts.egress import EgressRefused

__all__ = ["DownlinkPublisher", "Pending", "claim", "hold", "mark_sent", "release",
           "resend_wait"]

log = logging.getLogger("clinibox.central.downlink")

#: Rows one pass claims at most.
BATCH = 50
#: Rows of one box one pass claims at most.
PER_BOX = 5
#: Seconds to wait for the broker's PUBACK.
PUBACK_TIMEOUT = 10.0
#: The longest wait between two publishes of a row the box has not confirmed (a day).
MAX_RESEND_SECONDS = 86_400.0
#: How long after a rollout finished its retained chunks are still cleared on each connection.
CLEAR_FINISHED_SECONDS = 7 * 86_400.0


@dataclass(frozen=True)
class Pending:
    """One claimed downlink, ready to seal."""

    clinic: str
    device: str
    seq: int
    kind: str
    payload: dict[str, Any]
    box_key: str
    attempts: int


def resend_wait(attempts: int, resend_seconds: float) -> float:
    """Seconds after a row's ``attempts``-th publish before it is sent again: the resend
    interval, doubled for each attempt after the first, at most :data:`MAX_RESEND_SECONDS`
    (or the interval itself, when that is longer)."""
    cap = max(resend_seconds, MAX_RESEND_SECONDS)
    return min(resend_seconds * 2.0 ** min(max(attempts - 1, 0), 64), cap)


def _waits(resend_seconds: float) -> list[float]:
    """:func:`resend_wait` for attempts 1, 2 … up to the first that reaches the cap."""
    waits = [resend_wait(1, resend_seconds)]
    while waits[-1] < max(resend_seconds, MAX_RESEND_SECONDS):
        waits.append(resend_wait(len(waits) + 1, resend_seconds))
    return waits


def claim(db: Database, *, now: float, resend_seconds: float,
          limit: int = BATCH, per_box: int = PER_BOX) -> list[Pending]:
    """Claim the downlinks due now (see the module's text)."""
    waits = _waits(resend_seconds)
    # the latest sent_at at which a row with this many attempts is due again: a CASE over
    # the few steps of the doubling (the same SQL on SQLite and PostgreSQL, no POWER())
    steps = " ".join("WHEN d.attempts <= ? THEN ?" for _ in waits[:-1])
    due_before = f"CASE {steps} ELSE ? END" if steps else "?"
    values: list[float | int] = []
    for attempts, wait in enumerate(waits[:-1], start=1):
        values += [attempts, now - wait]
    values.append(now - waits[-1])
    claimed: list[Pending] = []
    with db.transaction(write=True) as tx:
        # the due rows numbered within their box (fewest attempts, then oldest, first):
        # at most per_box of each box, then the fewest attempts and oldest of all
        rows = tx.execute(
            "SELECT clinic, device, seq, kind, payload, attempts, downlink_key FROM"
            " (SELECT d.clinic, d.device, d.seq, d.kind, d.payload, d.attempts, d.created_at,"
            " b.downlink_key, ROW_NUMBER() OVER (PARTITION BY d.clinic, d.device"
            " ORDER BY d.attempts, d.created_at, d.seq) AS box_rank"
            " FROM downlinks AS d JOIN box_state AS b ON b.clinic = d.clinic"
            " AND b.device = d.device JOIN devices AS v ON v.clinic = d.clinic"
            " AND v.device = d.device WHERE b.downlink_key IS NOT NULL AND v.revoked_at IS NULL"
            f" AND (d.sent_at IS NULL OR (d.sent_at < {due_before}"
            " AND d.seq > COALESCE(b.downlink_seq, 0)))) AS due"
            " WHERE box_rank <= ? ORDER BY attempts, created_at, clinic, device, seq LIMIT ?",
            (*values, int(per_box), int(limit))).fetchall()
        for clinic, device, seq, kind, payload, attempts, key in rows:
            cursor = tx.execute(
                "UPDATE downlinks SET attempts = attempts + 1, sent_at = ?"
                " WHERE clinic = ? AND device = ? AND seq = ? AND attempts = ?",
                (now, clinic, device, seq, attempts))
            if cursor.rowcount == 1:
                claimed.append(Pending(clinic, device, int(seq), kind, json.loads(payload),
                                       str(key), int(attempts) + 1))
    return claimed


def release(db: Database, item: Pending, error: str) -> None:
    """Give a claim back (not published for want of the link): the next pass tries the row
    again."""
    with db.transaction(write=True) as tx:
        tx.execute("UPDATE downlinks SET sent_at = NULL, last_error = ? WHERE clinic = ?"
                   " AND device = ? AND seq = ? AND attempts = ?",
                   (error[:200], item.clinic, item.device, item.seq, item.attempts))


def hold(db: Database, item: Pending, error: str) -> None:
    """Keep the claim of a row that cannot be sealed (``sent_at`` stays the claim time), with
    ``error``: the row comes back after the resend wait, which grows with each attempt."""
    with db.transaction(write=True) as tx:
        tx.execute("UPDATE downlinks SET last_error = ? WHERE clinic = ? AND device = ?"
                   " AND seq = ? AND attempts = ?",
                   (error[:200], item.clinic, item.device, item.seq, item.attempts))


def mark_sent(db: Database, item: Pending, now: float) -> None:
    """Record the broker's PUBACK of a published downlink."""
    with db.transaction(write=True) as tx:
        tx.execute("UPDATE downlinks SET sent_at = ?, last_error = NULL WHERE clinic = ?"
                   " AND device = ? AND seq = ?", (now, item.clinic, item.device, item.seq))


class DownlinkPublisher:
    """Publishes due downlinks on its own MQTT connection until stopped."""

    def __init__(self, config: CentralConfig, database: Database,
                 signing_key: Ed25519PrivateKey, *, poll_seconds: float = 2.0) -> None:
        """Publish from ``database`` with ``config.mqtt``, signing with ``signing_key``."""
        self.config = config
        self._db = database
        self._signing_key = signing_key
        self.poll_seconds = poll_seconds
        self.client_id = f"{config.mqtt.resolved_client_id()}-downlink"
        self.connected = threading.Event()
        self.published = 0
        #: connections made so far: a rollout's chunks are published once per connection
        self._generation = 0
        #: archive sha256 → (the connection, live) its chunks were last published (live) or
        #: cleared on: done again on a new connection, or when the package comes back to life
        self._packages: dict[str, tuple[int, bool]] = {}
        self._client = mqtt_client(config.mqtt, self.client_id, manual_ack=False)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.error("downlink: the broker refused the connection: %s", reason)
            return
        self._generation += 1  # a restarted broker without persistence lost the chunks
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.connected.clear()

    def seal(self, item: Pending) -> bytes:
        """The sealed, signed envelope of ``item`` for its box."""
        return downlink.seal_downlink(item.clinic, item.device, item.seq, item.payload,
                                      downlink.parse_key_text(item.box_key), self._signing_key,
                                      kind=item.kind)

    def publish_due(self, now: float | None = None) -> int:
        """Claim, seal and publish what is due (the link must be up); how many were acked."""
        now = time.time() if now is None else now
        settings = self.config.downlink
        items = claim(self._db, now=now, resend_seconds=settings.resend_minutes * 60)
        done = 0
        for item in items:
            try:
                envelope = self.seal(item)
            except (ValueError, EgressRefused) as exc:  # a bad key the box reported
                log.error("downlink %s/%s #%d cannot be sealed (attempt %d, tried again "
                          "after the resend wait): %s", item.clinic, item.device, item.seq,
                          item.attempts, exc)
                hold(self._db, item, f"cannot seal: {exc}")
                continue
            info = self._client.publish(downlink.topic(item.clinic, item.device), envelope,
                                        qos=1)
            try:
                info.wait_for_publish(PUBACK_TIMEOUT)
            except (RuntimeError, ValueError) as exc:
                release(self._db, item, f"not published: {exc}")
                continue
            if not info.is_published():
                release(self._db, item, "no PUBACK from the broker")
                continue
            mark_sent(self._db, item, time.time())
            done += 1
            self.published += 1
            log.info("downlink %s/%s #%d published", item.clinic, item.device, item.seq)
        return done

    def publish_packages(self, now: float | None = None) -> int:
        """Keep each rollout's chunks retained on the broker: published once per connection
        while the rollout may still be fetched (active or paused), cleared once per connection
        for a week after it finished; how many chunks were published."""
        now = time.time() if now is None else now
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(
                "SELECT archive_sha256, MAX(CASE WHEN state IN (?, ?) THEN 1 ELSE 0 END),"
                " MAX(chunk_sha256) FROM rollouts WHERE state IN (?, ?) OR updated_at > ?"
                " GROUP BY archive_sha256",
                (rollouts.ACTIVE, rollouts.PAUSED, rollouts.ACTIVE, rollouts.PAUSED,
                 now - CLEAR_FINISHED_SECONDS)).fetchall()
        count = 0
        for sha, live, hashes in rows:
            live = bool(live)
            if self._packages.get(sha) == (self._generation, live):
                continue
            if live:
                with self._db.transaction(write=False) as tx:
                    parts = list(rollouts.chunks(tx, sha))
            else:
                parts = [(index, b"") for index in range(len(json.loads(hashes)))]
            for index, data in parts:
                info = self._client.publish(downlink.chunk_topic(sha, index), data, qos=1,
                                            retain=True)
                info.wait_for_publish(PUBACK_TIMEOUT)
                if not info.is_published():
                    return count  # the link broke: all of it again on the next connection
                count += 1
            self._packages[sha] = (self._generation, live)
            log.info("rollout package %s: %d chunks %s", sha[:12], len(parts),
                     "published" if live else "cleared")
        return count

    def serve(self, stop: threading.Event) -> None:
        """Publish until ``stop`` is set, reconnecting after any failure."""
        settings = self.config.mqtt
        self._client.reconnect_delay_set(1, 60)
        try:
            self._client.connect_async(settings.host, settings.port,
                                       keepalive=settings.keepalive)
        except (OSError, ValueError) as exc:
            log.error("downlink: cannot reach the broker: %s", exc)
        self._client.loop_start()
        try:
            while not stop.is_set():
                if self.connected.is_set():
                    try:
                        with self._db.transaction(write=True) as tx:
                            rollouts.advance(tx, box_timeout_s=(
                                self.config.rollouts.box_timeout_hours * 3600))
                        self.publish_packages()
                        self.publish_due()
                    except StoreError as exc:
                        log.error("downlink: database unavailable: %s", exc)
                    except (RuntimeError, ValueError) as exc:  # the link broke mid-publish
                        log.warning("downlink: %s; trying again", exc)
                stop.wait(self.poll_seconds)
        finally:
            self._client.disconnect()
            self._client.loop_stop()
