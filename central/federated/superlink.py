"""The hospital's Flower SuperLink and the way a run reaches it (decision 0056).

The commands are Flower's own (``flower-superlink``, ``flwr run``); this module writes their
command lines in one place (``clinibox central superlink`` and ``federated-run``, the
benchmark and the tests use them) and checks, before any of them starts, what would make
them fail later with nothing said: TLS files that do not belong together, a SuperLink that
does not answer, or one whose certificate the boxes' CA does not vouch for. Problems are
codes; the command line says them in the reader's words.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import sys
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

#: clinibox's Flower App (its pyproject.toml names the ServerApp and the ClientApp)
FLOWER_APP = Path(__file__).resolve().parent / "flower_app"
#: the federation's name in the ``flwr`` command's configuration
FEDERATION = "hospital"
#: the port a SuperLink serves the boxes and ``flwr run`` on unless told otherwise
DEFAULT_PORT = 9092
#: where the SuperLink's own ServerApp process reaches it, checking its certificate: the
#: certificate must name this address, or every run waits for ever with nothing said
LOOPBACK = ipaddress.ip_address("127.0.0.1")


def flower_bin() -> Path:
    """The folder of Flower's commands: beside the Python that runs clinibox."""
    return Path(sys.executable).parent


def superlink_command(certificate: Path, key: Path, ca: Path, host: str, port: int,
                      database: Path) -> list[str]:
    """``flower-superlink`` over TLS with the hospital's certificate, its state in
    ``database``. It installs nothing a run's bundle asks for: clinibox's apps are installed
    with clinibox, and nothing is downloaded at run time."""
    return [str(flower_bin() / "flower-superlink"), "--ssl-ca-certfile", str(ca),
            "--ssl-certfile", str(certificate), "--ssl-keyfile", str(key), "--host", host,
            "--port", str(port), "--database", str(database),
            "--disable-runtime-dependency-installation"]


def flower_environment(home: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of Flower's commands: their own home (``FLWR_HOME``) and Flower's
    other commands (``flower-superexec``, which the SuperLink starts by name) first on PATH."""
    base = dict(os.environ if base is None else base)
    return {**base, "FLWR_HOME": str(home),
            "PATH": f"{flower_bin()}{os.pathsep}{base.get('PATH', '')}"}


def write_flower_home(home: Path, address: str, ca: Path) -> Path:
    """The ``flwr`` command's configuration in ``home``: the federation ``hospital`` at
    ``address``, its certificate checked against ``ca``."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(f'[superlink]\ndefault = "{FEDERATION}"\n\n[superlink.{FEDERATION}]\n'
                    f"address = {_toml(address)}\nroot-certificates = {_toml(str(ca))}\n")
    return path


def run_command(app: Path, config: dict[str, object]) -> list[str]:
    """``flwr run`` of the Flower App ``app`` at the federation, streaming the ServerApp's
    log until the run ends, with ``config`` as its run configuration."""
    pairs = " ".join(f"{k}={_toml(v)}" for k, v in config.items())
    return [str(flower_bin() / "flwr"), "run", str(app), FEDERATION, "--stream",
            "--run-config", pairs]


def _toml(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def split_address(address: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` too) as (host, port), or None when it is not one."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def tls_problem(certificate: Path, key: Path, ca: Path) -> str | None:
    """The code of what is wrong with the SuperLink's TLS files, or None: each readable, the
    key the certificate's own, the certificate issued by the CA, valid today and naming
    127.0.0.1 (:data:`LOOPBACK`) beside the host name the boxes use."""
    try:
        cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    except (OSError, ValueError):
        return "certificate_unreadable"
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return "key_unreadable"
    try:
        authority = x509.load_pem_x509_certificate(ca.read_bytes())
    except (OSError, ValueError):
        return "ca_unreadable"
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(serialization.Encoding.DER, public) != \
            cert.public_key().public_bytes(serialization.Encoding.DER, public):
        return "key_not_the_certificates"
    try:
        cert.verify_directly_issued_by(authority)
    except (InvalidSignature, ValueError, TypeError):
        return "certificate_not_issued_by_ca"
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return "certificate_expired"
    if LOOPBACK not in _ip_names(cert):
        return "certificate_lacks_loopback"
    return None


def _ip_names(cert: x509.Certificate) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(names.get_values_for_type(x509.IPAddress))


def superlink_problem(address: str, ca: Path, timeout: float = 10.0) -> str | None:
    """The code of why ``flwr run`` could not reach a SuperLink at ``address`` trusting
    ``ca``, or None: something must answer there, over TLS, with a certificate the CA issued
    for that host name (the boxes check the same)."""
    parts = split_address(address)
    if parts is None:
        return "address_not_host_port"
    try:
        context = ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError):
        return "ca_unreadable"
    try:
        with socket.create_connection(parts, timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=parts[0]):
            return None
    except ssl.SSLCertVerificationError:
        return "superlink_certificate_refused"
    except (OSError, ssl.SSLError):
        return "superlink_not_answering"
