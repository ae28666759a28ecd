"""Serve a clinibox web app over HTTPS with gunicorn, never Flask's development server.

One gunicorn worker with threads (``gthread``): the pages are small and the machines
have few cores; TLS from the pair ``webcore.tls.ensure_certificate`` gives; access and
error logs to stderr; no proxy trusted for forwarded headers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication


class WsgiServer(BaseApplication):
    """gunicorn running a WSGI app in-process with the given options."""

    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        """Serve ``app`` with gunicorn settings ``options`` (``gunicorn_options``)."""
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


def gunicorn_options(*, bind: str, threads: int, cert: Path, key: Path, loglevel: str,
                     proc_name: str) -> dict[str, Any]:
    """gunicorn settings: one threaded worker on ``bind`` (host:port), TLS, logs to stderr."""
    return {
        "bind": bind,
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "certfile": str(cert),
        "keyfile": str(key),
        "timeout": 60,
        "graceful_timeout": 10,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": loglevel.lower(),
        "proc_name": proc_name,
        "forwarded_allow_ips": "",
    }
