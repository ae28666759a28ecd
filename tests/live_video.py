"""Live video for the bedside live mode's tests and benches: files, streams, hostile input.

- ``write_video`` encodes frames with PyAV (H.264 by libx264, MJPEG or MPEG-4 Part 2), the
  container by the file's suffix (.mp4, .avi, .ts, .mkv);
  ``make_phantom_video`` writes ``phantoms.video``'s ultrasound screen with its truth;
- ``udp_mpegts_sender`` and ``http_mjpeg_server`` stream a file in a loop at its own pace
  with Debian's ``ffmpeg`` (an encoder and streamer nobody here wrote), as context managers;
- hostile input: ``huge_mjpeg`` (JPEG headers claiming 30000 x 30000), ``corrupted_ts``
  (broken packets), ``resolution_change_ts`` (the picture size changes mid-stream),
  ``garbage`` (random bytes that look like MPEG-TS at a glance).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from firmware_app.live.video_file import container_format, write_video
from phantoms.video import ScreenLayout, screen_frames

TS_PACKET = 188


@dataclass
class PhantomVideo:
    """A written phantom video and its truth: each frame's lesion boxes (frame pixels)."""

    path: Path
    fps: float
    layout: ScreenLayout
    boxes: list[list[tuple[int, int, int, int]]] = field(default_factory=list)

    @property
    def frames(self) -> int:
        """How many frames were written."""
        return len(self.boxes)


def make_phantom_video(path: str | Path, seconds: float = 4.0, seed: int = 0,
                       codec: str = "h264", fps: float = 30.0,
                       layout: ScreenLayout | None = None, lesion: bool = True
                       ) -> PhantomVideo:
    """Write ``seconds`` of ``phantoms.video``'s ultrasound screen to ``path``
    (``layout``: 1280 x 720 by default)."""
    layout = layout or ScreenLayout()
    out = PhantomVideo(Path(path), fps, layout)

    def frames() -> Iterator[np.ndarray]:
        for frame, boxes in screen_frames(seed, seconds, fps, layout, lesion):
            out.boxes.append(boxes)
            yield frame

    write_video(path, frames(), fps, codec)
    return out


def make_doppler_video(path: str | Path, seconds: float = 8.0, fps: float = 25.0,
                       seed: int = 2) -> PhantomVideo:
    """``make_phantom_video``'s screen with a colour Doppler box in its image area (red flow
    over blue, pulsing): a picture whose colour a kept frame must keep. The box's place in
    frame pixels is ``DOPPLER_BOX`` (x0, y0, x1, y1), red above its middle, blue below."""
    layout = ScreenLayout()
    out = PhantomVideo(Path(path), fps, layout)
    x0, y0, x1, y1 = DOPPLER_BOX
    middle = (y0 + y1) // 2

    def frames() -> Iterator[np.ndarray]:
        for i, (frame, boxes) in enumerate(screen_frames(seed, seconds, fps, layout)):
            out.boxes.append(boxes)
            pulse = 150 + int(60 * np.sin(i / fps * 2 * np.pi))
            frame[y0:middle, x0:x1] = (pulse, 20, 20)
            frame[middle:y1, x0:x1] = (20, 30, pulse)
            yield frame

    write_video(path, frames(), fps, "h264")
    return out


#: where ``make_doppler_video`` draws its colour box (frame pixels, in the image area)
DOPPLER_BOX = (600, 250, 760, 410)


# -- senders -------------------------------------------------------------------------------


def ffmpeg() -> str:
    """The ffmpeg command line tool (Debian's)."""
    found = shutil.which("ffmpeg")
    if found is None:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)")
    return found


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _loop_input(video: str | Path) -> list[str]:
    return [ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
            "-stream_loop", "-1", "-i", str(video)]


@contextlib.contextmanager
def udp_mpegts_sender(video: str | Path, port: int) -> Iterator[str]:
    """Send ``video`` in a loop, at its own pace, as MPEG-TS over UDP to 127.0.0.1:``port``
    (its packets copied, not encoded again); yields the URL a receiver opens."""
    process = subprocess.Popen(
        [*_loop_input(video), "-map", "0:v", "-c", "copy", "-f", "mpegts",
         f"udp://127.0.0.1:{port}?pkt_size=1316"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"udp://127.0.0.1:{port}"
    finally:
        _stop(process)


def listening(port: int) -> bool:
    """Whether something listens on TCP ``port`` (read from /proc, so no client connects:
    ffmpeg's HTTP server serves the first client that does, and only that one)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                parts = row.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    return True
    return False


@contextlib.contextmanager
def http_mjpeg_server(video: str | Path, port: int, quality: int = 5,
                      wait: float = 10.0, cert: Path | None = None,
                      key: Path | None = None) -> Iterator[str]:
    """Serve ``video`` in a loop, at its own pace, as multipart JPEG (``mpjpeg``, what an
    IP camera's MJPEG stream is) on http://127.0.0.1:``port``/stream (https:// with the
    certificate ``cert`` and its ``key``); yields that URL.

    ffmpeg's server takes one client and ends when it leaves: it is started again, so a
    client that reconnects finds it again (after a short gap)."""
    tls = [] if cert is None else ["-cert_file", str(cert), "-key_file", str(key)]
    url = f"{'http' if cert is None else 'https'}://127.0.0.1:{port}/stream"
    command = [*_loop_input(video), "-map", "0:v", "-c:v", "mjpeg", "-q:v", str(quality),
               "-pix_fmt", "yuvj420p", "-f", "mpjpeg", "-listen", "1", *tls, url]
    with _served_again(command, port, wait):
        yield url


@contextlib.contextmanager
def tls_mpegts_server(video: str | Path, port: int, cert: Path, key: Path,
                      wait: float = 10.0) -> Iterator[str]:
    """Serve ``video`` in a loop, at its own pace, as MPEG-TS over TLS (ffmpeg's own
    ``tls`` protocol, listening) on 127.0.0.1:``port`` with the certificate ``cert`` (its
    key ``key``); yields the URL a receiver opens (``tls://127.0.0.1:port``). Started again
    whenever a client leaves or a handshake fails."""
    command = [*_loop_input(video), "-map", "0:v", "-c", "copy", "-f", "mpegts",
               "-cert_file", str(cert), "-key_file", str(key),
               f"tls://127.0.0.1:{port}?listen=1"]
    with _served_again(command, port, wait):
        yield f"tls://127.0.0.1:{port}"


@contextlib.contextmanager
def _served_again(command: list[str], port: int, wait: float) -> Iterator[None]:
    """Run ``command`` (an ffmpeg server of one client) again each time it ends, until the
    block ends; first wait until it listens on ``port``."""
    stop = threading.Event()
    current: list[subprocess.Popen] = []
    lock = threading.Lock()

    def serve() -> None:
        while not stop.is_set():
            with lock:
                if stop.is_set():
                    return
                process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
                current[:] = [process]
            while process.poll() is None and not stop.wait(0.1):
                pass
            stop.wait(0.2)

    thread = threading.Thread(target=serve, name="ffmpeg-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + wait
        while not listening(port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"ffmpeg does not listen on port {port}")
            time.sleep(0.05)
        yield
    finally:
        stop.set()
        with lock:
            for process in current:
                _stop(process)
        thread.join(timeout=10)


# -- hostile input -------------------------------------------------------------------------


def small_jpeg(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    """One real baseline JPEG of noise (PyAV's MJPEG encoder)."""
    rng = np.random.default_rng(seed)
    context = av.CodecContext.create("mjpeg", "w")
    context.width, context.height, context.pix_fmt = width, height, "yuvj420p"
    context.time_base = Fraction(1, 25)
    picture = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuvj420p")
    frame.pts = 0
    packets = context.encode(frame) + context.encode(None)
    return b"".join(bytes(p) for p in packets)


def sof_size(jpeg: bytes) -> tuple[int, int, int]:
    """(offset of the SOF segment's height field, width, height) of a JPEG."""
    i = 2  # after SOI
    while i + 4 <= len(jpeg):
        if jpeg[i] != 0xFF:
            raise ValueError("not a JPEG segment")
        marker, length = jpeg[i + 1], int.from_bytes(jpeg[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            at = i + 5
            return (at, int.from_bytes(jpeg[at + 2 : at + 4], "big"),
                    int.from_bytes(jpeg[at : at + 2], "big"))
        i += 2 + length
    raise ValueError("no SOF segment")


def patch_sof(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its SOF header claiming ``width`` x ``height`` (the data unchanged)."""
    at, _, _ = sof_size(jpeg)
    return (jpeg[:at] + height.to_bytes(2, "big") + width.to_bytes(2, "big")
            + jpeg[at + 4 :])


def huge_mjpeg(path: str | Path, frames: int = 30, size: int = 30000, fps: int = 25) -> Path:
    """MJPEG whose every JPEG claims ``size`` x ``size`` pixels (small real JPEGs with
    their SOF0 patched): raw concatenated JPEGs for .mjpeg/.mjpg, else an AVI whose header
    says what the JPEGs really are, 64 x 48 (FFmpeg's encoder, which the muxer opens,
    refuses to open at the claimed size). FFmpeg's own limit is about 16000 x 16000
    (``av_image_check_size``): ``size`` 30000 is refused by the decoder, 16000 is not."""
    path = Path(path)
    jpegs = [patch_sof(small_jpeg(seed=i), size, size) for i in range(frames)]
    if container_format(path) == "mjpeg":
        path.write_bytes(b"".join(jpegs))
        return path
    with av.open(str(path), "w", format=container_format(path)) as container:
        stream = container.add_stream("mjpeg", rate=fps)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuvj420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for i, data in enumerate(jpegs):
            packet = av.Packet(data)
            packet.stream = stream
            packet.pts = packet.dts = i
            packet.time_base = Fraction(1, fps)
            packet.is_keyframe = True
            container.mux(packet)
    return path


def to_ts(src: str | Path) -> bytes:
    """``src``'s video packets remuxed (not encoded again) as MPEG-TS."""
    out = Path(str(src) + ".remux.ts")
    try:
        with av.open(str(src)) as source, av.open(str(out), "w", format="mpegts") as target:
            video = source.streams.video[0]
            stream = target.add_stream_from_template(video)
            for packet in source.demux(video):
                if packet.dts is None:
                    continue
                packet.stream = stream
                target.mux(packet)
        return out.read_bytes()
    finally:
        out.unlink(missing_ok=True)


def corrupted_ts(path: str | Path, src: str | Path, seed: int = 0, fraction: float = 0.005,
                 spare: int = 20) -> int:
    """MPEG-TS of ``src`` (remuxed) with random byte runs overwritten in a ``fraction`` of
    its packets (after the first ``spare``: the stream starts clean), their sync bytes
    kept: broken packets, not lost sync; most of it still decodes. Returns how many
    packets were broken."""
    rng = np.random.default_rng(seed)
    src = Path(src)
    data = bytearray(src.read_bytes() if src.suffix == ".ts" else to_ts(src))
    count = len(data) // TS_PACKET
    broken = 0
    for index in range(spare, count):
        if rng.random() >= fraction:
            continue
        start = index * TS_PACKET + int(rng.integers(1, TS_PACKET - 1))
        end = min(start + int(rng.integers(4, 120)), (index + 1) * TS_PACKET)
        data[start:end] = rng.integers(0, 256, end - start, dtype=np.uint8).tobytes()
        broken += 1
    Path(path).write_bytes(bytes(data))
    return broken


def resolution_change_ts(path: str | Path, seconds: float = 1.0, seed: int = 0,
                         first: tuple[int, int] = (1280, 720),
                         second: tuple[int, int] = (1920, 1080), fps: float = 30.0
                         ) -> tuple[int, int]:
    """MPEG-TS (H.264) whose picture is ``first`` (width, height) for ``seconds``, then
    ``second``: two encodes of the phantom screen joined at the TS level, timestamps
    continuing. Returns the two parts' frame counts."""
    path = Path(path)
    counts = []
    data = b""
    for part, (width, height) in enumerate((first, second)):
        piece = path.with_name(f"{path.stem}.part{part}.ts")
        layout = ScreenLayout().scaled(width, height)
        frames = (f for f, _ in screen_frames(seed + part, seconds, fps, layout))
        counts.append(write_video(piece, frames, fps, "h264", first_pts=sum(counts)))
        data += piece.read_bytes()
        piece.unlink()
    path.write_bytes(data)
    return counts[0], counts[1]


def garbage(path: str | Path, size: int = 1 << 20, seed: int = 0) -> Path:
    """``size`` random bytes with a 0x47 sync byte every 188 (MPEG-TS at a glance)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size, dtype=np.uint8)
    data[::TS_PACKET] = 0x47
    Path(path).write_bytes(data.tobytes())
    return Path(path)
