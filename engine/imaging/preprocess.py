"""Turn a display-ready grey image into the model's input tensor, as the manifest says.

The model package names its preprocessing (``preprocessing.name``); the box
looks it up here. The trainer imports the same functions, so training and the
box never disagree on how an image becomes a tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Transform:
    """How model-input pixel coordinates map back to the source image.

    ``source = (model - offset) / scale`` on each axis (x then y).
    """

    scale: float
    offset_x: float
    offset_y: float
    source_width: int
    source_height: int

    def to_source(self, x: float, y: float) -> tuple[float, float]:
        """Map a point in model-input pixels to source-image pixels (clipped)."""
        sx = (x - self.offset_x) / self.scale
        sy = (y - self.offset_y) / self.scale
        return (
            float(min(max(sx, 0.0), self.source_width)),
            float(min(max(sy, 0.0), self.source_height)),
        )


def letterbox(image: np.ndarray, height: int, width: int) -> tuple[np.ndarray, Transform]:
    """Resize a 2-D float image to fit (height, width) keeping aspect, padding with 0."""
    if image.ndim != 2:
        raise ValueError(f"letterbox takes a 2-D grey image, got shape {image.shape}")
    src_h, src_w = image.shape
    scale = min(height / src_h, width / src_w)
    new_h = max(1, round(src_h * scale))
    new_w = max(1, round(src_w * scale))
    resized = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F").resize(
        (new_w, new_h), Image.Resampling.BILINEAR
    )
    canvas = np.zeros((height, width), dtype=np.float32)
    off_y = (height - new_h) // 2
    off_x = (width - new_w) // 2
    canvas[off_y : off_y + new_h, off_x : off_x + new_w] = np.asarray(resized, dtype=np.float32)
    return canvas, Transform(scale, float(off_x), float(off_y), src_w, src_h)


def letterbox_grey(
    image: np.ndarray, shape: tuple[int, ...], mean: float, std: float, params: dict[str, Any]
) -> tuple[np.ndarray, Transform]:
    """``letterbox_grey``: grey [0,1] image → letterboxed, normalised NCHW float32 tensor.

    ``shape`` is the manifest input shape [N, C, H, W]; with C == 3 the grey
    plane is repeated (models trained on RGB exports).
    """
    _, channels, height, width = shape
    plane, transform = letterbox(_within_unit(image), height, width)
    plane -= np.float32(mean)  # in place: the letterbox's canvas is float32 and ours
    plane /= np.float32(std)
    tensor = plane[None, None] if channels == 1 else np.repeat(plane[None, None], channels, 1)
    return tensor, transform


def _within_unit(image: np.ndarray) -> np.ndarray:
    """``image`` clipped to [0, 1]; itself when it already lies there, as a decoded frame
    does (a copy of a 512 × 512 frame costs more than checking its extremes, mostly in the
    fresh memory's page faults)."""
    if image.size and image.min() >= 0.0 and image.max() <= 1.0:
        return image
    return np.clip(image, 0.0, 1.0)


Preprocessor = Callable[
    [np.ndarray, tuple[int, ...], float, float, dict[str, Any]], tuple[np.ndarray, Transform]
]

PREPROCESSORS: dict[str, Preprocessor] = {"letterbox_grey": letterbox_grey}


def get_preprocessor(name: str) -> Preprocessor:
    """The preprocessing function a manifest names; a clear error for an unknown one."""
    try:
        return PREPROCESSORS[name]
    except KeyError:
        known = ", ".join(sorted(PREPROCESSORS))
        raise ValueError(f"unknown preprocessing {name!r}; this box knows: {known}") from None
