"""Ed25519 signatures over canonical JSON, and key files.

The canonical form of a document is its JSON with sorted keys, no spaces and
UTF-8 text, with the ``signature`` member left out. The same function is used
by the converter that signs and the box that verifies.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from clinibox_common.errors import CliniboxError

ALGORITHM = "ed25519"


class SignatureError(CliniboxError, ValueError):
    """A signature that is missing, malformed, from an untrusted key, or wrong."""

    kind = "signature refused"


def canonical_bytes(document: dict[str, Any]) -> bytes:
    """The bytes that are signed: sorted-key compact JSON without ``signature``."""
    body = {k: v for k, v in document.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def manifest_digest(document: dict[str, Any]) -> str:
    """A manifest's digest: the hex SHA-256 of its canonical form (what its signature covers).
    The box reports its running model's (``status.model_digest``) and the hospital's rollout
    knows its package's, so a step counts only for the package the box shows it runs."""
    return hashlib.sha256(canonical_bytes(document)).hexdigest()


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short stable id for a public key: the first 16 hex digits of its sha256."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key_pair(private_path: Path, public_path: Path) -> str:
    """Write a new Ed25519 key pair as PEM files (private one mode 0600); return its id."""
    private = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    private_path.touch(mode=0o600, exist_ok=False)
    private_path.write_bytes(pem)
    public_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key_id(private.public_key())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key from a PEM file."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key from a PEM file."""
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path} is not an Ed25519 public key")
    return key


def sign_document(document: dict[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """Return a copy of ``document`` with a ``signature`` member over its canonical form."""
    value = private_key.sign(canonical_bytes(document))
    signed = dict(document)
    signed["signature"] = {
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "value": base64.b64encode(value).decode("ascii"),
    }
    return signed


def verify_document(document: dict[str, Any], trusted: list[Ed25519PublicKey]) -> str:
    """Check ``document``'s signature against the trusted keys; return the signer's key id."""
    signature = document.get("signature")
    if not isinstance(signature, dict):
        raise SignatureError("the package is not signed (no signature in its manifest)")
    if signature.get("algorithm") != ALGORITHM:
        raise SignatureError(f"unsupported signature algorithm {signature.get('algorithm')!r}")
    wanted = signature.get("key_id")
    keys = {key_id(k): k for k in trusted}
    if wanted not in keys:
        raise SignatureError(
            f"the package is signed by key {wanted!r}, which this box does not trust"
        )
    try:
        raw = base64.b64decode(signature.get("value", ""), validate=True)
        keys[wanted].verify(raw, canonical_bytes(document))
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError(
            "the package signature does not match its manifest (altered after signing?)"
        ) from exc
    return wanted
