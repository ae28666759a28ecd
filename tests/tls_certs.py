"""Throw-away certificate authorities and the certificates they issue, for TLS tests.

``CertificateAuthority.create(folder)`` makes a CA (its key is kept in memory, so
it can go on issuing); ``issue_server`` and ``issue_client`` write a certificate
and its key as PEM files and return their paths. Two calls to ``create`` give two
unrelated CAs: a certificate from one is foreign to a peer that trusts the other.
``make_pki`` is the one-call form the DICOM TLS test uses.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    """Paths of the generated PEM files."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer_name: x509.Name,
           issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool,
           usage: list | None = None, san: list | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def _file_stem(common_name: str) -> str:
    """A file name for a common name such as ``clinic-a/box-1`` (no path separators)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in common_name)


class CertificateAuthority:
    """A self-signed CA that keeps its private key and issues leaf certificates.

    Create one with :meth:`create`; the CA certificate is written to ``cert_path``.
    """

    def __init__(self, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
                 cert_path: Path) -> None:
        """Wrap an existing CA certificate and key (see :meth:`create`)."""
        self.name = name
        self.cert = cert
        self.key = key
        self.cert_path = cert_path

    @classmethod
    def create(cls, folder: Path, name: str = "clinibox test CA",
               file_name: str = "ca.pem") -> CertificateAuthority:
        """A new CA whose certificate is written to ``folder / file_name``."""
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(name, key, _name(name), key, ca=True)
        path = folder / file_name
        _write_cert(cert, path)
        return cls(name, cert, key, path)

    def _issue_leaf(self, common_name: str, folder: Path, stem: str | None,
                    usage: list, san: list | None) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(common_name, key, self.cert.subject, self.key, ca=False,
                      usage=usage, san=san)
        stem = stem or _file_stem(common_name)
        cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
        _write_cert(cert, cert_path)
        _write_key(key, key_path)
        return cert_path, key_path

    def issue_server(self, name: str, folder: Path, *, stem: str | None = None,
                     ip: str = "127.0.0.1", more_ips: tuple[str, ...] = ()
                     ) -> tuple[Path, Path]:
        """A server certificate for DNS ``name`` and IP ``ip`` (and ``more_ips``):
        (cert_path, key_path).

        The files are ``folder/<stem>.pem`` and ``.key``; ``stem`` defaults to a
        file-safe form of ``name``.
        """
        names = [x509.DNSName(name), *(x509.IPAddress(ipaddress.ip_address(address))
                                       for address in (ip, *more_ips))]
        return self._issue_leaf(name, folder, stem, [ExtendedKeyUsageOID.SERVER_AUTH], names)

    def issue_client(self, common_name: str, folder: Path, *,
                     stem: str | None = None) -> tuple[Path, Path]:
        """A client certificate with subject CN ``common_name``: (cert_path, key_path).

        The files are ``folder/<stem>.pem`` and ``.key``; ``stem`` defaults to a
        file-safe form of the common name (``clinic-a/box-1`` → ``clinic-a_box-1``).
        """
        return self._issue_leaf(common_name, folder, stem, [ExtendedKeyUsageOID.CLIENT_AUTH],
                                None)


def make_pki(folder: Path, server_name: str = "localhost") -> Pki:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    ca = CertificateAuthority.create(folder)
    server_cert, server_key = ca.issue_server(server_name, folder, stem="server")
    client_cert, client_key = ca.issue_client("modality-ct-1", folder, stem="client")
    return Pki(ca.cert_path, server_cert, server_key, client_cert, client_key)
