"""Serve the viewer over HTTPS with gunicorn (``clinibox web``), never Flask's development server.

The viewer only speaks HTTPS: its session cookie is Secure. With no
``[web] tls_cert`` the box makes a self-signed certificate on first start
(``webcore.tls``: ECDSA P-256, ten years, the host name, ``localhost`` and
127.0.0.1 as names) and logs its SHA-256 fingerprint, which staff compare once
when the browser first asks them to trust it. One gunicorn worker with threads
(``[web] threads``, ``webcore.server``): the pages are small and the box has few cores.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from clinibox_common.settings_loader import ConfigError
from firmware_app.settings.box import Config
from firmware_app.storage import db
from firmware_app.storage.accounts import Accounts
from webcore import server, tls

log = logging.getLogger(__name__)


def certificate(config: Config) -> tuple[Path, Path, str]:
    """(certificate, key, SHA-256 fingerprint): the configured pair, or the box's own."""
    cert_path, key_path = config.web_cert_paths
    try:
        return tls.ensure_certificate(cert_path, key_path, configured=bool(config.web.tls_cert))
    except tls.CertificateError as exc:
        raise ConfigError(str(exc)) from exc


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


def gunicorn_options(config: Config, cert: Path, key: Path) -> dict[str, Any]:
    """gunicorn settings for the box from [web]: one threaded worker, TLS, logs to stderr."""
    return server.gunicorn_options(
        bind=f"{config.web.host}:{config.web.port}", threads=config.web.threads, cert=cert,
        key=key, loglevel=config.logging.level, proc_name="clinibox-web")


def serve(config: Config, config_path: str | None = None) -> None:
    """Run the viewer until SIGTERM/SIGINT."""
    from web.app import create_app

    cert, key, fingerprint = certificate(config)
    hint = first_run_hint(config, config_path)
    if hint:
        log.warning(hint)
    server.check_port(config.web.host, config.web.port)
    log.info("viewer on https://%s:%d/ (certificate SHA-256 %s)",
             config.web.host, config.web.port, fingerprint)
    server.WsgiServer(create_app(config), gunicorn_options(config, cert, key)).run()
