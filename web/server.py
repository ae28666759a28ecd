"""Serve the viewer over HTTPS with gunicorn (``clinibox web``), never Flask's development server.

The viewer only speaks HTTPS: its session cookie is Secure. With no
``[web] tls_cert`` the box makes a self-signed certificate on first start
(ECDSA P-256, ten years, the host name, ``localhost`` and 127.0.0.1 as
names) and logs its SHA-256 fingerprint, which staff compare once when the
browser first asks them to trust it. One gunicorn worker with threads
(``[web] threads``): the pages are small and the box has few cores.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gunicorn.app.base import BaseApplication

from firmware_app.settings.box import Config, ConfigError
from firmware_app.storage import db
from firmware_app.storage.accounts import Accounts

log = logging.getLogger(__name__)


def make_self_signed(cert_path: Path, key_path: Path, hostname: str | None = None) -> None:
    """Write a self-signed certificate and its key (0600) for the viewer."""
    hostname = hostname or socket.gethostname()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"clinibox viewer {hostname}")])
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


def certificate(config: Config) -> tuple[Path, Path, str]:
    """(certificate, key, SHA-256 fingerprint): the configured pair, or the box's own."""
    cert_path, key_path = config.web_cert_paths
    if config.web.tls_cert:
        for path in (cert_path, key_path):
            if not path.is_file():
                raise ConfigError(f"[web] tls_cert/tls_key: {path} does not exist")
    elif not (cert_path.exists() and key_path.exists()):
        make_self_signed(cert_path, key_path)
        log.info("made a self-signed certificate for the viewer: %s", cert_path)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError as exc:
        raise ConfigError(f"[web] tls_cert: {cert_path} is not a PEM certificate") from exc
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return cert_path, key_path, fingerprint


def first_run_hint(config: Config, config_path: str | None = None) -> str | None:
    """How to make the first account, when there is none (the viewer has no default password)."""
    conn = db.open_database(config.database_path)
    try:
        if Accounts(conn).count():
            return None
    finally:
        conn.close()
    where = f" --config {config_path}" if config_path else ""
    return ("no viewer accounts yet; make the first on the box with:  "
            f"clinibox user add NAME --role technician{where}")


class ViewerServer(BaseApplication):
    """gunicorn running the viewer app in-process, configured from [web]."""

    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        """Hand our options to gunicorn."""
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        """The WSGI app."""
        return self.application


def gunicorn_options(config: Config, cert: Path, key: Path) -> dict[str, Any]:
    """gunicorn settings for the box: one threaded worker, TLS, logs to stderr."""
    return {
        "bind": f"{config.web.host}:{config.web.port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": config.web.threads,
        "certfile": str(cert),
        "keyfile": str(key),
        "timeout": 60,
        "graceful_timeout": 10,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": config.logging.level.lower(),
        "proc_name": "clinibox-web",
        "forwarded_allow_ips": "",
    }


def serve(config: Config, config_path: str | None = None) -> None:
    """Run the viewer until SIGTERM/SIGINT."""
    from web.app import create_app

    cert, key, fingerprint = certificate(config)
    hint = first_run_hint(config, config_path)
    if hint:
        log.warning(hint)
    log.info("viewer on https://%s:%d/ (certificate SHA-256 %s)",
             config.web.host, config.web.port, fingerprint)
    ViewerServer(create_app(config), gunicorn_options(config, cert, key)).run()
