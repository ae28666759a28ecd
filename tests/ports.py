"""Free TCP ports on 127.0.0.1 for the servers the tests start (one helper for all).

A port handed out here lies below the kernel's range for the local ports of outgoing
connections (``/proc/sys/net/ipv4/ip_local_port_range``: 32768-60999 by default), in a block
of its own for each pytest-xdist worker, taken in turn. A port the kernel handed out for a
bind to port 0 came from that very range: any process's next outgoing connection could take
it before the server the test started bound it (a box's receiver once refused to start with
"Address already in use" under three workers). A port that is bound right now is skipped.

A server that needs two ports gets both from one ``free_ports(2)``: different, and both
checked free at once.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
from collections.abc import Iterator

HOST = "127.0.0.1"
#: the first port of the first worker's block (below the outgoing connections' range)
FIRST_PORT = 20000
#: how many ports each worker's block holds, and how many blocks there are
PORTS_PER_WORKER = 1500
WORKER_BLOCKS = 8


def _worker_index() -> int:
    """This pytest-xdist worker's number (``gw2``: 2), 0 outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return int(name) if name.isdigit() else 0


def _ports_in_turn() -> Iterator[int]:
    """This worker's block, round and round, from a place set by the process id."""
    base = FIRST_PORT + (_worker_index() % WORKER_BLOCKS) * PORTS_PER_WORKER
    start = os.getpid() % PORTS_PER_WORKER
    for i in itertools.count():
        yield base + (start + i) % PORTS_PER_WORKER


_PORTS = _ports_in_turn()
_TAKING = threading.Lock()


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports on 127.0.0.1 nobody listens on right now."""
    held: list[socket.socket] = []
    try:
        with _TAKING:
            for port in itertools.islice(_PORTS, PORTS_PER_WORKER):
                if len(held) == count:
                    break
                sock = socket.socket()
                try:
                    sock.bind((HOST, port))
                except OSError:  # bound, or just closed and waiting: the next one
                    sock.close()
                    continue
                held.append(sock)
        if len(held) < count:
            raise RuntimeError(f"fewer than {count} free ports in this worker's block")
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def free_port() -> int:
    """One TCP port on 127.0.0.1 nobody listens on right now."""
    return free_ports(1)[0]
