"""Render a received image for the clinic viewer: frames, window/level, overlays.

The viewer draws from the display previews the worker stored when it analysed
the image (``firmware_app.imaging.preview``): each analysed frame in modality
units (e.g. Hounsfield units), colour as RGB, with its default window. What is
done here is only what the viewer needs on top: a window chosen by the user,
the DICOM linear window formula (the worker's), a transparent heatmap overlay
and a key image with the findings burned in for the printed report. No
request decodes a full image.

An image processed before previews existed gets its previews made once, on
first view, in the viewer's own decoder sandbox (one limited child process
per web worker, ``firmware_app.imaging.sandbox``): an image that crashes a
codec or needs too much memory gives a DecodeError page, never a dead viewer.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from firmware_app.imaging import preview
from firmware_app.imaging.decode import DecodeError
from firmware_app.imaging.decode import window as apply_window
from firmware_app.imaging.preview import FrameNotPreviewed, FramePreview, Window, fit_size
from firmware_app.imaging.sandbox import DecodeSandbox
from firmware_app.settings.box import LimitsConfig
from firmware_app.storage.spool import preview_path

__all__ = ["DecodeError", "FrameNotPreviewed", "FramePreview", "Window", "display_size",
           "heatmap_png", "key_image_png", "load_frame", "render_png"]

#: Frames kept loaded (most recently used first out), and the memory they may hold.
CACHE_ENTRIES = 8
CACHE_MAX_BYTES = 256 * 1024 * 1024
#: Box outline and label background in key images (reads well on grey and on the heatmap).
BOX_COLOUR = (255, 64, 64)
#: A lesion's outline (segmenting models), drawn inside its box.
CONTOUR_COLOUR = (255, 200, 0)
LABEL_TEXT_COLOUR = (0, 0, 0)
#: Heatmap opacity at 1.0 (it rises linearly from 0 at ``floor``).
HEATMAP_MAX_ALPHA = 0.6
#: PNG zlib level: 1 is several times faster than the default 6 for ~10-20 % more bytes.
PNG_COMPRESS_LEVEL = 1


# -- loading ------------------------------------------------------------------------


_cache: OrderedDict[tuple[Any, ...], FramePreview] = OrderedDict()
_cache_lock = threading.Lock()


def load_frame(image_path: Path, frame: int, limits: LimitsConfig,
               max_frames: int) -> FramePreview:
    """Frame ``frame`` (0-based) of the received image at ``image_path``, from its preview.

    A missing preview of an image still on the box is made once in the
    viewer's decoder sandbox, for the frames the worker analyses
    (``max_frames``, its ``max_frames_per_instance``). Raises
    ``FrameNotPreviewed`` for a frame that was not analysed, ``DecodeError``
    for an image the box cannot read (the worker's checks) or a decoder that
    crashed or ran out of memory or time, ``FileNotFoundError`` when the image
    is gone. Recently used frames are cached; cached arrays are read-only.
    """
    image_path = Path(image_path)
    source = preview_path(image_path)
    try:
        stat = source.stat()
    except FileNotFoundError:
        if not image_path.exists():
            raise
        _sandbox(limits).call("firmware_app.imaging.preview:remake", str(image_path),
                              dataclasses.asdict(limits), int(max_frames), str(source))
        stat = source.stat()
    key = (str(source.resolve()), stat.st_mtime_ns, stat.st_size, int(frame))
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
    image = preview.load(source, int(frame))
    _remember(key, image)
    return image


_sandboxes: dict[int, DecodeSandbox] = {}
_sandbox_lock = threading.Lock()


def _sandbox(limits: LimitsConfig) -> DecodeSandbox:
    """This process's decoder sandbox (gunicorn forks workers: one each, made on first use)."""
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
    picture = _fit(Image.fromarray(_to_8bit(image, window)), max_side, 1)
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
    return _png(_heatmap_image(heatmap, width, height, floor))


def key_image_png(image: FramePreview, window: Window | None, boxes: list[dict],
                  heatmap: np.ndarray | None, *, max_side: int = 1024,
                  min_side: int = 512) -> bytes:
    """The frame with the heatmap blended in and each box outlined and labelled, as RGB PNG.

    ``boxes`` hold ``x0, y0, x1, y1`` in source pixels, ``score`` (0..1) and
    ``label``; a box with missing or non-numeric coordinates is skipped. The
    longer side is brought within ``max_side`` (and up to ``min_side`` for small
    images, so labels stay legible in print).
    """
    picture = Image.fromarray(_to_8bit(image, window)).convert("RGB")
    picture = _fit(picture, max_side, min_side)
    if heatmap is not None:
        overlay = _heatmap_image(heatmap, picture.width, picture.height, 0.2)
        picture = Image.alpha_composite(picture.convert("RGBA"), overlay).convert("RGB")
    # boxes are in the source image's pixels; the preview may be smaller
    _draw_boxes(picture, boxes, picture.width / image.columns, picture.height / image.rows)
    return _png(picture)


def _to_8bit(image: FramePreview, window: Window | None) -> np.ndarray:
    """uint8 grey [H, W] or RGB [H, W, 3] of the frame through ``window``."""
    values = image.values
    if window is not None and not (math.isfinite(window.centre) and math.isfinite(window.width)):
        window = None
    if image.colour and (window is None or window == image.default_window):
        return np.rint(np.clip(np.nan_to_num(values), 0.0, 255.0)).astype(np.uint8)
    chosen = window or image.default_window
    unit = apply_window(values, chosen.centre, max(chosen.width, 1.0), "LINEAR")
    if image.invert and not image.colour:
        unit = 1.0 - unit
    unit = np.nan_to_num(unit, nan=0.0, posinf=1.0, neginf=0.0)
    return np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


def _fit(picture: Image.Image, max_side: int, min_side: int) -> Image.Image:
    size = fit_size(picture.width, picture.height, max_side, min_side)
    if size == picture.size:
        return picture
    return picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _heatmap_image(heatmap: np.ndarray, width: int, height: int, floor: float) -> Image.Image:
    grid = np.asarray(heatmap, dtype=np.float32)
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"heatmap must be a non-empty 2-D array, got shape {grid.shape}")
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise ValueError(f"heatmap size must be at least 1 x 1, not {width} x {height}")
    grid = np.clip(np.nan_to_num(grid, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    up = np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BILINEAR))
    floor = min(max(float(floor), 0.0), 1.0) if math.isfinite(floor) else 0.2
    heat = np.clip((up - floor) / max(1.0 - floor, 1e-6), 0.0, 1.0)
    heat[up < floor] = 0.0
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    visible = heat > 0
    rgba[..., 0] = np.where(visible, 255, 0)
    rgba[..., 1] = np.where(visible, np.rint(255.0 * (1.0 - heat)), 0).astype(np.uint8)
    rgba[..., 3] = np.rint(255.0 * HEATMAP_MAX_ALPHA * heat).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA")


# -- boxes ------------------------------------------------------------------------------


def _draw_boxes(picture: Image.Image, boxes: list[dict], sx: float, sy: float) -> None:
    draw = ImageDraw.Draw(picture)
    width, height = picture.size
    line = 2 if max(width, height) < 600 else 3
    font = _font(max(11, min(20, round(max(width, height) / 48))))
    for box in boxes or []:
        corners = _corners(box)
        if corners is None:
            continue
        x0, y0, x1, y1 = corners
        left = min(max(math.floor(x0 * sx), 0), width - 1)
        top = min(max(math.floor(y0 * sy), 0), height - 1)
        right = min(max(math.ceil(x1 * sx) - 1, left), width - 1)
        bottom = min(max(math.ceil(y1 * sy) - 1, top), height - 1)
        outline = _contour(box, sx, sy)
        if len(outline) >= 3:
            draw.polygon(outline, outline=CONTOUR_COLOUR, width=max(1, line - 1))
        draw.rectangle((left, top, right, bottom), outline=BOX_COLOUR, width=line)
        _draw_label(draw, font, _label_text(box), left, top, bottom, width, height)


def _contour(box: dict, sx: float, sy: float) -> list[tuple[float, float]]:
    """The lesion's outline in picture pixels ([] when absent or not numbers)."""
    try:
        points = [(float(x) * sx, float(y) * sy) for x, y in box.get("contour") or []]
    except (TypeError, ValueError):
        return []
    return [p for p in points if math.isfinite(p[0]) and math.isfinite(p[1])]


def _corners(box: dict) -> tuple[float, float, float, float] | None:
    try:
        x0, y0, x1, y1 = (float(box[k]) for k in ("x0", "y0", "x1", "y1"))
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return None
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def _label_text(box: dict) -> str:
    label = "".join(ch for ch in str(box.get("label") or "") if ch.isprintable()).strip()[:40]
    try:
        score = float(box.get("score", "nan"))
    except (TypeError, ValueError):
        return label
    if not math.isfinite(score):
        return label
    percent = f"{round(min(max(score, 0.0), 1.0) * 100)}%"
    return f"{label} {percent}" if label else percent


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, ValueError, TypeError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def _draw_label(draw: ImageDraw.ImageDraw, font: Any, text: str, left: int, top: int,
                bottom: int, width: int, height: int) -> None:
    """The label on a box-coloured tab above the box (inside it when there is no room),
    shortened until it fits the image width."""
    if not text:
        return
    if not isinstance(font, ImageFont.FreeTypeFont):  # the bitmap font is latin-1 only
        text = text.encode("latin-1", "replace").decode("latin-1")
    pad = 2
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    while x1 - x0 + 2 * pad > width and len(text) > 1:
        text = text[:-1].rstrip()
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    text_w, text_h = x1 - x0, y1 - y0
    tab_w, tab_h = text_w + 2 * pad, text_h + 2 * pad
    y = top - tab_h if top - tab_h >= 0 else min(top + 3, max(height - tab_h, 0))
    if y + tab_h > height:
        y = max(bottom - tab_h, 0)
    x = min(max(left, 0), max(width - tab_w, 0))
    draw.rectangle((x, y, x + tab_w - 1, y + tab_h - 1), fill=BOX_COLOUR)
    draw.text((x + pad - x0, y + pad - y0), text, fill=LABEL_TEXT_COLOUR, font=font)
