"""Valid telemetry payloads and real keys for tests of the box's link to the hospital.

The payload builders return messages that pass ``schema.check_message``;
keyword arguments replace fields (nested ones too, given as whole objects).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from clinibox_common.contracts import egress as schema
from clinibox_common.contracts.envelope import Header, seal
from clinibox_common.contracts.topics import topic

MODEL = "clinibox-demo-lesion@1.0.0"
#: a recent hour (the hospital refuses messages older than [receiver] max_message_age_days)
CREATED = int(time.time()) // 3600 * 3600 - 3600


def alert_payload(**changes: Any) -> dict[str, Any]:
    """A valid alert message."""
    payload = {"schema": 1, "created_at": CREATED, "study_ref": "0" * 32, "finding": "lesion",
               "score": 0.93, "threshold": 0.88, "modality": "CT", "model": MODEL,
               "instances": 3, "processing_ms": 41.5}
    payload.update(changes)
    schema.check_message("alert", payload, None)
    return payload


def summary_payload(**changes: Any) -> dict[str, Any]:
    """A valid hourly summary message."""
    bins = schema.HISTOGRAM_BINS
    payload: dict[str, Any] = {
        "schema": 1, "created_at": CREATED, "period_start": CREATED - 3600,
        "period_end": CREATED, "uptime_s": 86_400, "model": MODEL, "studies": 12,
        "instances": 240, "findings": 3, "alerts": 2, "quality_warnings": 1,
        "assessments": {"finding": 3, "no_finding": 230, "not_assessable": 1,
                        "outside_validated_range": 6}, "quarantined": 0, "not_analysed": 1,
        "failed": 0, "modalities": {"CT": 10, "DX": 2},
        "latency_ms": {"p50": 40.0, "p90": 55.0, "p99": 80.0, "max": 120.0},
        "queue_depth": 0, "disk_used_pct": 41.5, "disk_free_mb": 52_000, "outbox_pending": 0,
        "outbox_dropped": 0, "confidence_histogram": [50, 40, 30, 20, 10, 8, 6, 4, 2, 1][:bins],
        "intensity_histogram": [5, 10, 20, 30, 40, 40, 30, 20, 10, 5][:bins],
        "intensity": {"mean": 0.45, "std": 0.2},
        "feedback": {"agree": 0, "disagree": 0, "unsure": 0},
    }
    payload.update(changes)
    schema.check_message("summary", payload, None)
    return payload


def status_payload(state: str = "online", **changes: Any) -> dict[str, Any]:
    """A valid status message (``online``, ``offline`` or ``heartbeat``)."""
    payload = {"schema": 1, "created_at": CREATED, "state": state, "uptime_s": 60,
               "model": MODEL, "software": "0.1.0", "queue_depth": 0, "outbox_pending": 0}
    payload.update(changes)
    schema.check_message("status", payload, None)
    return payload


PAYLOADS = {"alert": alert_payload, "summary": summary_payload, "status": status_payload}


def public_pem(key: Ed25519PrivateKey | X25519PrivateKey) -> str:
    """The PEM text of a private key's public half (an Ed25519 key's is what ``enrol``
    takes; an X25519 key's is a hospital's ``.pub``)."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


@dataclass
class Box:
    """A simulated box: its identity, its signing key and a sequence counter."""

    clinic: str
    device: str
    hospital: X25519PublicKey
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    seq: int = 0

    @property
    def pem(self) -> str:
        """The box's public signing key, PEM."""
        return public_pem(self.key)

    def envelope(self, kind: str, payload: dict[str, Any] | None = None, *,
                 seq: int | None = None) -> tuple[str, bytes]:
        """(topic, sealed envelope) of the next ``kind`` message (default payload if None)."""
        if seq is None:
            self.seq += 1
            seq = self.seq
        body = PAYLOADS[kind]() if payload is None else payload
        header = Header(self.clinic, self.device, kind, seq)
        return topic(self.clinic, self.device, kind), seal(header, body, self.hospital, self.key)


def hospital_keys() -> tuple[X25519PrivateKey, X25519PublicKey]:
    """A fresh hospital key pair."""
    private = X25519PrivateKey.generate()
    return private, private.public_key()
