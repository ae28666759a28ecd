"""The HTTPS certificate of a clinibox web app: the one configured, or a self-signed one.

With no certificate configured the app makes a self-signed one on first start
(ECDSA P-256, ten years, the host name, ``localhost`` and 127.0.0.1 as names) and
logs its SHA-256 fingerprint, which staff compare once when the browser first asks
them to trust it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clinibox_common.errors import EXIT_USAGE, CliniboxError
from clinibox_common.i18n import N_

log = logging.getLogger(__name__)


class CertificateError(CliniboxError, ValueError):
    """A configured certificate or key that is missing or unreadable (the setting named)."""

    exit_status = EXIT_USAGE
    kind = N_("config error")


def make_self_signed(cert_path: Path, key_path: Path, hostname: str | None = None,
                     common_name: str = "clinibox viewer") -> None:
    """Write a self-signed certificate and its key (0600); its subject is
    ``"{common_name} {hostname}"`` (hostname: this machine's by default)."""
    hostname = hostname or socket.gethostname()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} {hostname}")])
    now = dt.datetime.now(dt.timezone.utc)
    names: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_certificate(cert_path: Path, key_path: Path, *, configured: bool,
                       setting: str = "[web]",
                       common_name: str = "clinibox viewer") -> tuple[Path, Path, str]:
    """(certificate, key, SHA-256 fingerprint): the configured pair, or the app's own.

    ``configured``: the pair was given in the config and must exist (CertificateError
    otherwise); else a self-signed pair is made when missing. ``setting`` is the config
    section the pair comes from (``"[web]"`` in both apps), named in errors as
    ``"[web] tls_cert/tls_key: ..."``.
    """
    if configured:
        for path in (cert_path, key_path):
            if not path.is_file():
                raise CertificateError(f"{setting} tls_cert/tls_key: {path} does not exist")
    elif not (cert_path.exists() and key_path.exists()):
        make_self_signed(cert_path, key_path, common_name=common_name)
        log.info("made a self-signed certificate (%s): %s", common_name, cert_path)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError as exc:
        raise CertificateError(f"{setting} tls_cert: {cert_path} is not a PEM certificate") \
            from exc
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return cert_path, key_path, fingerprint
