"""Display previews: what the viewer and the printed report show of a received image.

The worker makes them in its decoder sandbox from the very decode that feeds
the model (``decode``'s ``each_frame`` hook), one per analysed frame: the
frame's values in modality units (e.g. Hounsfield units; 0..255 RGB for
colour), brought within ``PREVIEW_SIDE`` pixels on the longer side, with the
frame's default window and the full image's value range. The viewer windows a
preview on request and draws the report's key image from it, so no page and no
PDF ever decodes a full image.

A preview file sits beside its object in the spool (``spool.preview_path``),
so retention and quarantine delete it with the image. It is one uncompressed
``.npz`` (no pickles) written atomically: ``frame_<n>`` arrays and a ``meta``
JSON string. Grey values that are whole numbers within int16 are stored as
int16 (exact at full size; a shrunk preview's means rounded to within half a
unit), other grey values as float32, colour as uint8.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import convert_color_space

from firmware_app.errors import CliniboxError
from firmware_app.imaging.decode import (
    DecodedImage,
    DecodeError,
    Header,
    colour_samples,
    decode,
    frame_window,
    has_modality_transform,
    is_colour,
    modality_values,
    percentile_bounds,
    shown_as_stored,
    text_value,
)
from firmware_app.settings.box import LimitsConfig

#: Longest side of a stored preview (the viewer's largest rendering).
PREVIEW_SIDE = 2048
#: The preview file format this code writes and reads.
FORMAT = 1
_INT16 = np.iinfo(np.int16)


class FrameNotPreviewed(CliniboxError, LookupError):
    """A frame the worker did not analyse, so it has no preview."""

    kind = "no display preview"


@dataclass(frozen=True)
class Window:
    """A linear VOI window in modality units (e.g. HU for CT): centre and width."""

    centre: float
    width: float


@dataclass
class FramePreview:
    """One frame ready to render: modality values (grey) or 0..255 RGB, with its default window.

    ``rows`` and ``columns`` are the source image's (boxes are in source
    pixels); ``values`` may be smaller (at most ``PREVIEW_SIDE`` on a side).
    """

    values: np.ndarray  # [h, w] modality values for grey; [h, w, 3] 0..255 for colour
    colour: bool
    invert: bool  # MONOCHROME1: higher values darker
    default_window: Window
    value_range: tuple[float, float]  # (min, max) of the full frame's values
    frame: int  # 0-based frame index
    total_frames: int
    rows: int
    columns: int
    modality: str
    previewed: tuple[int, ...] = ()  # every frame of the image that has a preview
    #: (row, column) mm per source pixel, as the worker measured the lesions with
    #: (``decode``'s calibration); None when the image has none or the preview predates it
    pixel_spacing: tuple[float, float] | None = None


def fit_size(width: int, height: int, max_side: int, min_side: int = 1) -> tuple[int, int]:
    """(width, height) brought within ``max_side`` (and up to ``min_side``), aspect kept."""
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


# -- making (in the decoder sandbox) ---------------------------------------------------


def frame_preview(ds: Dataset, header: Header, index: int, array: np.ndarray,
                  photometric: str, max_side: int = PREVIEW_SIDE,
                  grey_values: np.ndarray | None = None) -> FramePreview:
    """The preview of frame ``index`` from its stored values (``frame_pixels``' output);
    ``grey_values``: a grey frame's modality values when ``decode`` has them already."""
    if is_colour(array, photometric):
        values = _rgb_values(array, ds, header, photometric)
        default = Window(127.5, 255.0)
        invert = False
    else:
        values = (grey_values if grey_values is not None
                  else modality_values(ds, header, index, array))
        default = _default_window(ds, header, index, array, values)
        invert = photometric == "MONOCHROME1"
    return FramePreview(
        values=_shrink(values, max_side), colour=values.ndim == 3, invert=invert,
        default_window=default, value_range=_value_range(values), frame=index,
        total_frames=header.frames, rows=header.rows, columns=header.columns,
        modality=text_value(ds, "Modality").upper())


def decode_with_previews(path: str, limits: dict[str, Any], max_frames: int, target: str,
                         max_side: int = PREVIEW_SIDE) -> DecodedImage:
    """``decode`` for the model, writing the analysed frames' previews to ``target`` too."""
    previews: list[FramePreview] = []

    def keep(ds: Dataset, header: Header, index: int, array: np.ndarray, photometric: str,
             values: np.ndarray | None) -> None:
        previews.append(frame_preview(ds, header, index, array, photometric, max_side, values))

    image = decode(Path(path), LimitsConfig(**limits), max_frames, each_frame=keep)
    for made in previews:
        made.pixel_spacing = image.pixel_spacing
    save(previews, Path(target))
    return image


def remake(path: str, limits: dict[str, Any], max_frames: int, target: str,
           max_side: int = PREVIEW_SIDE) -> tuple[np.ndarray, dict[str, Any]]:
    """Write the previews of an image processed before previews existed (a sandbox call).

    The same frames the worker analyses (``select_frames`` of ``max_frames``);
    returns an empty array and the frame numbers written.
    """
    image = decode_with_previews(path, limits, max_frames, target, max_side)
    return np.empty(0, np.uint8), {"frames": image.frame_indices}


def _shrink(values: np.ndarray, max_side: int) -> np.ndarray:
    rows, columns = values.shape[:2]
    size = fit_size(columns, rows, max_side)
    if values.ndim == 3:
        rgb = np.rint(np.clip(np.nan_to_num(values), 0.0, 255.0)).astype(np.uint8)
        if size == (columns, rows):
            return rgb
        return np.asarray(Image.fromarray(rgb, "RGB").resize(
            size, Image.Resampling.LANCZOS, reducing_gap=3.0))
    grey = values.astype(np.float32)
    if not np.isfinite(grey).all():
        grey = np.nan_to_num(grey, nan=0.0)
    whole_values = bool(np.array_equal(np.rint(grey), grey))
    if size != (columns, rows):
        grey = np.asarray(Image.fromarray(grey, "F").resize(size, Image.Resampling.BOX))
    # Whole-number values stay whole: a shrunk pixel's mean is rounded (within half a
    # unit, invisible at any window), which halves the preview of a large image.
    if whole_values and (grey.size == 0 or (
            grey.min() >= _INT16.min and grey.max() <= _INT16.max)):
        return np.rint(grey).astype(np.int16)
    return grey.astype(np.float32)


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
    finite = values if np.isfinite(values).all() else values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 0.0
    return float(finite.min()), float(finite.max())


# -- the file ------------------------------------------------------------------------


def save(previews: list[FramePreview], target: Path) -> None:
    """Write ``previews`` (one image's frames) to ``target`` atomically and durably."""
    meta = {"format": FORMAT, "frames": []}
    arrays: dict[str, np.ndarray] = {}
    for preview in previews:
        arrays[f"frame_{preview.frame}"] = preview.values
        meta["frames"].append({
            "frame": preview.frame, "colour": preview.colour, "invert": preview.invert,
            "default_window": [preview.default_window.centre, preview.default_window.width],
            "value_range": list(preview.value_range), "total_frames": preview.total_frames,
            "rows": preview.rows, "columns": preview.columns, "modality": preview.modality,
            "pixel_spacing": list(preview.pixel_spacing) if preview.pixel_spacing else None})
    arrays["meta"] = np.array(json.dumps(meta))
    partial = target.with_name(f".{target.name}.part")
    with open(partial, "wb") as handle:
        np.savez(handle, allow_pickle=False, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(partial, 0o640)
    os.replace(partial, target)


def load(source: Path, frame: int) -> FramePreview:
    """Frame ``frame``'s preview from the file at ``source``.

    FileNotFoundError when there is no file, FrameNotPreviewed for a frame the
    worker did not analyse, DecodeError for a file that is not a preview.
    """
    try:
        with np.load(source, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            if meta.get("format") != FORMAT:
                raise DecodeError(f"preview format {meta.get('format')!r} is not {FORMAT}")
            frames = {int(item["frame"]): item for item in meta["frames"]}
            if frame not in frames:
                raise FrameNotPreviewed(frame, sorted(frames))
            values = stored[f"frame_{frame}"]
    except (FileNotFoundError, FrameNotPreviewed, DecodeError):
        raise
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise DecodeError(f"unreadable preview: {exc}") from exc
    item = frames[frame]
    values.flags.writeable = False
    spacing = item.get("pixel_spacing")
    return FramePreview(
        values=values, colour=bool(item["colour"]), invert=bool(item["invert"]),
        default_window=Window(*map(float, item["default_window"])),
        value_range=(float(item["value_range"][0]), float(item["value_range"][1])),
        frame=frame, total_frames=int(item["total_frames"]), rows=int(item["rows"]),
        columns=int(item["columns"]), modality=str(item["modality"]),
        previewed=tuple(sorted(frames)),
        pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing else None)
