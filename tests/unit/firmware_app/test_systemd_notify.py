"""sd_notify over a real unix datagram socket, and the health the watchdog is fed from."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path

from firmware_app.service.appliance import Appliance
from firmware_app.service.systemd_notify import Notifier
from firmware_app.settings.box import Config


def listen(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    return sock


def test_messages_reach_a_path_socket(tmp_path: Path):
    path = str(tmp_path / "notify")
    with listen(path) as sock:
        notifier = Notifier({"NOTIFY_SOCKET": path})
        assert notifier.enabled
        assert notifier.ready("model x@1")
        assert sock.recv(4096) == b"READY=1\nSTATUS=model x@1"
        assert notifier.watchdog() and sock.recv(4096) == b"WATCHDOG=1"
        assert notifier.stopping() and sock.recv(4096) == b"STOPPING=1"


def test_abstract_namespace_socket():
    name = f"clinibox-test-{uuid.uuid4().hex}"
    with listen("\0" + name) as sock:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("busy")
        assert sock.recv(4096) == b"STATUS=busy"


def test_without_a_service_manager_nothing_is_sent():
    notifier = Notifier({})
    assert not notifier.enabled and not notifier.ready() and notifier.watchdog_seconds == 0
    gone = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify"})
    assert not gone.watchdog()  # logged, never raised: the box keeps running


def test_watchdog_interval_only_for_this_process():
    mine = Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_seconds == 30.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_seconds == 0
    assert Notifier({"WATCHDOG_USEC": "junk"}).watchdog_seconds == 0


class _Worker:
    def __init__(self, beat: float) -> None:
        self.beat = beat


def test_health_needs_live_threads_and_a_recent_worker_loop(tmp_path: Path):
    appliance = Appliance(Config())
    stop = threading.Event()
    alive = threading.Thread(target=stop.wait)
    alive.start()
    try:
        appliance.threads = [alive]
        appliance.worker = _Worker(time.monotonic())
        assert appliance.healthy()
        appliance.worker = _Worker(time.monotonic() - 120)  # stuck in one job for 2 minutes
        assert not appliance.healthy(stale_after=60)
        appliance.worker = _Worker(time.monotonic())
        dead = threading.Thread(target=lambda: None)
        dead.start()
        dead.join()
        appliance.threads = [alive, dead]
        assert not appliance.healthy()
    finally:
        stop.set()
        alive.join()
