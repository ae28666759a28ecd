"""Open a live source with PyAV (FFmpeg) and give its decoded frames as they arrive.

One class, ``VideoInput``, for every kind of source: a V4L2 capture card (``/dev/videoN``:
its size, rate and pixel format asked for), a network stream (RTSP over TCP, MPEG-TS over
UDP, HTTP MJPEG) or a video file (paced at its own rate, as a live source would give it;
looped on request). Every read is bounded: opening and each read time out
(``[live] stall_seconds``), FFmpeg's probe reads a few megabytes at most, and the decoder
refuses a frame larger than ``[live] max_megapixels`` before allocating it (``max_pixels``),
so a stream claiming absurd dimensions is refused, not decoded. An HTTP camera is opened here
(``mjpeg_http``): its MJPEG parts are read by a bounded parser, each refused before it is read
when it claims more than an uncompressed frame of ``max_megapixels``; a packet of another
source that large is refused before it is decoded. A packet the decoder cannot read is
counted and skipped; the stream goes on. No error this module raises carries the source's
password (``settings.redaction``; a ``password_file`` is read only when the source opens).
"""

from __future__ import annotations

import http.client
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import av
import av.error

from clinibox_common.errors import CliniboxError
from clinibox_common.fs import SecretFileUnsafe, read_secret
from clinibox_common.redaction import redact_text
from engine.imaging.codestream import StreamFacts, StreamMismatch, jpeg_facts
from firmware_app.live.mjpeg_http import (
    BodyReader,
    MultipartJpeg,
    PartRefused,
    StreamEnded,
    max_part_bytes,
    open_http,
    response_boundary,
)
from firmware_app.settings.live import TLS_SCHEMES, LiveConfig, LiveSource

#: how much FFmpeg may read to find the stream's format (bytes) and how long (µs)
PROBE_BYTES = 5_000_000
PROBE_MICROSECONDS = 2_000_000
#: packets in a row the decoder cannot read before the stream is refused (a stream of
#: nothing but broken or oversized frames); fewer are skipped and counted
MAX_FAILED_IN_A_ROW = 25
#: the JPEG frame headers every browser draws (baseline, extended and progressive Huffman,
#: 8 bits): an MJPEG frame of another kind (lossless, 12-bit, arithmetic) FFmpeg may decode
#: is encoded again for the page, not passed on as it came
BROWSER_SOF = frozenset({0xC0, 0xC1, 0xC2})
#: the characters a password keeps as they are in the URL (the rest percent-encoded)
_PASSWORD_SAFE = "-._~!$&'()*+,;="


class SourceUnavailable(CliniboxError):
    """The source cannot be opened or read (unplugged, unreachable, ended): try again."""

    def __init__(self, *args: object, ended: bool = False) -> None:
        super().__init__(*args)
        #: the source came to its end (a file, a stream the sender closed)
        self.ended = ended


class StreamRefused(CliniboxError):
    """The stream is refused: its frames are too large, or it holds no video."""


@dataclass
class Captured:
    """One decoded frame, when it arrived, and its JPEG when the source sent JPEG."""

    frame: av.VideoFrame
    #: ``time.monotonic()`` as the frame left the decoder
    arrived: float
    #: the frame's own JPEG (an MJPEG source): shown as it came, not encoded again
    jpeg: bytes | None


def open_options(source: LiveSource, config: LiveConfig) -> tuple[str | None, dict[str, str]]:
    """The FFmpeg input format and options for a source (bounded probe, low delay)."""
    options = {"probesize": str(PROBE_BYTES), "analyzeduration": str(PROBE_MICROSECONDS)}
    fmt = None
    if source.kind == "v4l2":
        fmt = "v4l2"
        if source.video_size:
            options["video_size"] = source.video_size
        if source.framerate:
            options["framerate"] = str(source.framerate)
        if source.pixel_format:
            options["input_format"] = source.pixel_format
        return fmt, options
    if source.kind == "stream":
        options["fflags"] = "nobuffer"
        scheme = urlsplit(source.url).scheme.lower()
        if scheme in ("rtsp", "rtsps"):
            options["rtsp_transport"] = source.rtsp_transport
        if scheme == "udp":
            options["overrun_nonfatal"] = "1"
            options["fifo_size"] = "50000"
        if scheme in ("udp", "rtp") and source.allowed_senders:
            options["sources"] = ",".join(source.allowed_senders)
        if scheme in ("http", "https"):
            options["reconnect"] = "0"
        if scheme in TLS_SCHEMES and source.ca_file:  # the sender proves who it is
            options["ca_file"] = source.ca_file
            options["verify"] = "1"
    return fmt, options


def source_path(source: LiveSource) -> str:
    """What FFmpeg opens: the device, the stream URL (with the password_file's password,
    read now: StreamRefused where it is not the service's own), or the file's path."""
    url = source.url
    if source.kind == "file" and url.lower().startswith("file://"):
        return urlsplit(url).path
    if source.kind == "stream" and source.password_file:
        parts = urlsplit(url)
        user = parts.netloc.rsplit("@", 1)[0].split(":", 1)[0]
        host = parts.netloc.rsplit("@", 1)[-1]
        password = quote(read_password(source), safe=_PASSWORD_SAFE)
        return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))
    return url


def read_password(source: LiveSource) -> str:
    """The password in ``source.password_file`` (its first line): StreamRefused where the
    file cannot be read, is no regular file, or others than its owner may read it."""
    try:
        return read_secret(source.password_file)
    except OSError as exc:
        raise StreamRefused(f"{source.name}: password_file {exc.strerror}") from exc
    except SecretFileUnsafe as exc:
        raise StreamRefused(f"{source.name}: password_file {exc}") from exc


def source_secrets(source: LiveSource) -> list[str]:
    """Every secret of ``source`` (its URL's, its password_file's): what no state, page or
    log line may carry (``settings.redaction.redact_text``)."""
    found = list(source.secrets)
    if source.password_file:
        try:
            password = read_password(source)
        except StreamRefused:
            password = ""
        found += [password, quote(password, safe=_PASSWORD_SAFE)]
    return [s for s in found if s]


class VideoInput:
    """An open source: ``frames()`` yields each decoded frame as it arrives."""

    def __init__(self, source: LiveSource, config: LiveConfig) -> None:
        self.source = source
        self.config = config
        self.max_pixels = int(config.max_megapixels * 1_000_000)
        #: what this source's words must never carry
        self.secrets = source_secrets(source)
        #: packets the decoder could not read (skipped)
        self.broken_packets = 0
        #: the largest packet (an MJPEG part, a frame) taken: refused before it is read
        self.max_packet = max_part_bytes(self.max_pixels)
        #: an HTTP MJPEG camera's parts (read here, bounded: ``mjpeg_http``), decoded by
        #: ``decoder``; None where FFmpeg demuxes the source (``container``)
        self.parts: Iterator[bytes] | None = None
        self._response: http.client.HTTPResponse | None = None
        self.container = None
        fmt, options = open_options(source, config)
        if source.kind == "file":
            _regular_file(source)
        scheme = urlsplit(source.url).scheme.lower()
        opened = source_path(source)
        if source.kind == "stream" and scheme in ("http", "https"):
            opened = self._open_http()
            if opened is None:
                return
        try:
            self.container = av.open(opened, format=fmt, options=options,
                                     timeout=(config.stall_seconds * 2, config.stall_seconds))
        except (av.error.FFmpegError, OSError) as exc:
            self.close()
            raise SourceUnavailable(f"cannot open {source.name}: {self.words(exc)}") from None
        try:
            self.stream = self._video_stream()
        except Exception:
            self.close()
            raise

    def _open_http(self) -> BodyReader | None:
        """Open an HTTP camera. Multipart (MJPEG): its parts are read here, each bounded
        (None). Another type: its body, for FFmpeg to read."""
        try:
            response = open_http(source_path(self.source), self.source.ca_file,
                                 self.config.stall_seconds * 2)
            self._response = response
            boundary = response_boundary(response)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            self.close()
            raise SourceUnavailable(f"cannot open {self.source.name}: "
                                    f"{self.words(exc)}") from None
        if boundary is None:
            return BodyReader(response)
        self.parts = MultipartJpeg(response, boundary, self.max_packet).parts()
        self.decoder = av.CodecContext.create("mjpeg", "r")
        self.decoder.options = {"max_pixels": str(self.max_pixels)}
        return None

    def _video_stream(self) -> av.VideoStream:
        if not self.container.streams.video:
            raise StreamRefused(f"{self.source.name}: the stream holds no video")
        stream = self.container.streams.video[0]
        context = stream.codec_context
        width, height = int(context.width or 0), int(context.height or 0)
        if width * height > self.max_pixels:
            raise StreamRefused(f"{self.source.name}: frames of {width}x{height} are larger "
                                f"than [live] max_megapixels ({self.config.max_megapixels})")
        # the decoder refuses a larger frame before allocating it; one thread a frame (frame
        # threads would hold frames back: latency), slices in parallel where the codec can
        context.options = {"max_pixels": str(self.max_pixels)}
        context.thread_type = "SLICE"
        context.thread_count = 2
        return stream

    def words(self, exc: BaseException) -> str:
        """An FFmpeg error's words without the source's secrets (it quotes the URL)."""
        return redact_text(str(exc), self.secrets)

    @property
    def codec(self) -> str:
        """The decoder's name (h264, mjpeg, …)."""
        if self.parts is not None:
            return "mjpeg"
        return str(self.stream.codec_context.name)

    def _packets(self) -> Iterator[av.Packet]:
        """The source's packets: an HTTP camera's parts, or FFmpeg's demuxer's; a packet
        larger than ``max_packet`` is refused before it is decoded (a part before it is
        read)."""
        if self.parts is None:
            for packet in self.container.demux(self.stream):
                if packet.size > self.max_packet:
                    raise StreamRefused(f"{self.source.name}: a packet of {packet.size} bytes, "
                                        f"more than the largest frame taken "
                                        f"({self.max_packet} bytes)")
                yield packet
            return
        try:
            for data in self.parts:
                yield av.Packet(data)
        except PartRefused as exc:
            raise StreamRefused(f"{self.source.name}: {exc}") from None
        except StreamEnded as exc:
            raise SourceUnavailable(f"{self.source.name}: {exc}", ended=True) from None

    def _decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        if self.parts is not None:
            return self.decoder.decode(packet)
        return packet.decode()

    def frames(self) -> Iterator[Captured]:
        """Decoded frames until the source ends (SourceUnavailable) or refuses
        (StreamRefused); a file is paced at its own rate."""
        passthrough = self.codec == "mjpeg"
        paced = self.source.kind == "file"
        started: float | None = None
        first_time = 0.0
        failed_in_a_row = 0
        try:
            for packet in self._packets():
                if packet.size == 0:
                    continue
                data = bytes(packet) if passthrough else b""
                facts = None
                try:
                    if passthrough:
                        facts = self._check_jpeg(data)
                    decoded = self._decode(packet)
                except av.error.ArgumentError as exc:  # max_pixels refused the frame
                    raise StreamRefused(f"{self.source.name}: a frame larger than "
                                        f"[live] max_megapixels: {self.words(exc)}") from None
                except (av.error.InvalidDataError, av.error.UndefinedError,
                        av.error.PatchWelcomeError, StreamMismatch) as exc:
                    self.broken_packets += 1
                    failed_in_a_row += 1
                    if failed_in_a_row >= MAX_FAILED_IN_A_ROW:
                        raise StreamRefused(f"{self.source.name}: {failed_in_a_row} packets in "
                                            f"a row cannot be decoded "
                                            f"({self.words(exc)})") from None
                    continue
                failed_in_a_row = 0
                for frame in decoded:
                    if frame.width * frame.height > self.max_pixels:
                        raise StreamRefused(f"{self.source.name}: a {frame.width}x"
                                            f"{frame.height} frame")
                    if paced and frame.time is not None:
                        if started is None:
                            started, first_time = time.monotonic(), float(frame.time)
                        wait = started + (float(frame.time) - first_time) - time.monotonic()
                        if wait > 0:
                            time.sleep(min(wait, 1.0))
                    jpeg = data if facts is not None and len(decoded) == 1 \
                        and drawable(facts) else None
                    yield Captured(frame, time.monotonic(), jpeg)
        except av.error.ExitError as exc:  # the read timed out (the interrupt callback)
            raise SourceUnavailable(f"{self.source.name}: no data for "
                                    f"{self.config.stall_seconds} s") from exc
        except TimeoutError as exc:  # an HTTP camera's read timed out (its socket's timeout)
            raise SourceUnavailable(f"{self.source.name}: no data for "
                                    f"{self.config.stall_seconds * 2} s") from exc
        except (av.error.FFmpegError, OSError, http.client.HTTPException) as exc:
            raise SourceUnavailable(f"{self.source.name}: {self.words(exc)}") from None
        raise SourceUnavailable(f"{self.source.name}: the stream ended", ended=True)

    def _check_jpeg(self, data: bytes) -> StreamFacts:
        """An MJPEG frame's own header read before the decoder sees it: a frame claiming
        more than ``[live] max_megapixels`` is refused (StreamRefused), one without a
        readable header is a broken packet (StreamMismatch); its header facts."""
        facts = jpeg_facts(data)
        if facts.columns * facts.rows > self.max_pixels:
            raise StreamRefused(f"{self.source.name}: a {facts.columns}x{facts.rows} frame is "
                                f"larger than [live] max_megapixels "
                                f"({self.config.max_megapixels})")
        return facts

    def close(self) -> None:
        """Close the container (and the device or connection)."""
        if self.container is not None:
            self.container.close()
        if self._response is not None:
            self._response.close()


def _regular_file(source: LiveSource) -> None:
    """Refuse a file source that is no regular file: opening a FIFO without a writer blocks
    where no timeout reaches, a device (/dev/zero) never ends. A missing file is left to
    the open (unavailable: it may be plugged in)."""
    try:
        mode = os.stat(source_path(source)).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        raise StreamRefused(f"{source.name}: {source_path(source)} is not a regular file")


def drawable(facts: StreamFacts) -> bool:
    """Whether a browser draws a JPEG with this frame header as it is: baseline, extended
    or progressive Huffman (BROWSER_SOF) of 8-bit samples."""
    return facts.marker in BROWSER_SOF and facts.precision == 8


def browser_jpeg(data: bytes) -> bool:
    """Whether a browser draws this JPEG as it is (its frame header, read by
    ``imaging.codestream.jpeg_facts``: ``drawable``)."""
    try:
        return drawable(jpeg_facts(data))
    except StreamMismatch:
        return False
