"""Findings drawn onto a picture: one drawing for the viewer and the DICOM key image.

The viewer's printed key image (``web/render.py``) and the secondary capture
sent to the clinic's PACS (``firmware_app/dicom_out/key_image.py``) both come
from :func:`key_picture`, so a finding looks the same wherever a clinician
meets it: the frame through its window, the model's heatmap blended in
(yellow to red, transparent below ``floor``), each box outlined in red with a
red tab holding its number, label and score (``1: lesion 87%``: the number the
findings and the study page give it, then a colon, never run into the score), and
a segmenting model's outline of the lesion in amber inside its box.

Boxes are dicts in source pixels: ``x0, y0, x1, y1`` (edges), ``score`` (0..1),
``label`` and optionally ``contour``, a list of ``[x, y]`` pixel positions;
a box with missing or non-numeric coordinates is skipped.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from engine.imaging.preview_file import FramePreview, Window, fit_size
from engine.imaging.windowing import window as apply_window

#: Box outline and label background (reads well on grey and on the heatmap).
BOX_COLOUR = (255, 64, 64)
#: A lesion's outline (segmenting models), drawn inside its box.
CONTOUR_COLOUR = (255, 200, 0)
LABEL_TEXT_COLOUR = (0, 0, 0)
#: Heatmap opacity at 1.0 (it rises linearly from 0 at ``floor``).
HEATMAP_MAX_ALPHA = 0.6
#: Heatmap values below this are not drawn.
HEATMAP_FLOOR = 0.2


def frame_picture(image: FramePreview, window: Window | None) -> np.ndarray:
    """uint8 grey [H, W] or RGB [H, W, 3] of the frame through ``window`` (default: its own).

    DICOM linear window (PS3.3 C.11.2.1.2, the worker's formula), widths below
    1 act as 1, MONOCHROME1 inverted; a window with a non-finite number falls
    back to the default.
    """
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


def fit(picture: Image.Image, max_side: int, min_side: int = 1) -> Image.Image:
    """``picture`` resized (Lanczos) so its longer side is within ``max_side`` and ``min_side``."""
    size = fit_size(picture.width, picture.height, max_side, min_side)
    if size == picture.size:
        return picture
    return picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def key_picture(image: FramePreview, window: Window | None, boxes: list[dict],
                heatmap: np.ndarray | None, *, max_side: int = 1024,
                min_side: int = 512) -> Image.Image:
    """The frame with the heatmap blended in and each box outlined and labelled (RGB).

    The longer side is brought within ``max_side`` (and up to ``min_side`` for
    small images, so labels stay legible in print).
    """
    picture = fit(Image.fromarray(frame_picture(image, window)).convert("RGB"),
                  max_side, min_side)
    if heatmap is not None:
        overlay = heatmap_overlay(heatmap, picture.width, picture.height, HEATMAP_FLOOR)
        picture = Image.alpha_composite(picture.convert("RGBA"), overlay).convert("RGB")
    # boxes are in the source image's pixels; the picture may be smaller or larger
    draw_findings(picture, boxes, picture.width / image.columns, picture.height / image.rows)
    return picture


def heatmap_overlay(heatmap: np.ndarray, width: int, height: int,
                    floor: float = HEATMAP_FLOOR) -> Image.Image:
    """The heatmap as an RGBA picture of exactly ``width`` x ``height`` to lay over the frame.

    Upsampled bilinearly over the whole extent, coloured yellow (at ``floor``)
    to red (at 1.0) with alpha rising linearly from 0 at ``floor`` to
    ``HEATMAP_MAX_ALPHA`` at 1.0; fully transparent below ``floor``. ValueError
    for a heatmap that is not 2-D or empty, or a size below 1.
    """
    up = shown_heatmap(heatmap, width, height)
    width, height = up.shape[1], up.shape[0]
    floor = min(max(float(floor), 0.0), 1.0) if math.isfinite(floor) else HEATMAP_FLOOR
    heat = np.clip((up - floor) / max(1.0 - floor, 1e-6), 0.0, 1.0)
    heat[up < floor] = 0.0
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    visible = heat > 0
    rgba[..., 0] = np.where(visible, 255, 0)
    rgba[..., 1] = np.where(visible, np.rint(255.0 * (1.0 - heat)), 0).astype(np.uint8)
    rgba[..., 3] = np.rint(255.0 * HEATMAP_MAX_ALPHA * heat).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA")


def shown_heatmap(heatmap: np.ndarray, width: int, height: int) -> np.ndarray:
    """The heatmap's values as drawn over a ``width`` x ``height`` picture: float32 [height,
    width] in [0, 1], upsampled bilinearly over the whole extent (pixel centres aligned).
    ValueError for a heatmap that is not 2-D or empty, or a size below 1."""
    grid = np.asarray(heatmap, dtype=np.float32)
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"heatmap must be a non-empty 2-D array, got shape {grid.shape}")
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise ValueError(f"heatmap size must be at least 1 x 1, not {width} x {height}")
    grid = np.clip(np.nan_to_num(grid, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    return np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BILINEAR),
                      dtype=np.float32)


def draw_findings(picture: Image.Image, boxes: list[dict], sx: float, sy: float) -> None:
    """Outline and label each box (and its contour) on ``picture``, in place.

    ``sx`` and ``sy`` turn source pixels into picture pixels.
    """
    draw = ImageDraw.Draw(picture)
    width, height = picture.size
    line = 2 if max(width, height) < 600 else 3
    font = label_font(width, height)
    for number, box in enumerate(boxes or [], start=1):
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
        _draw_label(picture, font, label_texts(box, number), left, top, bottom)


def label_text(box: dict, number: int | None = None) -> str:
    """A box's tab text: its number (the one its finding line and the study page give it),
    a colon, its label and its score as a whole percentage: ``1: lesion 87%``, ``1: 87%``
    without a label; without ``number``, ``lesion 87%``."""
    texts = label_texts(box, number)
    return texts[0] if texts else ""


def label_texts(box: dict, number: int | None = None) -> list[str]:
    """A box's tab texts, longest first: with its label, without it, its number alone
    (the first that fits the picture's width is drawn); none for a box with neither label
    nor score."""
    label = "".join(ch for ch in str(box.get("label") or "") if ch.isprintable()).strip()[:40]
    score = _percent(box.get("score"))
    if not label and not score:
        return []
    head = f"{number}: " if number is not None else ""
    texts = [head + " ".join(part for part in (label, score) if part)]
    if label and score:
        texts.append(head + score)
    if number is not None:
        texts.append(str(number))
    return [text.strip() for text in texts if text.strip()]


def _percent(value: object) -> str:
    """A score as a whole percentage, never rounded to a certainty or to none (``>99%``,
    ``<1%``, as ``i18n.formats.percent``); "" for no number."""
    try:
        score = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    if not math.isfinite(score):
        return ""
    score = min(max(score, 0.0), 1.0)
    whole = round(score * 100)
    if whole >= 100 and score < 1:
        return ">99%"
    if whole <= 0 < score:
        return "<1%"
    return f"{whole}%"


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


def label_font(width: int, height: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The labels' font for a picture of ``width`` x ``height``: larger on larger pictures."""
    return _font(max(11, min(20, round(max(width, height) / 48))))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, ValueError, TypeError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def label_tab(text: str, font: Any) -> Image.Image:
    """``text`` in black on a box-coloured tab with a 2-pixel margin (RGB): what a box's
    label looks like on the picture."""
    if not isinstance(font, ImageFont.FreeTypeFont):  # the bitmap font is latin-1 only
        text = text.encode("latin-1", "replace").decode("latin-1")
    pad = 2
    x0, y0, x1, y1 = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    tab = Image.new("RGB", (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), BOX_COLOUR)
    ImageDraw.Draw(tab).text((pad - x0, pad - y0), text, fill=LABEL_TEXT_COLOUR, font=font)
    return tab


def _draw_label(picture: Image.Image, font: Any, texts: list[str], left: int, top: int,
                bottom: int) -> None:
    """The first of ``texts`` that fits the picture's width on a box-coloured tab above the
    box (inside it when there is no room); the last one shortened when none fits."""
    if not texts:
        return
    width, height = picture.size
    tab = next((t for t in (label_tab(text, font) for text in texts) if t.width <= width),
               None)
    if tab is None:
        text = texts[-1]
        tab = label_tab(text, font)
        while tab.width > width and len(text) > 1:
            text = text[:-1].rstrip()
            tab = label_tab(text, font)
    y = top - tab.height if top - tab.height >= 0 else min(top + 3, max(height - tab.height, 0))
    if y + tab.height > height:
        y = max(bottom - tab.height, 0)
    x = min(max(left, 0), max(width - tab.width, 0))
    picture.paste(tab, (x, y))
