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

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import convert_color_space

from engine.imaging.decode import (
    DecodedImage,
    Header,
    colour_samples,
    decode,
    frame_window,
    has_modality_transform,
    is_colour,
    modality_transform,
    modality_values,
    percentile_bounds,
    shown_as_stored,
    text_value,
)
from engine.imaging.preview_file import (
    PREVIEW_SIDE,
    FramePreview,
    Window,
    fit_size,
    save,
)
from engine.settings import LimitsConfig

_INT16 = np.iinfo(np.int16)

# -- making (in the decoder sandbox) ---------------------------------------------------


def frame_preview(ds: Dataset, header: Header, index: int, array: np.ndarray,
                  photometric: str, max_side: int = PREVIEW_SIDE,
                  grey_values: np.ndarray | None = None) -> FramePreview:
    """The preview of frame ``index`` from its stored values (``frame_pixels``' output);
    ``grey_values``: a grey frame's modality values when ``decode`` has them already
    (otherwise they are made here: as integers where the stored values and the rescale
    are, ``_whole_values``)."""
    if is_colour(array, photometric):
        values = _rgb_values(array, ds, header, photometric)
        default = Window(127.5, 255.0)
        invert = False
    else:
        values = grey_values
        if values is None:
            values = _whole_values(ds, index, array)
        if values is None:
            values = modality_values(ds, header, index, array)
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


def _whole_values(ds: Dataset, index: int, array: np.ndarray) -> np.ndarray | None:
    """A grey frame's modality values as int32, made without floats, when its stored values
    are integers of at most 16 bits and it has no modality transform or a rescale by whole
    numbers (CT's slope 1 and intercept -1024); None otherwise. The same numbers
    ``modality_values`` gives, at a fraction of its cost."""
    if array.dtype.kind not in "iu" or array.itemsize > 2:
        return None
    transform = modality_transform(ds, index)
    if transform is None:
        return array.astype(np.int32)
    kind, slope, intercept = transform
    if (kind != "rescale" or slope != int(slope) or intercept != int(intercept)
            or abs(slope) * 65535 + abs(intercept) >= 2 ** 31):
        return None
    values = array.astype(np.int32)
    if slope != 1:
        values *= int(slope)
    values += int(intercept)
    return values


def _shrink(values: np.ndarray, max_side: int) -> np.ndarray:
    rows, columns = values.shape[:2]
    size = fit_size(columns, rows, max_side)
    if (values.ndim == 2 and values.dtype.kind == "i" and size == (columns, rows)
            and values.size and values.min() >= _INT16.min and values.max() <= _INT16.max):
        return values.astype(np.int16)  # whole values at full size: stored as they are
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


