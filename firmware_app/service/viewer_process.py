"""The clinic viewer as a child of ``clinibox serve``, restarted when it dies.

``make run`` (and a plain ``clinibox serve``) bring up the whole box, viewer
included, in one command. The viewer runs in its own process (``clinibox
web``: gunicorn, HTTPS) so that a fault in a page never touches ingest or
inference. On Linux the child asks the kernel for SIGTERM when the service
dies, even by SIGKILL (``die_with_parent``, called by ``clinibox web``
itself: no ``preexec_fn`` in a threaded parent), so no orphan keeps the
port. Where systemd runs the viewer as its own unit, the appliance is
started with ``--no-web``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading

log = logging.getLogger(__name__)

#: Longest wait before restarting a viewer that keeps dying.
MAX_BACKOFF = 60.0
PR_SET_PDEATHSIG = 1


#: Set by the service for its viewer child: the service's process id.
PARENT_ENV = "CLINIBOX_SERVICE_PID"


def die_with_parent() -> None:
    """In the viewer child: get SIGTERM when the service dies; exit if it is already gone."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    # not glibc Linux: the service's clean stop still ends the viewer
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):  # the service died before the request above
        raise SystemExit("clinibox serve is gone; the viewer stops")


#: systemd's variables for the service itself; the viewer child must not answer them
SERVICE_MANAGER_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def child_environment() -> dict[str, str]:
    """The viewer child's environment: ours, less systemd's notify variables, plus our pid."""
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_MANAGER_ENV}
    env[PARENT_ENV] = str(os.getpid())
    return env


class ViewerProcess:
    """Start ``clinibox web`` with the service's config; restart it with backoff if it exits."""

    #: what the log calls the child
    what = "the viewer"

    def __init__(self, config_path: str | None, *arguments: str) -> None:
        self.command = [sys.executable, "-m", "clinibox", *(arguments or ("web",))]
        if config_path:
            self.command += ["--config", config_path]
        self.process: subprocess.Popen | None = None

    def exited(self, returncode: int, delay: float) -> None:
        """The child ended by itself (it is restarted after ``delay`` seconds)."""
        log.error("%s exited with status %s; restarting in %.0f s", self.what, returncode,
                  delay)

    def run(self, stop: threading.Event) -> None:
        """Keep the viewer running until ``stop``; then end it (SIGTERM, then SIGKILL)."""
        delay = 1.0
        while not stop.is_set():
            self.process = subprocess.Popen(self.command, env=child_environment())
            while self.process.poll() is None and not stop.wait(0.5):
                pass
            if stop.is_set():
                break
            self.exited(self.process.returncode, delay)
            if stop.wait(delay):
                break
            delay = min(delay * 2, MAX_BACKOFF)
        self.end()

    def end(self) -> None:
        """Stop the viewer if it runs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
