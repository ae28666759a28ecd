"""What a frame's findings are, and the numpy pieces every decoder uses.

``inference/heads.py`` decodes a model's declared heads into ``FrameFindings``
with these pieces: peak finding, NMS, the logistic function and the
resampling of a model-input map onto the source image. Boxes and heatmaps are
given in source-image pixels: the letterbox padding is cropped away and the
resize undone with the preprocessor's ``Transform``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.imaging.bilinear import bilinear
from engine.imaging.preprocess import Transform


@dataclass(frozen=True)
class Box:
    """A finding's box in source-image pixel coordinates, with its score and label.

    A segmenting model adds the lesion's outline (``contour``, (x, y) source
    pixels) and its mask (``mask``, a boolean window whose top-left pixel is
    ``mask_origin`` (row, col)); a per-lesion classifier its class probabilities.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    label: str
    class_probabilities: dict[str, float] = field(default_factory=dict, compare=False)
    contour: tuple[tuple[float, float], ...] = field(default=(), compare=False)
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)
    mask_origin: tuple[int, int] = field(default=(0, 0), compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The box as stored and drawn: corners, score, label, and when known its class
        probabilities and contour (the mask itself stays in memory)."""
        record: dict[str, Any] = {"x0": self.x0, "y0": self.y0, "x1": self.x1, "y1": self.y1,
                                  "score": self.score, "label": self.label}
        if self.class_probabilities:
            record["class_probabilities"] = dict(self.class_probabilities)
        if self.contour:
            record["contour"] = [[round(x, 1), round(y, 1)] for x, y in self.contour]
        return record


@dataclass
class FrameFindings:
    """What the model found on one frame.

    ``boxes`` holds only boxes scoring at least ``thresholds['box']``, at most
    ``max_boxes``, after NMS. ``heatmap`` is a low-resolution float32 map in
    [0, 1] covering exactly the source image (or None).
    """

    probability: float
    boxes: list[Box]
    heatmap: np.ndarray | None
    #: every class probability, for classifier models (empty for detectors)
    classes: dict[str, float] = field(default_factory=dict)
    #: the frame's distance from the model's validated range (None: no range declared);
    #: an ``inference.validated_range.RangeScore``
    range_score: Any = None


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    """Numerically stable logistic function."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def local_peaks(heatmap: np.ndarray, pool: int = 3) -> np.ndarray:
    """Boolean mask of cells equal to the max of their ``pool`` x ``pool`` window."""
    r = pool // 2
    padded = np.pad(heatmap, r, mode="constant", constant_values=-np.inf)
    h, w = heatmap.shape
    best = np.full_like(heatmap, -np.inf)
    for dy in range(pool):
        for dx in range(pool):
            best = np.maximum(best, padded[dy : dy + h, dx : dx + w])
    return heatmap >= best


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter
    return inter / union if union > 0 else 0.0


def nms(boxes: list[Box], iou_threshold: float, limit: int) -> list[Box]:
    """Greedy non-maximum suppression, best score first, at most ``limit`` boxes."""
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: b.score, reverse=True):
        if all(iou(box, k) <= iou_threshold for k in kept):
            kept.append(box)
            if len(kept) >= limit:
                break
    return kept


def source_heatmap(grid: np.ndarray, stride: float, transform: Transform) -> np.ndarray:
    """Resample a model-input cell map onto the source image extent (padding cropped).

    The result has about one value per cell of the source region, keeps the
    source aspect ratio and spans exactly ``[0, width] x [0, height]``.
    """
    span_w = transform.source_width * transform.scale
    span_h = transform.source_height * transform.scale
    out_w = max(1, round(span_w / stride))
    out_h = max(1, round(span_h / stride))
    xs = (transform.offset_x + (np.arange(out_w) + 0.5) * span_w / out_w) / stride - 0.5
    ys = (transform.offset_y + (np.arange(out_h) + 0.5) * span_h / out_h) / stride - 0.5
    return np.clip(bilinear(grid, ys, xs), 0.0, 1.0).astype(np.float32)
