"""A TCP relay on loopback that counts the bytes each way, read by read, and can drop its
connections at an exact byte: the wire between a box and the hospital in the benchmarks
(``bench/rollout_transfer.py``'s MQTT link, ``bench/federation.py``'s Flower link)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class Relay:
    """A TCP relay on 127.0.0.1 to ``target_port`` that stamps and counts every read, and can
    drop its connections once (both sockets closed) at an exact byte downstream, wherever it
    falls (mid-chunk, mid-TLS record)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        #: (time.time(), bytes box→broker, bytes broker→box) of every read
        self.records: list[tuple[float, int, int]] = []
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.connections = 0
        self._drop_after: int | None = None
        self._down_armed = 0
        self.dropped_at: float | None = None
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm_drop(self, after_bytes: int) -> None:
        """Close the connections once ``after_bytes`` more have passed broker → box."""
        with self.lock:
            self._drop_after, self._down_armed = after_bytes, 0

    def _accept(self) -> None:
        while not self._closed:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return
            try:
                far = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                near.close()
                continue
            far.settimeout(None)
            for sock in (near, far):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.pairs.append((near, far))
                self.connections += 1
            threading.Thread(target=self._pump, args=(near, far, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(far, near, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(65536):
                if not up:  # the broker's side: without the relay the box's ACK would
                    # come now; a delayed ACK here holds the broker's last segment of a
                    # chunk back under Nagle (Mosquitto's default) by ~40 ms. The box's side
                    # keeps the delayed ACK the broker's own socket has.
                    src.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                cut = False
                with self.lock:
                    if not up and self._drop_after is not None:
                        left = self._drop_after - self._down_armed
                        if len(data) >= left:  # the cut falls in this read: up to it only
                            data, cut, self._drop_after = data[:left], True, None
                            self.dropped_at = time.time()
                        else:
                            self._down_armed += len(data)
                if data:
                    dst.sendall(data)
                    with self.lock:
                        n = len(data)
                        self.records.append((time.time(), n if up else 0, 0 if up else n))
                if cut:
                    self._close_all()
                    break
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                _shut(sock)

    def _close_all(self) -> None:
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for near, far in pairs:
            _shut(near)
            _shut(far)

    def between(self, start: float, end: float) -> dict[str, int]:
        """Bytes each way (and both) read between ``start`` and ``end`` (time.time())."""
        with self.lock:
            rows = [r for r in self.records if start <= r[0] < end]
        up, down = sum(r[1] for r in rows), sum(r[2] for r in rows)
        return {"up": up, "down": down, "total": up + down}

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._closed = True
        _shut(self.listener)
        self._close_all()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
