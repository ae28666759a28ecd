"""Serve a clinibox web app over HTTPS with gunicorn, never Flask's development server.

One gunicorn worker with threads (``gthread``): the pages are small and the machines
have few cores; TLS from the pair ``webcore.tls.ensure_certificate`` gives; access and
error logs to stderr; no proxy trusted for forwarded headers; no control socket (the
viewer and the console would otherwise share ``~/.gunicorn/gunicorn.ctl``). Before
serving, ``check_port`` tries the address once, so a port already taken is one clear
line naming ``[web] port`` (exit status 2) rather than gunicorn's retries.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from clinibox_common.errors import EXIT_USAGE, CliniboxError
from clinibox_common.i18n import N_


class PortError(CliniboxError):
    """The web app's address cannot be listened on (the port is taken, or the host is not
    this machine's)."""

    kind = N_("config error")
    exit_status = EXIT_USAGE


def check_port(host: str, port: int) -> None:
    """Raise ``PortError`` unless ``host``:``port`` can be listened on now (tried and freed
    at once; gunicorn binds it for real right after)."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does
            probe.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortError(f"port {port} is already in use ({where}): stop the program "
                            "listening there or choose another [web] port") from exc
        reason = exc.strerror or str(exc)
        raise PortError(f"cannot listen on {where}: {reason}; check [web] host and "
                        "[web] port") from exc


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
        "control_socket_disable": True,
    }
