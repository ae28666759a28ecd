"""A local webhook target for tests of the hospital's webhook: it records what it is sent.

:class:`WebhookSink` serves plain HTTP on 127.0.0.1 (a free port) in a thread from the moment
it is made. Every POST and GET is recorded as a :class:`Request` (headers case-insensitive,
as the handler read them). A POST is answered by ``answer(handler)`` when one is given,
otherwise with the next status queued in :attr:`WebhookSink.answers` (204 once none is
left); a GET gets 200.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Request:
    """One request the sink received."""

    method: str
    path: str
    headers: Message
    body: bytes


class WebhookSink:
    """A recording HTTP server; :meth:`close` stops it."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None] | None = None) -> None:
        """Serve in a thread on a free port; ``answer`` writes each POST's answer."""
        self.requests: list[Request] = []
        #: the statuses the next POSTs get, in order (204 once none is left)
        self.answers: list[int] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                sink.requests.append(Request("POST", self.path, self.headers, body))
                if answer is not None:
                    answer(self)
                    return
                self.send_response(sink.answers.pop(0) if sink.answers else 204)
                self.end_headers()

            def do_GET(self) -> None:
                sink.requests.append(Request("GET", self.path, self.headers, b""))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        #: ``http://127.0.0.1:<port>``, without a path
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        """Where the hospital's webhook posts (``<base>/hook``)."""
        return f"{self.base}/hook"

    def close(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
