"""HTTP MJPEG cameras for the live mode's tests that ffmpeg's own server cannot play: one
that asks for a password (HTTP Basic, as IP cameras do) and one that claims a part of
``claim`` bytes and then streams that much and more (a hostile camera, issue 56).

Both are the standard library's ``ThreadingHTTPServer`` in a thread of the test, speaking
``multipart/x-mixed-replace`` as a camera does; ``connections`` counts the GETs answered.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BOUNDARY = "camera-boundary"


@dataclass
class Camera:
    """What the test reads back: the camera's URL and what it answered."""

    url: str
    connections: int = 0
    refused: int = 0
    sent_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(camera: Camera, jpegs: list[bytes], fps: float, password: str | None,
             claim: int, stream: int):
    expected = None if password is None else "Basic " + base64.b64encode(
        f"admin:{password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            if expected is not None and self.headers.get("Authorization") != expected:
                with camera.lock:
                    camera.refused += 1
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with camera.lock:
                camera.connections += 1
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={BOUNDARY}")
            self.end_headers()
            with contextlib.suppress(OSError):
                if claim:
                    self._huge()
                else:
                    self._frames()

        def _frames(self) -> None:
            i = 0
            while True:
                data = jpegs[i % len(jpegs)]
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data + b"\r\n")
                i += 1
                time.sleep(1.0 / fps)

        def _huge(self) -> None:
            self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                             f"Content-Length: {claim}\r\n\r\n".encode() + b"\xff\xd8")
            chunk = b"\0" * (1 << 20)
            sent = 0
            while sent < stream:
                self.wfile.write(chunk)
                sent += len(chunk)
                with camera.lock:
                    camera.sent_bytes += len(chunk)

    return Handler


@contextlib.contextmanager
def mjpeg_camera(port: int, jpegs: list[bytes] | None = None, fps: float = 25.0,
                 password: str | None = None, claim: int = 0,
                 stream: int = 0) -> Iterator[Camera]:
    """A camera on http://127.0.0.1:``port``/video.mjpg: ``jpegs`` in a loop at ``fps``
    (asking for user ``admin`` and ``password`` when one is given), or, with ``claim``, one
    part claiming ``claim`` bytes followed by ``stream`` bytes of it."""
    camera = Camera(f"http://127.0.0.1:{port}/video.mjpg")
    server = ThreadingHTTPServer(("127.0.0.1", port),
                                 _handler(camera, jpegs or [], fps, password, claim, stream))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="mjpeg-camera", daemon=True)
    thread.start()
    try:
        yield camera
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
