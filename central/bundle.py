"""The hospital's side of provisioning: issue a box's client certificate, write its bundle.

``clinibox central bundle`` issues the box's MQTT client certificate (CN
``clinic/device``, extended key usage clientAuth, an EC P-256 key made here)
with the hospital's CA and writes the enrolment bundle
(``clinibox_common.contracts.enrolment``) with the broker address, the CA certificate, the
hospital's X25519 public key and the trusted model-signing keys. The bundle
holds the client certificate's private key: it is written mode 0600 and
should be deleted once the box is provisioned.

A bundle that would build a box the hospital cannot answer is refused before it is written
(:func:`check_for_receiver`): one without the hospital's downlink signing key (no verdict or
rollout could ever reach the box, and nothing would say why) unless ``--no-downlink`` says
that is meant, and, given the receiver's ``--config``, one whose keys do not pair with the
receiver's own (its downlink signing key, its X25519 key, its rollouts' trusted keys).

``clinibox central enrol-code CODE`` is the way back: the box prints the code
(and a QR code of it) when it is provisioned; enrolling it trusts the box's
own signing key, exactly as ``clinibox central enrol`` does.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clinibox_common.bundled import DEMO_KEY_ID
from clinibox_common.contracts import signing
from clinibox_common.contracts.enrolment import (
    CERT_BACKDATE,
    EnrolmentBundle,
    EnrolmentError,
    write_bundle,
)
from clinibox_common.contracts.envelope import load_x25519_private
from clinibox_common.i18n import N_, gettext
from clinibox_common.i18n.error_words import error_words

#: a box lives for years in a clinic: three years, then a new bundle renews the certificate
DEFAULT_DAYS = 3 * 365
#: read when the CA key is encrypted and no terminal is there to ask
PASSWORD_ENV = "CLINIBOX_CA_KEY_PASSWORD"
ISSUER_KEYS = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey,
               ed448.Ed448PrivateKey)


#: the files a bundle is made from, in words (``%(path)s`` after them)
FILES = {"CA certificate": N_("cannot read the CA certificate %(path)s: %(why)s"),
         "CA key": N_("cannot read the CA key %(path)s: %(why)s"),
         "hospital public key": N_("cannot read the hospital public key %(path)s: %(why)s"),
         "model-signing public key": N_("cannot read the model-signing public key %(path)s: "
                                        "%(why)s"),
         "hospital downlink signing key": N_("cannot read the hospital downlink signing key "
                                             "%(path)s: %(why)s")}
NOT_TEXT = {"hospital public key": N_("the hospital public key %(path)s is not PEM text"),
            "model-signing public key": N_("the model-signing public key %(path)s is not PEM "
                                           "text"),
            "hospital downlink signing key": N_("the hospital downlink signing key %(path)s is "
                                                "not PEM text")}


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise EnrolmentError(gettext(FILES[what], path=path,
                                     why=error_words(exc, exc.strerror))) from exc


def _password(path: Path) -> bytes:
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV].encode("utf-8")
    if sys.stdin.isatty():
        return getpass.getpass(f"password of the CA key {path}: ").encode("utf-8")
    raise EnrolmentError(gettext("the CA key %(path)s is encrypted: run this on a terminal, or "
                                 "set %(variable)s", path=path, variable=PASSWORD_ENV))


def _private_key(data: bytes, path: Path,
                 password: bytes | None) -> PrivateKeyTypes:
    """The PEM private key in ``data``; TypeError when it is encrypted and ``password`` is
    None, EnrolmentError when it cannot be read (or the password is wrong)."""
    try:
        return serialization.load_pem_private_key(data, password=password)
    except ValueError as exc:
        raise EnrolmentError(gettext("%(path)s is not a readable PEM private key (or the "
                                     "password is wrong)", path=path)) from exc


def load_ca(cert_path: Path,
            key_path: Path) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    """The hospital CA's certificate and private key; EnrolmentError if they do not pair."""
    try:
        cert = x509.load_pem_x509_certificate(_read(cert_path, "CA certificate"))
    except ValueError as exc:
        raise EnrolmentError(gettext("%(path)s is not a PEM certificate", path=cert_path)
                             ) from exc
    data = _read(key_path, "CA key")
    try:
        key = _private_key(data, key_path, None)
    except TypeError:  # encrypted: asked for (or taken from the environment) outside the try,
        key = _private_key(data, key_path, _password(key_path))  # so its own error is kept
    if not isinstance(key, ISSUER_KEYS):
        raise EnrolmentError(gettext("%(path)s is not a key that can sign certificates",
                                     path=key_path))
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise EnrolmentError(gettext("%(key)s is not the key of the CA certificate %(cert)s",
                                     key=key_path, cert=cert_path))
    return cert, key


def issue_client_certificate(ca_cert: x509.Certificate,
                             ca_key: CertificateIssuerPrivateKeyTypes, clinic: str,
                             device: str, days: int = DEFAULT_DAYS,
                             now: dt.datetime | None = None) -> tuple[str, str]:
    """A new client certificate with CN ``clinic/device`` and its key: (cert PEM, key PEM).

    It is valid for ``days``, but never beyond the CA certificate's own end.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{clinic}/{device}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CERT_BACKDATE)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_cert.public_key()), critical=False)
    )
    algorithm = None if isinstance(ca_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) \
        else hashes.SHA256()
    cert = builder.sign(ca_key, algorithm)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return (cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            key_pem.decode("ascii"))


def make_bundle(*, ca_cert_path: Path, ca_key_path: Path, clinic: str, device: str,
                broker_host: str, broker_port: int, hospital_key_path: Path,
                signing_key_paths: list[Path], days: int = DEFAULT_DAYS,
                now: dt.datetime | None = None,
                hospital_signing_key_path: Path | None = None,
                model_name: str = "") -> EnrolmentBundle:
    """Issue the client certificate and assemble a checked bundle (nothing written);
    ``hospital_signing_key_path``: the downlink's Ed25519 public key, for verdicts to the box;
    ``model_name``: the model package the box runs (its ``[models] name``), "" for none."""
    if not 1 <= days <= 36500:
        raise EnrolmentError(gettext("--days must be between 1 and 36500, got %(days)s",
                                     days=days))
    ca_cert, ca_key = load_ca(ca_cert_path, ca_key_path)
    now = now or dt.datetime.now(dt.timezone.utc)
    cert_pem, key_pem = issue_client_certificate(ca_cert, ca_key, clinic, device, days, now)

    def text(path: Path, what: str) -> str:
        try:
            return _read(path, what).decode("ascii")
        except UnicodeDecodeError as exc:
            raise EnrolmentError(gettext(NOT_TEXT[what], path=path)) from exc

    bundle = EnrolmentBundle(
        clinic=clinic, device=device, broker_host=broker_host, broker_port=broker_port,
        ca_cert=ca_cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        client_cert=cert_pem, client_key=key_pem,
        hospital_key=text(hospital_key_path, "hospital public key"),
        model_signing_keys=tuple(text(p, "model-signing public key") for p in signing_key_paths),
        hospital_signing_key=(text(hospital_signing_key_path, "hospital downlink signing key")
                              if hospital_signing_key_path is not None else ""),
        issued_at=now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        model_name=model_name)
    if DEMO_KEY_ID in bundle.signing_key_ids():
        raise EnrolmentError(gettext("the DEMO-ONLY key cannot be a clinic's model-signing key:"
                                     " its private half is public; give the hospital's own "
                                     "signing key"))
    return bundle


def _spki(key: object) -> bytes:
    """A public key's DER SubjectPublicKeyInfo: two keys are one key when these are equal."""
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def check_for_receiver(bundle: EnrolmentBundle, *, downlink: bool,
                       hospital_signing_key: str = "", hospital_key: str = "",
                       rollout_keys: tuple[str, ...] = ()) -> None:
    """EnrolmentError, saying the fix, when the bundle would build a box the hospital cannot
    answer: no downlink signing key while ``downlink`` (verdicts and rollouts are wanted), or
    keys that do not pair with the receiver's own (each given as the receiver's
    configuration names it; empty: not checked)."""
    if downlink and not bundle.hospital_signing_key:
        raise EnrolmentError(gettext(
            "--hospital-signing-key is missing: the box could never receive the hospital's "
            "verdicts or model rollouts, and nothing would say why. Give the .pub of the "
            "receiver's downlink signing key (%(setting)s; made once with %(command)s), or "
            "--no-downlink if this box is only to send alerts up",
            setting="[keys] hospital_signing_key",
            command="clinibox keys generate --kind hospital-signing --out "
                    "/etc/clinibox-central/hospital-signing"))
    if not downlink and bundle.hospital_signing_key:
        raise EnrolmentError(gettext("--no-downlink and --hospital-signing-key contradict each "
                                     "other: give one of them"))
    if hospital_signing_key and bundle.hospital_signing_key:
        try:
            ours = signing.load_private_key(Path(hospital_signing_key)).public_key()
        except (OSError, ValueError, signing.SignatureError) as exc:
            raise EnrolmentError(gettext("%(setting)s %(path)s cannot be read: %(why)s",
                                         setting="[keys] hospital_signing_key",
                                         path=hospital_signing_key, why=error_words(exc))
                                 ) from exc
        given = serialization.load_pem_public_key(bundle.hospital_signing_key.encode("ascii"))
        if _spki(given) != _spki(ours):
            raise EnrolmentError(gettext(
                "--hospital-signing-key is not the public half of this receiver's %(setting)s "
                "(%(path)s, key %(key)s): the box would refuse every verdict and rollout. "
                "Give the .pub made beside that .pem", setting="[keys] hospital_signing_key",
                path=hospital_signing_key, key=signing.key_id(ours)))
    if hospital_key:
        try:
            ours_x = load_x25519_private(Path(hospital_key)).public_key()
        except (OSError, ValueError) as exc:
            raise EnrolmentError(gettext("%(setting)s %(path)s cannot be read: %(why)s",
                                         setting="[keys] hospital_key", path=hospital_key,
                                         why=error_words(exc))) from exc
        given_x = serialization.load_pem_public_key(bundle.hospital_key.encode("ascii"))
        if _spki(given_x) != _spki(ours_x):
            raise EnrolmentError(gettext(
                "--hospital-key is not the public half of this receiver's %(setting)s "
                "(%(path)s): the receiver could not read a single message of the box. "
                "Give the .pub made beside that .pem", setting="[keys] hospital_key",
                path=hospital_key))
    if rollout_keys:
        trusted = set()
        for path in rollout_keys:
            try:
                trusted.add(signing.key_id(signing.load_public_key(Path(path))))
            except (OSError, ValueError, signing.SignatureError) as exc:
                raise EnrolmentError(gettext("%(setting)s: %(path)s cannot be read: %(why)s",
                                             setting="[rollouts] trusted_keys", path=path,
                                             why=error_words(exc))) from exc
        if not trusted & set(bundle.signing_key_ids()):
            raise EnrolmentError(gettext(
                "no --signing-key is among the receiver's %(setting)s (%(keys)s): the box "
                "would refuse every package the hospital rolls out. Give the .pub of the "
                "hospital's model-signing key", setting="[rollouts] trusted_keys",
                keys=", ".join(sorted(trusted))))


def write_and_describe(bundle: EnrolmentBundle, out: Path, overwrite: bool = False) -> str:
    """Write the bundle (checked again, mode 0600); return the lines to print."""
    write_bundle(bundle, out, overwrite=overwrite)
    expires = bundle.certificate().not_valid_after_utc.strftime("%Y-%m-%d")
    box = f"{bundle.clinic}/{bundle.device}"
    lines = [
        gettext("wrote enrolment bundle %(path)s for %(box)s", path=out, box=box),
        "  " + gettext("fingerprint %(fingerprint)s (%(command)s prints it too: compare)",
                       fingerprint=bundle.fingerprint, command="clinibox provision"),
        "  " + gettext("broker %(broker)s, client certificate CN %(box)s valid until %(day)s",
                       broker=f"{bundle.broker_host}:{bundle.broker_port}", box=box,
                       day=expires),
        "  " + gettext("trusted model-signing keys: %(keys)s",
                       keys=", ".join(bundle.signing_key_ids())),
        "  " + (gettext("hospital downlink signing key: %(key)s (verdicts and rollouts reach "
                        "the box; prove it once it runs: %(command)s)",
                        key=_downlink_key_id(bundle),
                        command=f"clinibox central check-box {box}")
                if bundle.hospital_signing_key else
                gettext("no hospital downlink signing key (--no-downlink): no verdict or "
                        "rollout can reach this box")),
        *(["  " + gettext("the box runs the model package %(name)s: the hospital's rollouts of "
                          "it reach the box", name=bundle.model_name)]
          if bundle.model_name else []),
        gettext("It holds the box's TLS private key: carry it on removable media and delete "
                "it once the box is provisioned.")]
    return "\n".join(lines)


def _downlink_key_id(bundle: EnrolmentBundle) -> str:
    key = serialization.load_pem_public_key(bundle.hospital_signing_key.encode("ascii"))
    assert isinstance(key, ed25519.Ed25519PublicKey), "the bundle was checked"
    return signing.key_id(key)
