"""systemd's notify protocol (sd_notify(3)), spoken directly over its datagram socket.

Under a ``Type=notify`` unit systemd sets ``$NOTIFY_SOCKET``; the service
sends ``READY=1`` once it accepts work, ``WATCHDOG=1`` at least every
``WatchdogSec`` while healthy (``$WATCHDOG_USEC``), ``STATUS=…`` lines shown by
``systemctl status``, and ``STOPPING=1``. Without the variable (``make run``,
tests) every call is a no-op. No libsystemd binding is needed: the protocol is
one datagram of ``KEY=value`` lines to a unix socket (an ``@`` prefix names the
abstract namespace).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to the service manager, if there is one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        self.watchdog_seconds = 0.0
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_seconds = int(usec) / 1e6

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens."""
        return bool(self.address)

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False when nobody listens or it failed."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall("\n".join(fields).encode("utf-8"))
            return True
        except OSError as exc:
            log.warning("cannot notify the service manager at %r: %s", self.address, exc)
            return False

    def ready(self, status: str = "") -> bool:
        """Start-up is complete: the service accepts work."""
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """A one-line status for ``systemctl status``."""
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        """The service is healthy (feed the watchdog)."""
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        """The service is shutting down."""
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        """The service reloads its configuration or model."""
        return self.send("RELOADING=1")
