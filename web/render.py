"""Render a stored DICOM instance for the clinic viewer: frames, window/level, overlays.

The pixel pipeline is the worker's (``firmware_app.imaging.decode``): the same
reading and validation against ``LimitsConfig``, the same modality LUT /
rescale and the same DICOM linear window formula. What differs is only what the
viewer needs on top: a window chosen by the user in modality units (e.g.
Hounsfield units), any single frame, colour kept as RGB, a transparent heatmap
overlay and a key image with the findings burned in for the printed report.

Decoding runs in the viewer's own decoder sandbox (one limited child process
per web worker, ``firmware_app.imaging.sandbox``): an image that crashes a
codec or needs too much memory gives a DecodeError page, never a dead viewer.
Only numpy, Pillow and pydicom are used.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.pixels import convert_color_space

from firmware_app.config import LimitsConfig
from firmware_app.imaging.decode import (
    DecodeError,
    Header,
    colour_samples,
    decode_guard,
    frame_pixels,
    frame_window,
    has_modality_transform,
    is_colour,
    modality_values,
    open_dataset,
    percentile_bounds,
    shown_as_stored,
    text_value,
)
from firmware_app.imaging.decode import window as apply_window
from firmware_app.imaging.sandbox import DecodeSandbox

#: Frames kept decoded (most recently used first out), and the memory they may hold.
CACHE_ENTRIES = 8
CACHE_MAX_BYTES = 256 * 1024 * 1024
#: Box outline and label background in key images (reads well on grey and on the heatmap).
BOX_COLOUR = (255, 64, 64)
LABEL_TEXT_COLOUR = (0, 0, 0)
#: Heatmap opacity at 1.0 (it rises linearly from 0 at ``floor``).
HEATMAP_MAX_ALPHA = 0.6
#: PNG zlib level: 1 is several times faster than the default 6 for ~10-20 % more bytes.
PNG_COMPRESS_LEVEL = 1


@dataclass(frozen=True)
class Window:
    """A linear VOI window in modality units (e.g. HU for CT): centre and width."""

    centre: float
    width: float


@dataclass
class FrameImage:
    """One frame ready to render: modality values (grey) or 0..255 RGB, with its default window."""

    values: np.ndarray  # float64 [H, W] modality values for grey; [H, W, 3] 0..255 for colour
    colour: bool
    invert: bool  # MONOCHROME1: higher values darker
    default_window: Window
    value_range: tuple[float, float]  # (min, max) of values, for the slider bounds
    frame: int  # 0-based frame index rendered
    total_frames: int
    rows: int
    columns: int
    modality: str


# -- loading ------------------------------------------------------------------------


_cache: OrderedDict[tuple[Any, ...], FrameImage] = OrderedDict()
_cache_lock = threading.Lock()


def load_frame(path: Path, frame: int, limits: LimitsConfig) -> FrameImage:
    """Decode frame ``frame`` (0-based) of the DICOM file at ``path`` for display.

    The decode runs in the viewer's own decoder sandbox (a limited child process,
    ``firmware_app.imaging.sandbox``), never in the web server. Raises
    ``DecodeError`` for a file the box cannot read (the same checks as the
    worker), a frame index out of range or a decoder that crashed or ran out of
    memory or time; ``FileNotFoundError`` when the file is gone. Recently used
    frames are cached (keyed by the resolved path, its mtime and size, the frame
    and the limits); cached arrays are read-only.
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, int(frame),
           dataclasses.astuple(limits))
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
    values, meta = _sandbox(limits).call("web.render:frame_parts", str(path), int(frame),
                                         dataclasses.asdict(limits))
    values.flags.writeable = False
    image = FrameImage(values=values, default_window=Window(*meta.pop("default_window")),
                       value_range=tuple(meta.pop("value_range")), **meta)
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


def frame_parts(path: str, frame: int, limits: dict[str, Any]) -> tuple[np.ndarray, dict]:
    """In the sandbox: one frame's values and what a FrameImage needs besides them."""
    image = _load(Path(path), frame, LimitsConfig(**limits))
    meta = {f.name: getattr(image, f.name) for f in dataclasses.fields(image)
            if f.name != "values"}
    meta["default_window"] = (image.default_window.centre, image.default_window.width)
    return image.values, meta


def clear_cache() -> None:
    """Forget every cached frame (tests, or after files were rewritten in place)."""
    with _cache_lock:
        _cache.clear()


def _remember(key: tuple[Any, ...], image: FrameImage) -> None:
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


def _load(path: Path, frame: int, limits: LimitsConfig) -> FrameImage:
    with decode_guard():
        ds, header = open_dataset(path, limits)
        if not 0 <= frame < header.frames:
            noun = "frame" if header.frames == 1 else "frames"
            raise DecodeError(f"frame {frame} is out of range: "
                              f"the image has {header.frames} {noun}")
        array, photometric = frame_pixels(ds, header, frame)
        if is_colour(array, photometric):
            values = _rgb_values(array, ds, header, photometric)
            default = Window(127.5, 255.0)
            invert = False
        else:
            values = modality_values(ds, header, frame, array)
            default = _default_window(ds, header, frame, array, values)
            invert = photometric == "MONOCHROME1"
        return FrameImage(
            values=values,
            colour=values.ndim == 3,
            invert=invert,
            default_window=default,
            value_range=_value_range(values),
            frame=frame,
            total_frames=header.frames,
            rows=header.rows,
            columns=header.columns,
            modality=text_value(ds, "Modality").upper(),
        )


def _rgb_values(array: np.ndarray, ds: Dataset, header: Header, photometric: str) -> np.ndarray:
    """Palette, RGB or YBR samples as float64 RGB in 0..255."""
    samples, full_scale = colour_samples(array, ds, header, photometric)
    if photometric.startswith("YBR"):  # the decoder normally converts YBR already
        samples = convert_color_space(samples, photometric, "RGB")
        full_scale = 255.0 if samples.dtype == np.uint8 else full_scale
    rgb = samples.astype(np.float64) * (255.0 / full_scale)
    return np.clip(rgb, 0.0, 255.0)


def _default_window(ds: Dataset, header: Header, frame: int, array: np.ndarray,
                    values: np.ndarray) -> Window:
    """The frame's own window; else the stored range for small untransformed images
    (as the worker shows them); else the 0.5-99.5 % percentiles mapped exactly to 0..1."""
    own = frame_window(ds, frame)
    if own is not None:
        return Window(float(own[0]), float(own[1]))
    if shown_as_stored(header, array, has_modality_transform(ds, frame)):
        levels = float(2 ** header.bits_stored)
        return Window(levels / 2, levels)  # (v - (c - 0.5)) / (w - 1) + 0.5 == v / (levels - 1)
    bounds = percentile_bounds(values)
    if bounds is None:  # a uniform image: black, as the worker shows it
        finite = values[np.isfinite(values)]
        level = float(finite.flat[0]) if finite.size else 0.0
        return Window(level + 0.5, 1.0)
    low, high = bounds
    # DICOM linear window: maps (c - 0.5) ± (w - 1) / 2 onto 0..1, i.e. exactly low..high
    return Window((low + high) / 2 + 0.5, high - low + 1.0)


def _value_range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 0.0
    return float(finite.min()), float(finite.max())


# -- rendering ------------------------------------------------------------------------


def render_png(image: FrameImage, window: Window | None = None, *, max_side: int = 2048) -> bytes:
    """The frame as an 8-bit PNG ("L" grey, "RGB" colour) through ``window`` (default: its own).

    DICOM linear window (PS3.3 C.11.2.1.2, the worker's formula), widths below
    1 act as 1, MONOCHROME1 inverted; a window with a non-finite number falls
    back to the default. Downscaled keeping the aspect ratio when a side
    exceeds ``max_side``.
    """
    picture = _fit(Image.fromarray(_to_8bit(image, window)), max_side, 1)
    return _png(picture)


def display_size(image: FrameImage, max_side: int = 2048) -> tuple[int, int]:
    """(width, height) of ``render_png(image, max_side=max_side)``: overlays are made to match."""
    return _target_size(image.columns, image.rows, max_side, 1)


def heatmap_png(heatmap: np.ndarray, width: int, height: int, *, floor: float = 0.2) -> bytes:
    """The heatmap as an RGBA PNG of exactly ``width`` x ``height`` to lay over the image.

    Upsampled bilinearly over the whole extent, coloured yellow (at ``floor``)
    to red (at 1.0) with alpha rising linearly from 0 at ``floor`` to 0.6 at
    1.0; fully transparent below ``floor``. ValueError for a heatmap that is
    not 2-D or empty, or a size below 1.
    """
    return _png(_heatmap_image(heatmap, width, height, floor))


def key_image_png(image: FrameImage, window: Window | None, boxes: list[dict],
                  heatmap: np.ndarray | None, *, max_side: int = 1024,
                  min_side: int = 512) -> bytes:
    """The frame with the heatmap blended in and each box outlined and labelled, as RGB PNG.

    ``boxes`` hold ``x0, y0, x1, y1`` in source pixels, ``score`` (0..1) and
    ``label``; a box with missing or non-numeric coordinates is skipped. The
    longer side is brought within ``max_side`` (and up to ``min_side`` for small
    images, so labels stay legible in print).
    """
    rows, columns = image.values.shape[:2]
    picture = Image.fromarray(_to_8bit(image, window)).convert("RGB")
    picture = _fit(picture, max_side, min_side)
    if heatmap is not None:
        overlay = _heatmap_image(heatmap, picture.width, picture.height, 0.2)
        picture = Image.alpha_composite(picture.convert("RGBA"), overlay).convert("RGB")
    _draw_boxes(picture, boxes, picture.width / columns, picture.height / rows)
    return _png(picture)


def _to_8bit(image: FrameImage, window: Window | None) -> np.ndarray:
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


def _target_size(width: int, height: int, max_side: int, min_side: int) -> tuple[int, int]:
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, not {max_side}")
    longest = max(width, height)
    if longest > max_side:
        scale = max_side / longest
    elif longest < min(min_side, max_side):
        scale = min(min_side, max_side) / longest
    else:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def _fit(picture: Image.Image, max_side: int, min_side: int) -> Image.Image:
    size = _target_size(picture.width, picture.height, max_side, min_side)
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
        draw.rectangle((left, top, right, bottom), outline=BOX_COLOUR, width=line)
        _draw_label(draw, font, _label_text(box), left, top, bottom, width, height)


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
