"""Render a received image for the clinic viewer: frames, window/level, overlays.

The viewer draws from the display previews the worker stored when it analysed
the image (read with numpy only, ``engine.imaging.preview_file``): each
analysed frame in modality units (e.g. Hounsfield units), colour as RGB, with
its default window. What is
done here is only what the viewer needs on top: a window chosen by the user,
the DICOM linear window formula (the worker's), a transparent heatmap overlay
and a key image with the findings burned in for the printed report. No
request decodes a full image.

An image processed before previews existed gets its previews made once, on
first view, in the viewer's own decoder sandbox (one limited child process
per web worker, ``engine.imaging.sandbox``): an image that crashes a
codec or needs too much memory gives a DecodeError page, never a dead viewer.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from engine.imaging import annotate, preview_file
from engine.imaging.errors import DecodeError
from engine.imaging.preview_file import FrameNotPreviewed, FramePreview, Window, fit_size
from engine.settings import LimitsConfig
from firmware_app.storage.spool import preview_path

if TYPE_CHECKING:
    from engine.imaging.sandbox import DecodeSandbox

__all__ = ["BOX_COLOUR", "DecodeError", "FrameNotPreviewed", "FramePreview", "Window",
           "display_size", "heatmap_png", "key_image_png", "load_frame", "render_png"]

#: Frames kept loaded (most recently used first out), and the memory they may hold: enough
#: for the frames of the study on screen while the window is dragged, without letting a
#: viewer worker keep a day's images (a preview is at most 2048² int16 or float32; reading
#: one back from the page cache costs a few ms, docs/decisions/0006-display-previews.md).
CACHE_ENTRIES = 4
CACHE_MAX_BYTES = 48 * 1024 * 1024
#: Colours of the key image's drawing (``engine.imaging.annotate``), kept here by name.
BOX_COLOUR = annotate.BOX_COLOUR
CONTOUR_COLOUR = annotate.CONTOUR_COLOUR
LABEL_TEXT_COLOUR = annotate.LABEL_TEXT_COLOUR
HEATMAP_MAX_ALPHA = annotate.HEATMAP_MAX_ALPHA
#: PNG zlib level: 1 is several times faster than the default 6 for ~10-20 % more bytes.
PNG_COMPRESS_LEVEL = 1


# -- loading ------------------------------------------------------------------------


log = logging.getLogger(__name__)

_cache: OrderedDict[tuple[Any, ...], FramePreview] = OrderedDict()
_cache_lock = threading.Lock()


def load_frame(image_path: Path, frame: int, limits: LimitsConfig,
               max_frames: int) -> FramePreview:
    """Frame ``frame`` (0-based) of the received image at ``image_path``, from its preview.

    A missing or unreadable preview of an image still on the box is made once in
    the viewer's decoder sandbox, for the frames the worker analyses
    (``max_frames``, its ``max_frames_per_instance``): previews are not synced to
    disk, so a power cut may leave one torn. Raises
    ``FrameNotPreviewed`` for a frame that was not analysed, ``DecodeError``
    for an image the box cannot read (the worker's checks) or a decoder that
    crashed or ran out of memory or time, ``FileNotFoundError`` when the image
    is gone. Recently used frames are cached; cached arrays are read-only.
    """
    image_path = Path(image_path)
    source = preview_path(image_path)
    try:
        key = _cache_key(source, frame)
    except FileNotFoundError:
        if not image_path.exists():
            raise
        _remake(image_path, source, limits, max_frames)
        key = _cache_key(source, frame)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
    try:
        image = preview_file.load(source, int(frame))
    except DecodeError:
        if not image_path.exists():
            raise
        log.warning("unreadable preview of %s made again", image_path.name)
        _remake(image_path, source, limits, max_frames)
        key = _cache_key(source, frame)
        image = preview_file.load(source, int(frame))
    _remember(key, image)
    return image


def _cache_key(source: Path, frame: int) -> tuple[Any, ...]:
    """A preview frame's cache key: the file as it is now (a remade preview is a new key)."""
    stat = source.stat()
    return (str(source.resolve()), stat.st_mtime_ns, stat.st_size, int(frame))


def _remake(image_path: Path, source: Path, limits: LimitsConfig, max_frames: int) -> None:
    """Write the previews of ``image_path`` to ``source`` in the viewer's decoder sandbox."""
    _sandbox(limits).call("engine.imaging.preview:remake", str(image_path),
                          dataclasses.asdict(limits), int(max_frames), str(source))


_sandboxes: dict[int, DecodeSandbox] = {}
_sandbox_lock = threading.Lock()


def _sandbox(limits: LimitsConfig) -> DecodeSandbox:
    """This process's decoder sandbox (gunicorn forks workers: one each, made on first use).

    Imported here, not at the top: the sandbox module brings pydicom and its
    codecs, which a viewer reading stored previews never needs.
    """
    from engine.imaging.sandbox import DecodeSandbox

    with _sandbox_lock:
        box = _sandboxes.get(os.getpid())
        if box is None or box.limits != limits:
            if box is not None:
                box.close()
            box = _sandboxes[os.getpid()] = DecodeSandbox(limits)
        return box


def clear_cache() -> None:
    """Forget every cached frame (tests, or after files were rewritten in place)."""
    with _cache_lock:
        _cache.clear()


def _remember(key: tuple[Any, ...], image: FramePreview) -> None:
    size = image.values.nbytes
    if size > CACHE_MAX_BYTES:
        return
    with _cache_lock:
        _cache[key] = image
        _cache.move_to_end(key)
        while len(_cache) > CACHE_ENTRIES or (
            sum(i.values.nbytes for i in _cache.values()) > CACHE_MAX_BYTES
        ):
            _cache.popitem(last=False)


# -- rendering ------------------------------------------------------------------------


def render_png(image: FramePreview, window: Window | None = None, *, max_side: int = 2048) -> bytes:
    """The frame as an 8-bit PNG ("L" grey, "RGB" colour) through ``window`` (default: its own).

    DICOM linear window (PS3.3 C.11.2.1.2, the worker's formula), widths below
    1 act as 1, MONOCHROME1 inverted; a window with a non-finite number falls
    back to the default. Downscaled keeping the aspect ratio when a side
    exceeds ``max_side``.
    """
    picture = annotate.fit(Image.fromarray(annotate.frame_picture(image, window)), max_side, 1)
    return _png(picture)


def display_size(image: FramePreview, max_side: int = 2048) -> tuple[int, int]:
    """(width, height) of ``render_png(image, max_side=max_side)``: overlays are made to match."""
    rows, columns = image.values.shape[:2]
    return fit_size(columns, rows, max_side)


def heatmap_png(heatmap: np.ndarray, width: int, height: int, *, floor: float = 0.2) -> bytes:
    """The heatmap as an RGBA PNG of exactly ``width`` x ``height`` to lay over the image.

    Upsampled bilinearly over the whole extent, coloured yellow (at ``floor``)
    to red (at 1.0) with alpha rising linearly from 0 at ``floor`` to 0.6 at
    1.0; fully transparent below ``floor``. ValueError for a heatmap that is
    not 2-D or empty, or a size below 1.
    """
    return _png(annotate.heatmap_overlay(heatmap, width, height, floor))


def key_image_png(image: FramePreview, window: Window | None, boxes: list[dict],
                  heatmap: np.ndarray | None, *, max_side: int = 1024,
                  min_side: int = 512) -> bytes:
    """The frame with the heatmap blended in and each box outlined and labelled, as RGB PNG.

    ``boxes`` hold ``x0, y0, x1, y1`` in source pixels, ``score`` (0..1) and
    ``label``; a box with missing or non-numeric coordinates is skipped. The
    longer side is brought within ``max_side`` (and up to ``min_side`` for small
    images, so labels stay legible in print). The drawing is
    ``engine.imaging.annotate``'s, the same as the key image sent to the PACS.
    """
    return _png(annotate.key_picture(image, window, boxes, heatmap,
                                     max_side=max_side, min_side=min_side))


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()
