"""A forger on the clinic's LAN against a UDP live source, with a raw socket (issue 56).

``allowed_senders`` is documented as an address filter, not authentication
(docs/technician/live.md). This holds the page to what it says, with real packets: MPEG-TS
datagrams sent from an address the source does not allow are never taken, and the same
datagrams written on a raw socket with the allowed encoder's address as their source are
taken and analysed as its frames, which is why the page sends an untrusted network to
``tls://`` with ``ca_file`` (an impostor encoder refused there: ``test_live_tls.py``).
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware_app.storage.live_frames import read_state
from tests.box_harness import stop, to_toml, wait_for
from tests.integration.conftest import REPO
from tests.live_video import make_phantom_video, to_ts
from tests.ports import free_ports

pytestmark = pytest.mark.integration
ENCODER, FORGER = "127.0.0.2", "127.0.0.3"
DATAGRAM = 7 * 188  # MPEG-TS over UDP: seven transport packets a datagram


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def _forged(source: str, port: int, payload: bytes, ident: int) -> bytes:
    """An IPv4 + UDP datagram to 127.0.0.1:``port`` claiming to come from ``source``."""
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident & 0xFFFF, 0, 64,
                         socket.IPPROTO_UDP, 0, socket.inet_aton(source),
                         socket.inet_aton("127.0.0.1"))
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


def _send(stream: bytes, port: int, *, spoof: str | None, seconds: float) -> None:
    """``stream`` in datagrams for ``seconds``, looping: on a raw socket claiming ``spoof``
    as their source, or on a plain socket bound to FORGER."""
    chunks = [stream[i:i + DATAGRAM] for i in range(0, len(stream), DATAGRAM)]
    if spoof:
        out = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    else:
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        out.bind((FORGER, 0))
    deadline, sent = time.monotonic() + seconds, 0
    with out:
        while time.monotonic() < deadline:
            for chunk in chunks:
                if spoof:
                    out.sendto(_forged(spoof, port, chunk, sent), ("127.0.0.1", 0))
                else:
                    out.sendto(chunk, ("127.0.0.1", port))
                sent += 1
                if sent % 40 == 0:
                    time.sleep(0.01)  # about an encoder's rate, not a flood


def test_allowed_senders_filters_addresses_and_a_forged_address_passes_it(tmp_path: Path):
    stream = to_ts(make_phantom_video(tmp_path / "forged.mp4", seconds=2.0, seed=9).path)
    [port] = free_ports(1)
    config = tmp_path / "box.toml"
    config.write_text(to_toml({
        "storage": {"state_dir": str(tmp_path / "state")},
        "live": {"sources": [{"name": "udp-1", "url": f"udp://127.0.0.1:{port}",
                              "allowed_senders": [ENCODER]}]}}))
    live = subprocess.Popen([sys.executable, "-m", "clinibox", "live", "udp-1",
                             "--config", str(config)], cwd=REPO,
                            stdout=open(tmp_path / "live.log", "ab"),  # noqa: SIM115
                            stderr=subprocess.STDOUT)

    def state() -> dict:
        return read_state(tmp_path / "state" / "live", "udp-1") or {}

    def why() -> str:
        return f"state: {state()}\nlive: {(tmp_path / 'live.log').read_text()[-3000:]}"

    try:
        wait_for(lambda: bool(state()), 60, "the UDP source's first state", why)
        # another address, plainly: the filter drops every datagram
        _send(stream, port, spoof=None, seconds=6.0)
        assert state().get("analysed", 0) == 0, why()
        # the same datagrams claiming the encoder's address: taken as its frames
        _send(stream, port, spoof=ENCODER, seconds=8.0)
        wait_for(lambda: state().get("analysed", 0) > 0, 30,
                 "the forged frames analysed", why)
    finally:
        stop(live)
    page = (REPO / "docs" / "technician" / "live.md").read_text(encoding="utf-8")
    assert "**A filter, not authentication**" in page and "use `tls://` with `ca_file`" in page
