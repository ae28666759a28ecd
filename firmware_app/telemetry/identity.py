"""The box's telemetry identity: clinic, device, signing key and study-reference secret.

The signing key, the downlink key (X25519: the hospital encrypts its verdicts to
it, ``contracts/downlink.py``) and the secret are made on the box on first start
(when the config leaves their paths empty) and never leave it; the technician enrols
the public key at the hospital (``clinibox telemetry identity`` prints it).

A study reference is HMAC-SHA256 of the study's key under the device secret,
truncated to 128 bits: the clinic can find the study again
(``clinibox study REF``), the hospital cannot reverse it, and two boxes give
unrelated references for the same study.
"""

from __future__ import annotations

import hmac
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from clinibox_common.contracts import downlink, signing
from clinibox_common.contracts.envelope import load_x25519_private
from clinibox_common.contracts.study_reference import study_ref  # the one keyed hash
from firmware_app.settings.box import Config
from firmware_app.storage.telemetry import study_keys

SECRET_BYTES = 32


@dataclass(frozen=True)
class DeviceIdentity:
    """Who this box is to the hospital, and the keys that prove it."""

    clinic: str
    device: str
    signing_key: Ed25519PrivateKey
    secret: bytes
    #: the X25519 key the hospital's downlink is encrypted to
    downlink_key: X25519PrivateKey

    @property
    def downlink_key_text(self) -> str:
        """The downlink public key as status messages carry it."""
        return downlink.key_text(self.downlink_key.public_key())

    @property
    def public_key_pem(self) -> str:
        """The Ed25519 public key to enrol at the hospital."""
        return self.signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    @property
    def key_id(self) -> str:
        """Short id of the public key (first 16 hex digits of its sha256)."""
        return signing.key_id(self.signing_key.public_key())

    def study_ref(self, study_key: str) -> str:
        """The keyed-hash reference of a study (32 hex digits)."""
        return study_ref(self.secret, study_key)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _new_signing_key() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


def _ensure(path: Path, configured: bool, make: Callable[[], bytes], what: str) -> None:
    if path.exists():
        return
    if configured:
        raise FileNotFoundError(f"{what} {path} (set in the config) does not exist")
    _write_private(path, make())


def load_identity(config: Config) -> DeviceIdentity:
    """Read the box's keys, making them on first start when the config leaves paths empty."""
    key_path, secret_path = config.device_key_path, config.device_secret_path
    _ensure(key_path, bool(config.telemetry.device_key), _new_signing_key, "device signing key")
    _ensure(secret_path, bool(config.telemetry.device_secret),
            lambda: os.urandom(SECRET_BYTES), "study-reference secret")
    downlink_path = config.downlink_key_path
    _ensure(downlink_path, bool(config.telemetry.downlink_key), downlink.new_box_key,
            "downlink key")
    secret = secret_path.read_bytes()
    if len(secret) < 16:
        raise ValueError(f"study-reference secret {secret_path} is shorter than 16 bytes")
    return DeviceIdentity(config.telemetry.clinic, config.telemetry.device,
                          signing.load_private_key(key_path), secret,
                          load_x25519_private(downlink_path, "the box's downlink key"))


def find_study(conn: sqlite3.Connection, identity: DeviceIdentity, ref: str) -> str | None:
    """The local study key whose reference is ``ref``, or None."""
    for key in study_keys(conn):
        if hmac.compare_digest(identity.study_ref(key), ref.lower()):
            return key
    return None
