"""Free TCP ports on 127.0.0.1 for the servers the tests start (one helper for all).

A port is free when the kernel hands it out for a bind to port 0; it stays free
only until someone binds it, so a server that needs two ports gets both from one
``free_ports(2)``: bound at once, the kernel cannot hand out the same one twice
(Orthanc's DICOM and HTTP ports, picked one after the other, were once the same).
"""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports on 127.0.0.1 nobody listens on right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """One TCP port on 127.0.0.1 nobody listens on right now."""
    return free_ports(1)[0]
