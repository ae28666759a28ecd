"""An HTTPS front for a test's HTTP server: Debian's nginx as a TLS-terminating reverse proxy.

A clinic's PACS serves DICOMweb over TLS through such a front (Orthanc's documentation
puts nginx before it, and Debian's Orthanc 1.10 cannot serve HTTPS itself: it ends with
SIGSEGV on the first request). :class:`TlsFront` runs ``/usr/sbin/nginx`` (package
``nginx-light``) as one foreground process of the test's user, in a folder of its own,
listening on a free port of 127.0.0.1 with the given certificate, and passing every
request (the Authorization header, bodies of any size, unbuffered) to
``http://127.0.0.1:<upstream>``. With ``client_ca`` it asks for a client certificate
signed by that CA and refuses a request without one.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.ports import HOST, free_ports

NGINX = Path("/usr/sbin/nginx")


class TlsFront:
    """nginx on ``HOST:port`` with TLS, in front of ``HOST:upstream``; a context manager."""

    def __init__(self, folder: Path, upstream: int, cert: Path, key: Path,
                 client_ca: Path | None = None) -> None:
        self.folder = Path(folder)
        self.upstream = upstream
        self.cert, self.key, self.client_ca = cert, key, client_ca
        (self.port,) = free_ports(1)
        self.process: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        """nginx.conf: one server, TLS 1.2+, everything passed to the upstream."""
        verify = (f"ssl_client_certificate {self.client_ca};\n        ssl_verify_client on;"
                  if self.client_ca else "")
        temp = self.folder / "temp"
        return f"""
daemon off;
master_process off;
pid {self.folder / "nginx.pid"};
error_log {self.folder / "error.log"} info;
events {{ worker_connections 64; }}
http {{
    access_log {self.folder / "access.log"};
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
    server {{
        listen {HOST}:{self.port} ssl;
        ssl_certificate {self.cert};
        ssl_certificate_key {self.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        {verify}
        client_max_body_size 0;
        proxy_request_buffering off;
        location / {{
            proxy_pass http://{HOST}:{self.upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""

    def start(self, timeout: float = 30) -> TlsFront:
        """Start nginx and wait until its port accepts connections."""
        if not NGINX.exists():
            pytest.fail(f"{NGINX} not found: install nginx-light (apt-get install "
                        "nginx-light), as .ci/run does")
        (self.folder / "temp").mkdir(parents=True, exist_ok=True)
        conf = self.folder / "nginx.conf"
        conf.write_text(self.config())
        with (self.folder / "stderr.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(NGINX), "-p", str(self.folder), "-c", str(conf)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}: "
                                   f"{self.log_tail()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen within {timeout} s: {self.log_tail()}")

    def stop(self) -> None:
        """End nginx."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of nginx's error log and output."""
        found = []
        for name in ("error.log", "stderr.log"):
            path = self.folder / name
            if path.exists():
                found += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(found)

    def __enter__(self) -> TlsFront:
        """Start nginx."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop nginx."""
        self.stop()
