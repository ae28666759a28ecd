"""Envelopes a hostile (but enrolled) box could send: any header and plaintext bytes, signed.

``seal`` only writes canonical headers and JSON payloads; :func:`seal_raw`
seals whatever bytes it is given with the same wire format, so tests and fuzz
targets reach the hospital's parsers behind a valid signature.
"""

from __future__ import annotations

import os
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from clinibox_common.contracts.envelope import MAGIC, _message_key, _raw

#: The two findings of issue 43: a header nested 5,000 levels, a 5,000-digit sequence number.
DEPTH, DIGITS = 5000, 5000


def seal_raw(header: bytes, plaintext: bytes, hospital: X25519PublicKey,
             key: Ed25519PrivateKey, *, nonce: bytes | None = None,
             ephemeral: X25519PrivateKey | None = None) -> bytes:
    """An envelope of exactly these header and plaintext bytes, encrypted and signed."""
    ephemeral = ephemeral or X25519PrivateKey.generate()
    ephemeral_raw = _raw(ephemeral.public_key())
    secret = _message_key(ephemeral.exchange(hospital), ephemeral_raw, _raw(hospital))
    nonce = nonce or os.urandom(12)
    ciphertext = AESGCM(secret).encrypt(nonce, plaintext, header)
    body = MAGIC + struct.pack(">H", len(header) & 0xFFFF) + header + ephemeral_raw + nonce \
        + ciphertext
    return body + key.sign(body)


def deep_header(depth: int = DEPTH) -> bytes:
    """A header of ``depth`` nested JSON arrays."""
    return b"[" * depth + b"]" * depth


def long_seq_header(clinic: str, device: str, kind: str, digits: int = DIGITS) -> bytes:
    """A canonical-looking header whose sequence number has ``digits`` digits."""
    return (f'{{"clinic":"{clinic}","device":"{device}","kind":"{kind}","seq":'
            f'{"9" * digits},"v":1}}').encode("ascii")
