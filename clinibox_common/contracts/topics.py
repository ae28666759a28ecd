"""The MQTT topic layout: ``clinibox/<clinic>/<device>/<kind>``.

The broker's ACL lets a device's certificate (common name ``<clinic>/<device>``)
publish only below its own ``clinibox/<clinic>/<device>/``; the hospital's
receiver checks that the topic agrees with the signed envelope header.
"""

from __future__ import annotations

from clinibox_common.contracts.egress import KINDS, check_identity

ROOT = "clinibox"


def topic(clinic: str, device: str, kind: str) -> str:
    """The topic a device publishes ``kind`` messages on."""
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    return f"{ROOT}/{check_identity(clinic, 'clinic')}/{check_identity(device, 'device')}/{kind}"


def subscription(group: str = "") -> str:
    """Every device's messages; with ``group`` an MQTT v5 shared subscription."""
    pattern = f"{ROOT}/+/+/+"
    return f"$share/{group}/{pattern}" if group else pattern


def parse_topic(name: str) -> tuple[str, str, str] | None:
    """(clinic, device, kind) of a clinibox topic, or None if it is not one."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != ROOT or parts[3] not in KINDS:
        return None
    return parts[1], parts[2], parts[3]
