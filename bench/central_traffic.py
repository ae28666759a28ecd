"""The simulated province for ``bench.central_load``: boxes, their traffic, the gateways.

A :class:`SimBox` is one enrolled box (``county-07-clinic-123`` / ``box-1``): the tests'
:class:`tests.telemetry_payloads.Box` (its own Ed25519 signing key and sequence counter) with
a county, perhaps drifting. :func:`schedule` lays out the messages a fleet sends over a
stretch of *simulated* time (heartbeats every 5 minutes, summaries hourly, alerts at
:data:`ALERT_SHARE` of the summaries' studies) and maps it onto real seconds at a given
speed; :func:`seal_plan` seals every message beforehand (sealing is the box's cost, not the
hospital's). The broker is the test broker with :func:`gateway_acl` appended to its ACL
(bench only): a few ``bench-gateway-N`` identities may publish on ``clinibox/#``, so 2,000
boxes need no 2,000 client certificates; and :data:`QUIET_LOG` for its logging.
:class:`Gateways` publishes a plan through them at QoS 1 on its schedule and notes when each
message left.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from clinibox_common.contracts.egress import HISTOGRAM_BINS
from firmware_app.telemetry.mqtt import NO_MATCHING_SUBSCRIBERS
from tests.mqtt_broker import Broker, Identity, MqttPki, client, close
from tests.telemetry_payloads import Box, alert_payload, status_payload, summary_payload

HEARTBEAT_S = 300
SUMMARY_S = 3600
#: studies a box analyses an hour (mean) and the share of them that raise an alert
STUDIES_PER_HOUR = 12
ALERT_SHARE = 0.02
CLINICS_PER_COUNTY = 50
GATEWAY_CN = "bench-gateway-{}"
#: the broker's log types: no debug lines (the tests' ``log_type all`` writes lines for every
#: message)
QUIET_LOG = ("error", "warning", "notice", "information")
#: a message's identity in the hospital's store
Key = tuple[str, str, int]


@dataclass
class SimBox(Box):
    """One simulated box: a test :class:`Box` with its county, perhaps drifting."""

    county: str = ""
    drifting: bool = False


@dataclass(frozen=True)
class Planned:
    """One message of a plan: when it leaves (seconds after the phase starts), where, what."""

    at: float
    topic: str
    envelope: bytes
    key: Key
    kind: str


def make_boxes(count: int, drifting: int, hospital: X25519PublicKey) -> list[SimBox]:
    """``count`` boxes sealing to ``hospital``, :data:`CLINICS_PER_COUNTY` clinics a county;
    every ``count // drifting``-th box drifts."""
    step = max(1, count // max(1, drifting)) if drifting else 0
    return [SimBox(f"county-{i // CLINICS_PER_COUNTY + 1:02d}-clinic-{i + 1:04d}", "box-1",
                   hospital, county=f"county-{i // CLINICS_PER_COUNTY + 1:02d}",
                   drifting=bool(step) and i % step == step // 2)
            for i in range(count)]


def _histogram(rng: random.Random, total: int, shifted: bool) -> list[int]:
    """``total`` samples over the bins: falling (most images clearly normal), or rising when
    ``shifted`` (a drifting box: a new scanner, a different population)."""
    weights = [(HISTOGRAM_BINS - b) ** 2 if not shifted else (b + 1) ** 2
               for b in range(HISTOGRAM_BINS)]
    counts = [0] * HISTOGRAM_BINS
    for b in rng.choices(range(HISTOGRAM_BINS), weights, k=total):
        counts[b] += 1
    return counts


def summary(box: SimBox, rng: random.Random, end: int, shifted: bool) -> dict[str, Any]:
    """A realistic hourly summary ending at ``end`` (histograms shifted when ``shifted``)."""
    studies = max(1, round(rng.gauss(STUDIES_PER_HOUR, 3)))
    instances = studies * rng.randint(8, 30)
    findings = max(0, round(instances * rng.uniform(0.005, 0.03)))
    alerts = sum(rng.random() < ALERT_SHARE for _ in range(studies))
    intensity = _histogram(rng, instances, shifted)
    return summary_payload(
        created_at=end, period_start=end - SUMMARY_S, period_end=end,
        uptime_s=rng.randint(3600, 30 * 86400), studies=studies, instances=instances,
        findings=findings, alerts=alerts, quality_warnings=rng.randint(0, 2),
        assessments={"finding": findings, "no_finding": instances - findings},
        not_analysed=0, modalities={"CT": instances}, queue_depth=rng.randint(0, 3),
        disk_used_pct=round(rng.uniform(20, 80), 1), disk_free_mb=rng.randint(10_000, 90_000),
        confidence_histogram=_histogram(rng, instances, shifted),
        intensity_histogram=intensity,
        intensity={"mean": 0.65 if shifted else 0.45, "std": 0.2})


def heartbeat(rng: random.Random, at: int) -> dict[str, Any]:
    """A heartbeat (no audit head: it is optional, and random heads would raise alarms)."""
    return status_payload("heartbeat", created_at=at, uptime_s=rng.randint(60, 30 * 86400),
                          queue_depth=rng.randint(0, 5), outbox_pending=rng.randint(0, 2))


def alert(rng: random.Random, at: int) -> dict[str, Any]:
    """An alert with a fresh study reference."""
    return alert_payload(created_at=at, study_ref=f"{rng.getrandbits(128):032x}",
                         score=round(rng.uniform(0.88, 0.999), 4),
                         instances=rng.randint(1, 40), processing_ms=round(rng.uniform(20, 90), 1))


def schedule(boxes: list[SimBox], rng: random.Random, sim_start: float, sim_len: float,
             speed: float) -> list[tuple[float, SimBox, str, dict[str, Any]]]:
    """Every message the fleet sends in simulated ``[sim_start, sim_start + sim_len)`` (epoch
    seconds: the payloads' created_at), as (real seconds after the phase starts, box, kind,
    payload) in time order; ``speed`` simulated seconds pass per real second."""
    events: list[tuple[float, SimBox, str, dict[str, Any]]] = []
    alert_rate = STUDIES_PER_HOUR * ALERT_SHARE / SUMMARY_S  # per box, per simulated second
    end = sim_start + sim_len
    for box in boxes:
        phase = rng.uniform(0, HEARTBEAT_S)
        t = sim_start + phase
        while t < end:
            events.append((t, box, "status", heartbeat(rng, int(t))))
            t += HEARTBEAT_S
        t = sim_start + rng.uniform(0, SUMMARY_S)
        while t < end:
            events.append((t, box, "summary", summary(box, rng, int(t), box.drifting)))
            t += SUMMARY_S
        t = sim_start + rng.expovariate(alert_rate)
        while t < end:
            events.append((t, box, "alert", alert(rng, int(t))))
            t += rng.expovariate(alert_rate)
    events.sort(key=lambda e: e[0])
    return [((t - sim_start) / speed, box, kind, payload) for t, box, kind, payload in events]


def seal_plan(events: list[tuple[float, SimBox, str, dict[str, Any]]]) -> list[Planned]:
    """Seal every scheduled message (sequence numbers given in time order)."""
    plan = []
    for at, box, kind, payload in events:
        message_topic, envelope = box.envelope(kind, payload)
        plan.append(Planned(at, message_topic, envelope, (box.clinic, box.device, box.seq),
                            kind))
    return plan


def gateway_acl(gateways: list[Identity]) -> str:
    """The broker's ACL addition: one ``user bench-gateway-N`` block a gateway, each may
    publish for every box."""
    return "".join(f"\nuser {g.cn}\ntopic write clinibox/#\n" for g in gateways)


def issue_gateways(pki: MqttPki, count: int) -> list[Identity]:
    """Client certificates for ``count`` gateways (CN ``bench-gateway-N``)."""
    out = []
    for n in range(1, count + 1):
        cert, key = pki.authority.issue_client(GATEWAY_CN.format(n), pki.folder)
        out.append(Identity(GATEWAY_CN.format(n), cert, key))
    return out


class Gateways:
    """A few MQTT v5 TLS clients publishing a plan at QoS 1, a box always through the same one."""

    def __init__(self, broker: Broker, identities: list[Identity]) -> None:
        """Connect every gateway (their network loops in threads)."""
        self.lock = threading.Lock()
        self.acked = 0
        self.refused: dict[str, int] = {}
        self.clients: list[mqtt.Client] = []
        for identity in identities:
            gateway = client(broker, identity.cert, identity.key, client_id=identity.cn,
                             max_inflight=100, timeout=15)
            gateway.on_publish = self._on_publish
            self.clients.append(gateway)

    def _on_publish(self, _c: mqtt.Client, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        with self.lock:
            if reason.is_failure or reason.value == NO_MATCHING_SUBSCRIBERS:
                self.refused[str(reason)] = self.refused.get(str(reason), 0) + 1
            else:
                self.acked += 1

    def publish(self, plan: list[Planned], sent: dict[Key, float]) -> float:
        """Publish ``plan`` on its schedule from now, noting each message's wall-clock send
        time in ``sent``; the wall-clock time the phase started."""
        start_wall = time.time()
        start = time.perf_counter()
        for item in plan:
            delay = item.at - (time.perf_counter() - start)
            if delay > 0:
                time.sleep(delay)
            gateway = self.clients[hash(item.key[:2]) % len(self.clients)]
            sent[item.key] = time.time()
            info = gateway.publish(item.topic, item.envelope, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"publish failed: {mqtt.error_string(info.rc)}")
        return start_wall

    def wait_acked(self, count: int, timeout: float = 120) -> None:
        """Wait until ``count`` PUBACKs (any reason) have come back."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.acked + sum(self.refused.values()) >= count:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"only {self.acked} PUBACKs of {count}")

    def close(self) -> None:
        """Disconnect every gateway."""
        for gateway in self.clients:
            close(gateway)


__all__ = ["QUIET_LOG", "Gateways", "Planned", "SimBox", "gateway_acl", "issue_gateways",
           "make_boxes", "schedule", "seal_plan"]
