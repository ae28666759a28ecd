"""Write frames to a video file with PyAV: the phantom ultrasound screen a demonstration live
source plays (``clinibox demo-video``), and the tests' and benches' videos
(``tests/live_video.py``)."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from clinibox_common.errors import EXIT_USAGE, CliniboxError

#: container format by file suffix
FORMATS = {".mp4": "mp4", ".avi": "avi", ".ts": "mpegts", ".mkv": "matroska",
           ".mjpeg": "mjpeg", ".mjpg": "mjpeg"}
#: encoder, pixel format and options by codec
CODECS = {
    "h264": ("libx264", "yuv420p", {"preset": "veryfast", "tune": "zerolatency"}),
    "mjpeg": ("mjpeg", "yuvj420p", {}),
    "mpeg4": ("mpeg4", "yuv420p", {}),
}


class VideoFileError(CliniboxError, ValueError):
    """A video file the box cannot write (a suffix it knows no container for)."""

    exit_status = EXIT_USAGE


def container_format(path: Path) -> str:
    """FFmpeg's container format for ``path``, by its suffix."""
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise VideoFileError(f"no container for {path.name}: use one of {', '.join(FORMATS)}"
                         ) from None


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 30.0,
                codec: str = "h264", first_pts: int = 0) -> int:
    """Encode RGB uint8 frames into ``path``; return how many were written. A keyframe
    every second (a receiver joining a stream waits no longer). ``first_pts`` (in frames)
    starts the timestamps later (two encodes that follow each other)."""
    path = Path(path)
    name, pix_fmt, options = CODECS[codec]
    rate = Fraction(fps).limit_denominator(1001)
    count = 0
    with av.open(str(path), "w", format=container_format(path)) as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream(name, rate=rate, options=dict(options))
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = pix_fmt
                stream.codec_context.gop_size = max(1, round(fps))
                stream.codec_context.time_base = 1 / rate
                if codec != "h264":
                    stream.codec_context.bit_rate = 8_000_000
            video = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video.pts = first_pts + count
            video.time_base = 1 / rate
            container.mux(stream.encode(video))
            count += 1
        if stream is not None:
            container.mux(stream.encode(None))
    return count
