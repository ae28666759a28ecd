"""An HTTP MJPEG camera read part by part, each part bounded before it is read.

FFmpeg's ``mpjpeg`` demuxer believes a part's ``Content-Length`` and reads it whole into one
packet: a camera that claims 2 GB and streams it costs the live process 2 GB. Here the HTTP
response is opened by the standard library (the user and password of the URL answered by
Basic or Digest authentication; an ``https://`` camera's certificate checked against
``ca_file`` when one is given) and its ``multipart/x-mixed-replace`` body read by a small
parser that refuses, before reading it, a part claiming more than ``max_part`` bytes, a part
without a length that runs past it, more header lines or longer ones than a camera sends, and
preamble that is no part. Each part's JPEG then goes to FFmpeg's decoder as one packet. A
response of any other type (MPEG-TS over HTTP) is read by FFmpeg from the same connection
(``BodyReader``; its probe bounded by ``probesize``).
"""

from __future__ import annotations

import http.client
import ssl
import urllib.request
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

from clinibox_common.errors import CliniboxError

#: the most header lines a part may have, and the longest line (bytes)
MAX_HEADER_LINES = 32
MAX_LINE = 1024
#: a part's body is read this many bytes at a time, at most
BODY_CHUNK = 1 << 16
#: what a JPEG part may take beyond an uncompressed frame of the largest size (headers,
#: tables, a thumbnail)
PART_SLACK = 1 << 20


class PartRefused(CliniboxError, ValueError):
    """The camera sent a part (or something in place of one) beyond the bounds."""


class StreamEnded(CliniboxError, EOFError):
    """The camera closed the stream (its closing boundary, or the connection)."""


def max_part_bytes(max_pixels: int) -> int:
    """The largest MJPEG part taken: an uncompressed 8-bit RGB frame of ``max_pixels``
    pixels, plus PART_SLACK (no JPEG of a frame that size is larger)."""
    return max_pixels * 3 + PART_SLACK


def open_http(url: str, ca_file: str, timeout: float) -> http.client.HTTPResponse:
    """GET ``url`` (its user and password, if any, given to Basic or Digest authentication,
    not sent in the URL); ``https`` verified against ``ca_file`` when one is given. Raises
    OSError (urllib's URLError, an HTTP error status) or http.client.HTTPException."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    bare = urlunsplit(parts._replace(netloc=host))
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if parts.username is not None:
        passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        passwords.add_password(None, bare, unquote(parts.username),
                               unquote(parts.password or ""))
        handlers += [urllib.request.HTTPBasicAuthHandler(passwords),
                     urllib.request.HTTPDigestAuthHandler(passwords)]
    if parts.scheme.lower() == "https":
        if ca_file:
            context = ssl.create_default_context(cafile=ca_file)
        else:  # as FFmpeg reads https without a ca_file: encrypted, not verified
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(bare, headers={"User-Agent": "clinibox-live"})
    return opener.open(request, timeout=timeout)


def response_boundary(response: http.client.HTTPResponse) -> bytes | None:
    """The multipart boundary of a camera's response: its content type's, or, where the
    type says nothing (ffmpeg's own server sends application/octet-stream), the first line
    of its body when that is a delimiter (``--boundary``), peeked, not consumed."""
    boundary = multipart_boundary(response.headers.get("Content-Type", ""))
    if boundary is not None:
        return boundary
    head = response.peek(MAX_LINE)[:MAX_LINE]
    first = head.split(b"\n", 1)[0].strip()
    if first.startswith(b"--") and len(first) > 2 and b"\n" in head:
        return first[2:]
    return None


class BodyReader:
    """A response's body as the file FFmpeg reads a stream of another type from (``read``
    only: not seekable)."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.response = response

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (what has arrived, at least one unless the body ended)."""
        return self.response.read1(size if size and size > 0 else BODY_CHUNK)


def multipart_boundary(content_type: str) -> bytes | None:
    """The boundary of a ``multipart/x-mixed-replace`` (or other multipart) content type;
    None for any other type."""
    kind, _, rest = content_type.partition(";")
    if not kind.strip().lower().startswith("multipart/"):
        return None
    for parameter in rest.split(";"):
        name, _, value = parameter.strip().partition("=")
        if name.strip().lower() == "boundary" and value.strip().strip('"'):
            boundary = value.strip().strip('"')
            return boundary.removeprefix("--").encode("latin-1", errors="replace")
    return None


class MultipartJpeg:
    """The parts of a multipart body, each bounded by ``max_part`` before it is read."""

    def __init__(self, body, boundary: bytes, max_part: int) -> None:
        self.body = body
        self.delimiter = b"--" + boundary
        self.max_part = max_part
        #: the delimiter of the next part has been read (a part without a length ends there)
        self._at_headers = False

    def parts(self) -> Iterator[bytes]:
        """Each part's body, in order; PartRefused or StreamEnded end it."""
        while True:
            if not self._at_headers:
                self._to_delimiter()
            self._at_headers = False
            length = self._headers().get("content-length")
            if length is None:
                yield self._to_next_delimiter()
                continue
            try:
                size = int(length)
            except ValueError:
                raise PartRefused(f"a part's Content-Length is not a number: "
                                  f"{length[:40]!r}") from None
            if size < 0 or size > self.max_part:
                raise PartRefused(f"a part claims {size} bytes, more than the largest frame "
                                  f"taken ({self.max_part} bytes: an uncompressed frame of "
                                  f"[live] max_megapixels); not read")
            data = self.body.read(size)
            if len(data) < size:
                raise StreamEnded("the camera closed the stream within a part")
            yield data

    def _line(self) -> bytes:
        line = self.body.readline(MAX_LINE + 1)
        if not line:
            raise StreamEnded("the camera closed the stream")
        return line

    def _to_delimiter(self) -> None:
        """Skip to the next part's delimiter line (the blank line after a part's body,
        a preamble): at most ``max_part`` bytes."""
        skipped = 0
        while True:
            line = self._line()
            if line.startswith(self.delimiter):
                self._check_close(line)
                return
            skipped += len(line)
            if skipped > self.max_part:
                raise PartRefused(f"no part boundary within {self.max_part} bytes")

    def _check_close(self, line: bytes) -> None:
        if line.rstrip(b"\r\n").endswith(self.delimiter + b"--"):
            raise StreamEnded("the camera ended the stream")

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADER_LINES):
            line = self._line()
            if len(line) > MAX_LINE:
                raise PartRefused(f"a part's header line is longer than {MAX_LINE} bytes")
            text = line.decode("latin-1").strip()
            if not text:
                return headers
            name, _, value = text.partition(":")
            headers[name.strip().lower()] = value.strip()
        raise PartRefused(f"a part has more than {MAX_HEADER_LINES} header lines")

    def _to_next_delimiter(self) -> bytes:
        """A part without a length: its body runs to the next delimiter line, at most
        ``max_part`` bytes."""
        lines: list[bytes] = []
        size = 0
        while True:
            line = self.body.readline(BODY_CHUNK)
            if not line:
                raise StreamEnded("the camera closed the stream")
            if line.startswith(self.delimiter) and (not lines or lines[-1].endswith(b"\n")):
                self._check_close(line)
                self._at_headers = True
                data = b"".join(lines)
                return data[:-2] if data.endswith(b"\r\n") else data.removesuffix(b"\n")
            size += len(line)
            if size > self.max_part:
                raise PartRefused(f"a part without a length runs past {self.max_part} bytes "
                                  f"(the largest frame taken); not read further")
            lines.append(line)
