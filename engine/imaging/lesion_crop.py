"""A lesion's crop from the source frame: what a second stage sees (``contracts/stages.py``).

The window is a square on the source frame centred on the lesion's box,
``context`` times the box's longer side plus ``margin_px`` source pixels
across, sampled at ``size`` points (bilinear at the sample points' centres;
the image's edge repeated outside it) and standardised by its own mean and
standard deviation. Its ``Transform`` maps crop pixels back to the source
frame, so a stage's masks and outlines land on source pixels like the first
stage's. The converter cuts its training crops with the same function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.imaging.bilinear import bilinear
from engine.imaging.preprocess import Transform


@dataclass(frozen=True)
class CropSpec:
    """How a stage's crop is cut: output ``size`` (height, width), ``context`` (times the
    box's longer side) and ``margin_px`` (source pixels added to the side)."""

    size: tuple[int, int]
    context: float = 1.5
    margin_px: float = 0.0

    @classmethod
    def from_dict(cls, crop: dict) -> CropSpec:
        """From a stage's ``crop`` section."""
        height, width = (int(v) for v in crop["size"])
        return cls((height, width), float(crop.get("context", 1.5)),
                   float(crop.get("margin_px", 0.0)))


def crop_window(box: Sequence[float], spec: CropSpec) -> tuple[float, float, float]:
    """(left, top, side) of the square window around ``box`` (x0, y0, x1, y1), source pixels."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    side = max(x1 - x0, y1 - y0, 1.0) * spec.context + spec.margin_px
    return (x0 + x1) / 2 - side / 2, (y0 + y1) / 2 - side / 2, side


def sample_bilinear(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``image`` sampled at rows ``ys`` × columns ``xs`` (source pixel coordinates, pixel
    centres at +0.5), bilinear, the edge repeated outside the image; float32."""
    rows, columns = np.asarray(ys, np.float64) - 0.5, np.asarray(xs, np.float64) - 0.5
    return bilinear(image, rows, columns).astype(np.float32)


def crop_points(box: Sequence[float], spec: CropSpec) -> tuple[np.ndarray, np.ndarray, float]:
    """The crop's sample rows and columns on the source frame and its step (pixels)."""
    left, top, side = crop_window(box, spec)
    height, width = spec.size
    step_y, step_x = side / height, side / width
    ys = top + (np.arange(height) + 0.5) * step_y
    xs = left + (np.arange(width) + 0.5) * step_x
    return ys, xs, step_x


def crop_transform(box: Sequence[float], spec: CropSpec, shape: tuple[int, int]) -> Transform:
    """The Transform from the crop's pixels to the frame of ``shape`` (height, width)."""
    left, top, side = crop_window(box, spec)
    step = side / spec.size[1]
    return Transform(scale=1.0 / step, offset_x=-left / step, offset_y=-top / step,
                     source_width=int(shape[1]), source_height=int(shape[0]))


def lesion_crop(image: np.ndarray, box: Sequence[float], spec: CropSpec
                ) -> tuple[np.ndarray, Transform]:
    """The stage's input tensor [1, 1, H, W] for the lesion in ``box`` on the grey frame
    ``image``, and the Transform from crop pixels to the frame."""
    ys, xs, _step = crop_points(box, spec)
    values = sample_bilinear(image, ys, xs)
    values = (values - values.mean()) / (values.std() + 1e-3)
    return (np.ascontiguousarray(values[None, None], dtype=np.float32),
            crop_transform(box, spec, image.shape))
