"""Application-layer encryption and signing of outbound messages (on top of TLS).

Wire format of one envelope (all integers big-endian)::

    b"CBX1" | u16 header length | header (compact JSON) | ephemeral X25519 key (32)
            | nonce (12) | AES-256-GCM ciphertext + tag | Ed25519 signature (64)

* The header says who sent what: ``{"clinic", "device", "kind", "seq", "v"}``.
  It is authenticated (GCM associated data) and signed, never secret: the
  topic carries the same clinic and device.
* Each envelope has its own ephemeral X25519 key agreed with the hospital's
  public key; HKDF-SHA256 (salt = ephemeral key + hospital key) gives a fresh
  AES-256 key, so a key and nonce pair is never used twice, and the nonce is
  random as well.
* The device signs everything before the signature with its Ed25519 key, so
  the receiver can refuse an unknown device or a tampered envelope before it
  decrypts anything.

``seal`` runs on the box, ``open_envelope`` at the hospital.

Reading is bounded and total: whatever bytes arrive, :func:`read_header` and
:func:`open_envelope` return or raise :class:`EnvelopeError`, nothing else.
Before any JSON is parsed the header's length (``MAX_HEADER_BYTES``) and the
nesting depth of header and payload (``MAX_HEADER_DEPTH``,
``MAX_PAYLOAD_DEPTH``) are checked on the raw text; while parsing, an integer
of more than ``MAX_INT_DIGITS`` digits (a sequence number beyond 64 bits), a
long float literal and the literals NaN/Infinity are refused before Python converts
them (an overflowing literal such as ``1e400`` becomes infinity here and is refused
by the egress schema's finite numbers);
after parsing, strings, keys and lists are bounded (``MAX_STRING``,
``MAX_ITEMS``).
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from clinibox_common.errors import CliniboxError

MAGIC = b"CBX1"
#: the envelope format's version (the header's ``v``); the hospital refuses any other
VERSION = 1
HKDF_INFO = b"clinibox telemetry v1"
_KEY_LEN, _NONCE_LEN, _SIG_LEN = 32, 12, 64
_MIN_LEN = len(MAGIC) + 2 + _KEY_LEN + _NONCE_LEN + 16 + _SIG_LEN
MAX_ENVELOPE_BYTES = 256 * 1024
#: A canonical header is about 100 bytes: clinic and device ids of at most 32 characters each.
MAX_HEADER_BYTES = 512
#: The header is one flat object; the payload's deepest field (status.audit) is at depth 2.
MAX_HEADER_DEPTH, MAX_PAYLOAD_DEPTH = 1, 8
#: Digits of an integer literal: 2**63 - 1 has 19 (a seq or count a database column holds).
MAX_INT_DIGITS = 19
#: Characters of a float literal (``repr`` of any double is shorter).
MAX_FLOAT_CHARS = 32
#: Characters of any string or key, and items of any list or object, in a payload.
MAX_STRING, MAX_ITEMS = 256, 256
#: The largest sequence number (a signed 64-bit database column).
MAX_SEQ = 2**63 - 1
#: Everything a malformed input may raise while it is parsed (caught at the boundary).
_PARSE_FAULTS = (RecursionError, ValueError, OverflowError, TypeError, KeyError, IndexError,
                 UnicodeError, struct.error)
#: a string (an unterminated one runs to the end: linear, no backtracking) or a bracket
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


class EnvelopeError(CliniboxError, ValueError):
    """An envelope the hospital refuses; ``reason`` is a short machine word."""

    kind = "telemetry envelope refused"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Header:
    """The signed, cleartext part of an envelope."""

    #: the clinic's id (the topic's second level)
    clinic: str
    #: the device's id within its clinic (the topic's third level; the box's certificate
    #: is ``<clinic>/<device>``)
    device: str
    #: the message kind, the topic's last level: the payload is checked against its schema
    kind: str
    #: the message's sequence number in the box's outbox: the hospital keeps each
    #: (clinic, device, seq) once, so a message delivered twice is stored once
    seq: int

    def to_bytes(self) -> bytes:
        """The canonical header bytes (sorted compact JSON)."""
        body = {"clinic": self.clinic, "device": self.device, "kind": self.kind,
                "seq": self.seq, "v": VERSION}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")


@dataclass(frozen=True)
class Opened:
    """A verified, decrypted envelope."""

    header: Header
    payload: dict[str, Any]


def canonical_payload(payload: dict[str, Any]) -> bytes:
    """The exact plaintext bytes of a payload (sorted compact JSON)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")


def _message_key(shared: bytes, ephemeral: bytes, recipient: bytes,
                 info: bytes = HKDF_INFO) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral + recipient,
                info=info).derive(shared)


def _raw(public_key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def seal(header: Header, payload: dict[str, Any], hospital_key: X25519PublicKey,
         device_key: Ed25519PrivateKey, *, info: bytes = HKDF_INFO) -> bytes:
    """Encrypt ``payload`` to the hospital and sign the envelope with the device key.

    The same sealing runs the other way for the hospital's downlink
    (``contracts/downlink.py``): recipient the box's X25519 key, signer the
    hospital's Ed25519 key, and its own ``info`` (HKDF), so an envelope of one
    direction never opens as one of the other.
    """
    header_bytes = header.to_bytes()
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = _raw(ephemeral.public_key())
    key = _message_key(ephemeral.exchange(hospital_key), ephemeral_raw, _raw(hospital_key), info)
    nonce = os.urandom(_NONCE_LEN)
    ciphertext = AESGCM(key).encrypt(nonce, canonical_payload(payload), header_bytes)
    body = (MAGIC + struct.pack(">H", len(header_bytes)) + header_bytes + ephemeral_raw
            + nonce + ciphertext)
    return body + device_key.sign(body)


def nesting_depth(text: bytes, limit: int) -> int:
    """The bracket nesting depth of JSON ``text`` (outside strings), counting to ``limit + 1``.

    Runs on the raw bytes before ``json.loads``, so a deeply nested input is refused
    without recursion, in one linear pass.
    """
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token[:1] == b'"':
            continue
        if token in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        else:
            depth -= 1
    return deepest


def _parse_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise EnvelopeError("malformed", f"integer of more than {MAX_INT_DIGITS} digits")
    return int(literal)


def _parse_float(literal: str) -> float:
    if len(literal) > MAX_FLOAT_CHARS:
        raise EnvelopeError("malformed", "number literal too long")
    return float(literal)


def _parse_constant(literal: str) -> Any:
    raise EnvelopeError("malformed", f"{literal} is not a JSON number")


def bounded_json(text: bytes, encoding: str, depth: int, what: str) -> Any:
    """Parse ``text`` as JSON within the bounds above; raise EnvelopeError("malformed")."""
    if nesting_depth(text, depth) > depth:
        raise EnvelopeError("malformed", f"{what} nests deeper than {depth} levels")
    try:
        value = json.loads(text.decode(encoding), parse_int=_parse_int,
                           parse_float=_parse_float, parse_constant=_parse_constant)
    except EnvelopeError:
        raise
    except _PARSE_FAULTS as exc:
        raise EnvelopeError("malformed", f"{what} is not JSON") from exc
    _check_sizes(value, what, depth)
    return value


def _check_sizes(value: Any, what: str, depth: int) -> None:
    """Refuse over-long strings and keys and over-full lists and objects (depth is bounded)."""
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise EnvelopeError("malformed", f"{what}: a string longer than {MAX_STRING}")
    elif isinstance(value, (list, dict)):
        if len(value) > MAX_ITEMS or depth < 0:
            raise EnvelopeError("malformed", f"{what}: more than {MAX_ITEMS} items")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and len(key) > MAX_STRING:
                raise EnvelopeError("malformed", f"{what}: a key longer than {MAX_STRING}")
            _check_sizes(item, what, depth - 1)


def _header_length(envelope: bytes) -> int:
    """Check the frame (size, magic, header length) and return the header's length."""
    if not isinstance(envelope, (bytes, bytearray)) or len(envelope) < _MIN_LEN:
        raise EnvelopeError("malformed", "envelope too short")
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError("malformed", "envelope too large")
    if envelope[:4] != MAGIC:
        raise EnvelopeError("malformed", "not a clinibox envelope (bad magic)")
    (length,) = struct.unpack(">H", envelope[4:6])
    if length > MAX_HEADER_BYTES:
        raise EnvelopeError("malformed", f"header longer than {MAX_HEADER_BYTES} bytes")
    if 6 + length + _KEY_LEN + _NONCE_LEN + 16 + _SIG_LEN > len(envelope):
        raise EnvelopeError("malformed", "header length beyond the envelope")
    return length


def _read_header(envelope: bytes) -> Header:
    length = _header_length(envelope)
    raw = bytes(envelope[6:6 + length])
    body = bounded_json(raw, "ascii", MAX_HEADER_DEPTH, "header")
    if not isinstance(body, dict) or set(body) != {"clinic", "device", "kind", "seq", "v"}:
        raise EnvelopeError("malformed", "header fields are not the expected ones")
    if body["v"] != VERSION or isinstance(body["v"], bool):
        raise EnvelopeError("malformed", "unsupported envelope version")
    seq = body["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= MAX_SEQ:
        raise EnvelopeError("malformed", "sequence number must be an integer in [1, 2**63-1]")
    if not all(isinstance(body[k], str) for k in ("clinic", "device", "kind")):
        raise EnvelopeError("malformed", "header identity fields must be strings")
    header = Header(body["clinic"], body["device"], body["kind"], seq)
    if header.to_bytes() != raw:
        raise EnvelopeError("malformed", "header is not in canonical form")
    return header


def read_header(envelope: bytes) -> Header:
    """Parse the cleartext header without checking anything else; raise only EnvelopeError."""
    try:
        return _read_header(envelope)
    except EnvelopeError:
        raise
    except _PARSE_FAULTS as exc:  # defensive: the checks above should leave none
        raise EnvelopeError("malformed", f"unreadable header ({type(exc).__name__})") from exc


def open_envelope(envelope: bytes, device_key: Ed25519PublicKey,
                  hospital_key: X25519PrivateKey, *, info: bytes = HKDF_INFO) -> Opened:
    """Verify the device signature, then decrypt; raise EnvelopeError on any fault.

    For the downlink the roles turn round: ``device_key`` is the hospital's
    signing key and ``hospital_key`` the box's X25519 key (``contracts/downlink.py``).
    """
    header = read_header(envelope)
    try:
        return _open(envelope, header, device_key, hospital_key, info)
    except EnvelopeError:
        raise
    except _PARSE_FAULTS as exc:  # defensive, as in read_header
        raise EnvelopeError("malformed", f"unreadable envelope ({type(exc).__name__})") from exc


def _open(envelope: bytes, header: Header, device_key: Ed25519PublicKey,
          hospital_key: X25519PrivateKey, info: bytes) -> Opened:
    body, signature = bytes(envelope[:-_SIG_LEN]), bytes(envelope[-_SIG_LEN:])
    try:
        device_key.verify(signature, body)
    except InvalidSignature as exc:
        raise EnvelopeError("bad-signature",
                            "signature does not match the enrolled device key") from exc
    length = struct.unpack(">H", body[4:6])[0]
    offset = 6 + length
    ephemeral_raw = body[offset:offset + _KEY_LEN]
    nonce = body[offset + _KEY_LEN:offset + _KEY_LEN + _NONCE_LEN]
    ciphertext = body[offset + _KEY_LEN + _NONCE_LEN:]
    try:
        ephemeral = X25519PublicKey.from_public_bytes(ephemeral_raw)
        shared = hospital_key.exchange(ephemeral)
        key = _message_key(shared, ephemeral_raw, _raw(hospital_key.public_key()), info)
        plaintext = AESGCM(key).decrypt(nonce, ciphertext, body[6:offset])
    except (InvalidTag, ValueError) as exc:
        raise EnvelopeError("undecryptable",
                            "cannot decrypt: not sealed to this hospital's key") from exc
    payload = bounded_json(plaintext, "utf-8", MAX_PAYLOAD_DEPTH, "payload")
    if not isinstance(payload, dict):
        raise EnvelopeError("malformed", "payload is not an object")
    return Opened(header, payload)


# -- key files ----------------------------------------------------------------

def generate_x25519_pair(private_path: Path, public_path: Path) -> None:
    """Write a new X25519 key pair (the hospital's) as PEM; the private file mode 0600."""
    private = X25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    private_path.touch(mode=0o600, exist_ok=False)
    private_path.write_bytes(pem)
    public_path.write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def load_x25519_private(path: Path,
                        hint: str = "clinibox keys generate --kind hospital makes one"
                        ) -> X25519PrivateKey:
    """Read an X25519 private key (PEM): the hospital's, or a box's downlink key; ValueError
    for another kind of key, ``hint`` in parentheses."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, X25519PrivateKey):
        raise ValueError(f"{path} is not an X25519 private key ({hint})")
    return key


def load_x25519_public(path: Path) -> X25519PublicKey:
    """Read the hospital's X25519 public key (PEM), as installed on each box."""
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, X25519PublicKey):
        raise ValueError(f"{path} is not an X25519 public key (the hospital's .pub file)")
    return key
