"""The enrolment bundle: everything a box needs from the hospital, in one file on a USB stick.

``clinibox central bundle`` writes it at the hospital, ``clinibox provision``
reads it on the box. It is one JSON object (schema ``clinibox.enrolment/1``)::

    {"schema": "clinibox.enrolment/1", "issued_at": "2026-11-21T20:30:00Z",
     "clinic": "clinic-a", "device": "box-1",
     "broker": {"host": "mqtt.hospital.example", "port": 8883},
     "tls": {"ca_cert": PEM, "client_cert": PEM, "client_key": PEM},
     "hospital_key": PEM,                       # X25519 public key, telemetry is sealed to it
     "model_signing_keys": [PEM, ...],          # Ed25519 public keys trusted for packages
     "hospital_signing_key": PEM}               # optional: Ed25519, signs the downlink

``hospital_signing_key`` is optional (bundles written before the downlink have none):
the public half of the key the hospital signs its verdicts with
(``contracts/downlink.py``); a box provisioned without it receives no verdicts.

The bundle carries the client TLS key. The hospital's CA issues the client
certificate (CN ``clinic/device``, which the broker's ACL maps to the topics
``clinibox/<clinic>/<device>/…``) together with its key, so one trip with
one USB stick provisions a box offline: no certificate signing request has to
travel back to the hospital and a signed certificate forth again. That key
only opens the TLS link to the broker. What the hospital trusts a message by
is the box's own Ed25519 signing key, which ``clinibox provision`` makes on
the box and which never leaves it: the hospital enrols its public key from
the code the box prints, so a copy of the bundle cannot forge telemetry the
hospital accepts. The bundle is still a secret (a copy could hold the
broker link of that box): the writer makes it mode 0600, and the technician
deletes it from the stick once the box is provisioned.

Reading a bundle checks everything before anything is written anywhere; each
problem is an :class:`EnrolmentError` that names the field and what is wrong.
The same checks run before the hospital writes one.

The enrolment code is what goes back: one line (also shown as a QR code)
that ``clinibox central enrol-code`` reads. It is upper case letters, digits
and ``:`` only, so it can be typed in any case, survives keyboard-wedge QR
scanners and fits a small QR code::

    CBX1:<CLINIC>:<DEVICE>:<Ed25519 public key, base32>:<8 hex digits of sha256 check>
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clinibox_common.contracts.downlink import PACKAGE_NAME
from clinibox_common.contracts.egress import check_identity
from clinibox_common.contracts.signing import key_id
from clinibox_common.errors import EXIT_USAGE, CliniboxError
from clinibox_common.fs import read_regular, write_atomically
from clinibox_common.i18n import ENGLISH, N_, current, gettext
from clinibox_common.i18n.error_words import error_words
from clinibox_common.i18n.formats import names as listed

SCHEMA = "clinibox.enrolment/1"
CODE_PREFIX = "CBX1"
_FIELDS = {"schema", "issued_at", "clinic", "device", "broker", "tls", "hospital_key",
           "model_signing_keys"}
#: fields a bundle may leave out (older bundles have none of them)
_OPTIONAL_FIELDS = {"hospital_signing_key", "model"}
_TLS_FIELDS = {"ca_cert", "client_cert", "client_key"}
MAX_BUNDLE_BYTES = 1 << 20
#: the hospital's client certificates start this long before they are issued, so a box whose
#: clock is a little behind still takes them
CERT_BACKDATE = dt.timedelta(hours=1)


class EnrolmentError(CliniboxError, ValueError):
    """A bundle or enrolment code that is refused; the message names the field and the fault."""

    kind = N_("enrolment refused")
    exit_status = EXIT_USAGE


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _now(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else dt.datetime.now(dt.timezone.utc)


def public_key_pem(key: Ed25519PublicKey | X25519PublicKey) -> str:
    """A public key as SubjectPublicKeyInfo PEM text."""
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


@dataclass(frozen=True)
class EnrolmentBundle:
    """The contents of one bundle (PEM texts as they travel); see the module docstring."""

    clinic: str
    device: str
    broker_host: str
    broker_port: int
    ca_cert: str
    client_cert: str
    client_key: str
    hospital_key: str
    model_signing_keys: tuple[str, ...]
    issued_at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc)
                           .strftime("%Y-%m-%dT%H:%M:%SZ"))
    #: the hospital's Ed25519 downlink signing key (PEM), "" in bundles without one
    hospital_signing_key: str = ""
    #: the model package the box runs (its ``[models] name``), "" where the bundle names none
    model_name: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to the file."""
        body = {"schema": SCHEMA, "issued_at": self.issued_at, "clinic": self.clinic,
                "device": self.device,
                "broker": {"host": self.broker_host, "port": self.broker_port},
                "tls": {"ca_cert": self.ca_cert, "client_cert": self.client_cert,
                        "client_key": self.client_key},
                "hospital_key": self.hospital_key,
                "model_signing_keys": list(self.model_signing_keys)}
        if self.hospital_signing_key:  # absent otherwise: an older bundle's fingerprint holds
            body["hospital_signing_key"] = self.hospital_signing_key
        if self.model_name:  # the same
            body["model"] = self.model_name
        return body

    def to_json(self) -> str:
        """The file's text (indented JSON, so it reads well in an editor)."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @property
    def fingerprint(self) -> str:
        """16 hex digits naming this bundle: both sides print it, so they can be compared."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    def certificate(self) -> x509.Certificate:
        """The client certificate, parsed."""
        return x509.load_pem_x509_certificate(self.client_cert.encode("ascii"))

    def signing_key_ids(self) -> list[str]:
        """Key ids of the trusted model-signing keys, in bundle order."""
        return [key_id(_ed25519(pem, "model_signing_keys")) for pem in self.model_signing_keys]


# -- checks ---------------------------------------------------------------------

def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise EnrolmentError(gettext("%(where)s: missing or not a text", where=where))
    return value


def _certificate(pem: str, where: str) -> x509.Certificate:
    if pem.count("-----BEGIN CERTIFICATE-----") != 1:
        raise EnrolmentError(gettext("%(where)s: not a PEM certificate (want exactly one "
                                     "%(armour)s block)", where=where,
                                     armour="-----BEGIN CERTIFICATE-----"))
    try:
        return x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        if current() == ENGLISH:  # the library's own words, as the journal has them
            raise EnrolmentError(f"{where}: not a readable PEM certificate ({exc})") from exc
        raise EnrolmentError(gettext("%(where)s: not a readable PEM certificate", where=where)
                             ) from exc


def _public_key(pem: str, where: str) -> Any:
    try:
        return serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm) as exc:
        raise EnrolmentError(gettext("%(where)s: not a readable PEM public key", where=where)
                             ) from exc


def _kind(key: Any) -> str:
    names = {"ECPublicKey": "an EC", "RSAPublicKey": "an RSA", "DSAPublicKey": "a DSA",
             "Ed25519PublicKey": "an Ed25519", "X25519PublicKey": "an X25519",
             "Ed448PublicKey": "an Ed448", "X448PublicKey": "an X448"}
    english = names.get(type(key).__name__, f"a {type(key).__name__}")
    if current() == ENGLISH:
        return english + " key"
    return gettext("%(name)s key", name=english.split(" ", 1)[1])


def _ed25519(pem: str, where: str) -> Ed25519PublicKey:
    key = _public_key(pem, where)
    if not isinstance(key, Ed25519PublicKey):
        raise EnrolmentError(gettext("%(where)s: is %(kind)s, not an Ed25519 public key (a "
                                     "model-signing .pub file)", where=where, kind=_kind(key)))
    return key


def _x25519(pem: str, where: str) -> X25519PublicKey:
    key = _public_key(pem, where)
    if not isinstance(key, X25519PublicKey):
        raise EnrolmentError(gettext("%(where)s: is %(kind)s, not an X25519 public key (the "
                                     "hospital's .pub from %(command)s)", where=where,
                                     kind=_kind(key),
                                     command="clinibox keys generate --kind hospital"))
    return key


def _check_validity(cert: x509.Certificate, where: str, now: dt.datetime) -> None:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now > end:
        raise EnrolmentError(gettext("%(where)s: the certificate expired on %(end)s (the clock "
                                     "here says %(now)s); ask the hospital for a new bundle",
                                     where=where, end=_utc(end), now=_utc(now)))
    if now < start:
        raise EnrolmentError(gettext("%(where)s: the certificate is not valid before %(start)s "
                                     "(the clock here says %(now)s); if this clock is wrong, set "
                                     "it first", where=where, start=_utc(start), now=_utc(now)))


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _common_names(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _check_issued_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    problem = ""
    try:
        cert.verify_directly_issued_by(ca)
    except ValueError:
        problem = gettext("issued by %(issuer)s, not by the bundle's CA %(ca)s",
                          issuer=repr(cert.issuer.rfc4514_string()),
                          ca=repr(ca.subject.rfc4514_string()))
    except InvalidSignature:
        problem = gettext("its signature does not verify with the bundle's CA key (another CA "
                          "of the same name, or altered)")
    except TypeError as exc:
        problem = (f"its signature cannot be checked ({exc})" if current() == ENGLISH
                   else gettext("its signature cannot be checked"))
    if problem:
        raise EnrolmentError(gettext("%(where)s: not signed by the bundle's CA (%(ca)s): "
                                     "%(problem)s", where="tls.client_cert", ca="tls.ca_cert",
                                     problem=problem))


def _check_client_key(pem: str, cert: x509.Certificate) -> None:
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except TypeError as exc:
        raise EnrolmentError(gettext("%(where)s: the key is encrypted; the box needs it "
                                     "unencrypted (it is stored mode %(mode)s)",
                                     where="tls.client_key", mode="0600")) from exc
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm) as exc:
        raise EnrolmentError(gettext("%(where)s: not a readable PEM private key",
                                     where="tls.client_key")) from exc
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise EnrolmentError(gettext("%(where)s: the key does not match the client certificate "
                                     "(%(cert)s)", where="tls.client_key",
                                     cert="tls.client_cert"))


def _wrong_names(names: list[str], wanted: str) -> str:
    """The client certificate's CN is not ``clinic/device``: what it is, what the ACL needs."""
    if not names:
        return gettext("%(where)s: its CN is missing, but the broker's ACL needs CN %(wanted)s "
                       "(clinic/device)", where="tls.client_cert", wanted=wanted)
    return gettext("%(where)s: its CN is %(names)s, but the broker's ACL needs CN %(wanted)s "
                   "(clinic/device)", where="tls.client_cert", names=" + ".join(names),
                   wanted=wanted)


def check_bundle(bundle: EnrolmentBundle, now: dt.datetime | None = None) -> None:
    """Check every part of ``bundle``; raise EnrolmentError naming the first problem."""
    moment = _now(now)
    for value, what in ((bundle.clinic, "clinic"), (bundle.device, "device")):
        try:
            check_identity(value, what)
        except ValueError as exc:
            raise EnrolmentError(str(exc)) from exc
    host = bundle.broker_host
    if not isinstance(host, str) or not host or any(c.isspace() or c in "/:@" for c in host):
        raise EnrolmentError(gettext("%(where)s: must be a host name or address, got %(value)s",
                                     where="broker.host", value=repr(host)))
    port = bundle.broker_port
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise EnrolmentError(gettext("%(where)s: must be between 1 and 65535, got %(value)s",
                                     where="broker.port", value=repr(port)))
    _issued(bundle)
    if bundle.model_name and not PACKAGE_NAME.fullmatch(bundle.model_name):
        raise EnrolmentError(gettext(
            "%(where)s: must be a model package's name (lower-case letters, digits, '.', '_' "
            "and '-'), got %(value)s", where="model", value=repr(bundle.model_name)))
    ca = _certificate(_text(bundle.ca_cert, "tls.ca_cert"), "tls.ca_cert")
    if not _is_ca(ca):
        raise EnrolmentError(gettext("%(where)s: not a CA certificate (no %(field)s)",
                                     where="tls.ca_cert", field="basicConstraints CA:TRUE"))
    _check_validity(ca, "tls.ca_cert", moment)
    cert = _certificate(_text(bundle.client_cert, "tls.client_cert"), "tls.client_cert")
    _check_issued_by(cert, ca)
    _check_validity(cert, "tls.client_cert", moment)
    wanted = f"{bundle.clinic}/{bundle.device}"
    names = _common_names(cert)
    if names != [wanted]:
        raise EnrolmentError(_wrong_names(names, wanted))
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
            raise EnrolmentError(gettext("%(where)s: not usable as a TLS client certificate (its "
                                         "extended key usage lacks %(usage)s)",
                                         where="tls.client_cert", usage="clientAuth"))
    except x509.ExtensionNotFound:
        pass
    _check_client_key(_text(bundle.client_key, "tls.client_key"), cert)
    _x25519(_text(bundle.hospital_key, "hospital_key"), "hospital_key")
    if not bundle.model_signing_keys:
        raise EnrolmentError(gettext("%(where)s: empty; the box would trust no model package",
                                     where="model_signing_keys"))
    if bundle.hospital_signing_key:
        _ed25519(_text(bundle.hospital_signing_key, "hospital_signing_key"),
                 "hospital_signing_key")
    for index, pem in enumerate(bundle.model_signing_keys):
        where = f"model_signing_keys[{index}]"
        _ed25519(_text(pem, where), where)


def _not_json(exc: ValueError) -> str:
    """The file is not JSON: in English the parser's words, else where it goes wrong."""
    if current() == ENGLISH:
        return f"not an enrolment bundle: not JSON ({exc})"
    if isinstance(exc, json.JSONDecodeError):
        return gettext("not an enrolment bundle: not JSON (an error at line %(line)s, column "
                       "%(column)s)", line=exc.lineno, column=exc.colno)
    return gettext("not an enrolment bundle: not UTF-8 text")


def _wrong_fields(missing: list[str], unknown: list[str]) -> str:
    """``bundle fields: missing a, b; unknown c``."""
    parts = ([gettext("missing %(fields)s", fields=listed(missing))] if missing else []) + (
        [gettext("unknown %(fields)s", fields=listed(unknown))] if unknown else [])
    return gettext("bundle fields: %(problems)s",
                   problems=("; " if current() == ENGLISH else "；").join(parts))


def parse_bundle(data: bytes, now: dt.datetime | None = None) -> EnrolmentBundle:
    """Read and fully check a bundle from the file's bytes; raise EnrolmentError if refused."""
    bundle = _read_fields(data)
    check_bundle(bundle, now)
    return bundle


def time_floor(data: bytes) -> dt.datetime:
    """A moment the real time is certainly past: when the hospital issued the bundle. Its
    ``issued_at`` is not signed, so it counts only within the :data:`CERT_BACKDATE` by which
    the CA's signed client certificate starts earlier; never before both certificates start.
    A box whose clock is behind this cannot take the bundle. EnrolmentError when the bundle
    does not hold at that moment either."""
    bundle = _read_fields(data)
    ca = _certificate(_text(bundle.ca_cert, "tls.ca_cert"), "tls.ca_cert")
    cert = _certificate(_text(bundle.client_cert, "tls.client_cert"), "tls.client_cert")
    issued = _issued(bundle)
    start = max(ca.not_valid_before_utc, cert.not_valid_before_utc)
    floor = max(start, min(issued, cert.not_valid_before_utc + CERT_BACKDATE))
    check_bundle(bundle, floor)
    return floor


def _issued(bundle: EnrolmentBundle) -> dt.datetime:
    """When the bundle says it was issued (UTC where it names no zone); EnrolmentError when
    that is not an ISO 8601 time."""
    try:
        issued = dt.datetime.fromisoformat(
            _text(bundle.issued_at, "issued_at").replace("Z", "+00:00"))
    except ValueError as exc:
        raise EnrolmentError(gettext("%(where)s: not an ISO 8601 time: %(value)s",
                                     where="issued_at", value=repr(bundle.issued_at))) from exc
    return issued if issued.tzinfo is not None else issued.replace(tzinfo=dt.timezone.utc)


def _read_fields(data: bytes) -> EnrolmentBundle:
    """The bundle's fields, each of the right shape; its certificates and keys not checked."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise EnrolmentError(gettext("not an enrolment bundle: %(size)s bytes is far too large",
                                     size=len(data)))
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnrolmentError(_not_json(exc)) from exc
    except RecursionError as exc:  # "[[[[…" a megabyte deep
        raise EnrolmentError(gettext("not an enrolment bundle: nested too deeply")) from exc
    if not isinstance(body, dict):
        raise EnrolmentError(gettext("not an enrolment bundle: not a JSON object"))
    if body.get("schema") != SCHEMA:
        raise EnrolmentError(gettext("unknown bundle schema %(schema)s; this box reads "
                                     "%(known)s", schema=repr(body.get("schema")), known=SCHEMA))
    missing = sorted(_FIELDS - set(body))
    unknown = sorted(set(body) - _FIELDS - _OPTIONAL_FIELDS)
    if missing or unknown:
        raise EnrolmentError(_wrong_fields(missing, unknown))
    broker, tls, keys = body["broker"], body["tls"], body["model_signing_keys"]
    if not isinstance(broker, dict) or set(broker) != {"host", "port"}:
        raise EnrolmentError(gettext("%(where)s: must be an object with exactly %(first)s and "
                                     "%(second)s", where="broker", first="host", second="port"))
    if not isinstance(tls, dict) or set(tls) != _TLS_FIELDS:
        raise EnrolmentError(gettext("%(where)s: must be an object with exactly %(fields)s",
                                     where="tls", fields=listed(sorted(_TLS_FIELDS))))
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise EnrolmentError(gettext("%(where)s: must be a list of PEM texts",
                                     where="model_signing_keys"))
    for name in ("clinic", "device", "issued_at", "hospital_key"):
        _text(body[name], name)
    for name in sorted(_TLS_FIELDS):
        _text(tls[name], f"tls.{name}")
    bundle = EnrolmentBundle(
        clinic=body["clinic"], device=body["device"], broker_host=broker["host"],
        broker_port=broker["port"], ca_cert=tls["ca_cert"], client_cert=tls["client_cert"],
        client_key=tls["client_key"], hospital_key=body["hospital_key"],
        model_signing_keys=tuple(keys), issued_at=body["issued_at"],
        hospital_signing_key=_text(body["hospital_signing_key"], "hospital_signing_key")
        if "hospital_signing_key" in body else "",
        model_name=_text(body["model"], "model") if "model" in body else "")
    return bundle


def read_bundle(path: str | Path, now: dt.datetime | None = None) -> EnrolmentBundle:
    """Read and check the bundle file at ``path``; EnrolmentError when refused or unreadable."""
    return parse_bundle(bundle_bytes(path), now)


def bundle_bytes(path: str | Path, *, follow_links: bool = True) -> bytes:
    """The bundle file's bytes, never more than one past :data:`MAX_BUNDLE_BYTES` (a larger
    file is refused by what reads them, without being read whole); EnrolmentError when it
    cannot be read (a link, with ``follow_links=False``)."""
    try:
        return read_regular(path, MAX_BUNDLE_BYTES, follow_links=follow_links)
    except OSError as exc:
        raise EnrolmentError(gettext("cannot read the bundle %(path)s: %(reason)s", path=path,
                                     reason=error_words(exc, exc.strerror))) from exc


def offered_ca(data: bytes) -> str:
    """The CA certificate (PEM) a bundle's fields name, read without checking the bundle's
    certificates or times: what a provisioned box compares with the CA it trusts before it
    believes anything else the bundle says."""
    return _read_fields(data).ca_cert


def write_bundle(bundle: EnrolmentBundle, path: str | Path, *, overwrite: bool = False,
                 now: dt.datetime | None = None) -> None:
    """Check ``bundle`` and write it to ``path`` (mode 0600, atomically): the hospital side."""
    check_bundle(bundle, now)
    path = Path(path)
    if path.exists() and not overwrite:
        raise EnrolmentError(gettext("%(path)s exists; refusing to overwrite it", path=path))
    write_atomically(path, bundle.to_json(), 0o600)


# -- the enrolment code ------------------------------------------------------------

@dataclass(frozen=True)
class EnrolmentCode:
    """What the box asks the hospital to enrol: its ids and its signing public key."""

    clinic: str
    device: str
    public_key: Ed25519PublicKey

    @property
    def public_key_pem(self) -> str:
        """The Ed25519 public key as PEM (what ``store.enrol`` takes)."""
        return public_key_pem(self.public_key)

    @property
    def key_id(self) -> str:
        """The key's short id, as ``clinibox identity`` prints it."""
        return key_id(self.public_key)

    def text(self) -> str:
        """The code itself: ``CBX1:CLINIC:DEVICE:KEY:CHECK`` (see the module docstring)."""
        raw = self.public_key.public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
        key = base64.b32encode(raw).decode("ascii").rstrip("=")
        body = f"{CODE_PREFIX}:{self.clinic.upper()}:{self.device.upper()}:{key}"
        return f"{body}:{_check_digits(body)}"


def _check_digits(body: str) -> str:
    return hashlib.sha256(body.encode("ascii")).hexdigest()[:8].upper()


def parse_code(text: str) -> EnrolmentCode:
    """Read an enrolment code (any case, surrounding blanks ignored); EnrolmentError if bad."""
    cleaned = "".join(text.split()).upper()
    parts = cleaned.split(":")
    if len(parts) != 5 or parts[0] != CODE_PREFIX:
        raise EnrolmentError(gettext("not a clinibox enrolment code (want %(form)s, as "
                                     "clinibox provision prints it)",
                                     form=f"{CODE_PREFIX}:CLINIC:DEVICE:KEY:CHECK"))
    body = ":".join(parts[:4])
    if parts[4] != _check_digits(body):
        raise EnrolmentError(gettext("the enrolment code's check digits do not match: a "
                                     "character was mistyped or lost; scan or copy it again"))
    clinic, device = parts[1].lower(), parts[2].lower()
    for value, what in ((clinic, "clinic"), (device, "device")):
        try:
            check_identity(value, what)
        except ValueError as exc:
            raise EnrolmentError(str(exc)) from exc
    try:
        raw = base64.b32decode(parts[3] + "=" * (-len(parts[3]) % 8))
        key = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise EnrolmentError(gettext("the enrolment code's key is not an Ed25519 public key")
                             ) from exc
    return EnrolmentCode(clinic, device, key)
