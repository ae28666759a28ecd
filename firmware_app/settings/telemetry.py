"""The ``[telemetry]`` section: what the box tells the hospital, and its keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clinibox_common.contracts.egress import IDENTITY
from clinibox_common.i18n import gettext
from clinibox_common.settings_loader import in_range, setting


def _identity(value: Any) -> str | None:
    """1-32 lower-case letters, digits or dashes (a topic level)."""
    if not IDENTITY.fullmatch(value):
        return gettext("must be 1-32 lower-case letters, digits or dashes, got %(value)s",
                       value=repr(value))
    return None


@dataclass
class TelemetryConfig:
    """What the box tells the hospital, and the keys that protect it."""

    clinic: str = setting(_identity, "clinic id (a topic level: a-z, 0-9, dashes)", "unassigned")
    device: str = setting(_identity, "device id (a topic level: a-z, 0-9, dashes)", "clinibox")
    hospital_key: str = setting(
        doc="the hospital's X25519 public key (PEM); messages are encrypted to it", default="")
    device_key: str = setting(
        doc="this box's Ed25519 signing key (PEM); empty means <state_dir>/keys/device.pem, "
            "made on first start", default="")
    device_secret: str = setting(
        doc="secret for the keyed-hash study references; empty means "
            "<state_dir>/keys/study-ref.secret, made on first start", default="")
    downlink_key: str = setting(
        doc="this box's X25519 key (PEM) the hospital encrypts its verdicts to; empty means "
            "<state_dir>/keys/device-downlink.key, made on first start", default="")
    hospital_signing_key: str = setting(
        doc="the hospital's Ed25519 public key (PEM) its verdicts are signed with; empty: no "
            "verdicts come down to this box", default="")
    summary_seconds: float = setting(in_range(1, 86400), "seconds between summaries", 3600.0)
    heartbeat_seconds: float = setting(in_range(1, 86400), "seconds between heartbeats", 300.0)
    outbox_max_messages: int = setting(in_range(10, 10_000_000), "messages kept waiting at most",
                                       100_000)
    audit_days: float = setting(in_range(0, 3650), "days sent messages stay listed for audit", 30.0)
    retry_min_seconds: float = setting(in_range(0.05, 3600), "first reconnect wait", 1.0)
    retry_max_seconds: float = setting(in_range(0.1, 86400), "longest reconnect wait", 300.0)
