"""Turn a model's raw outputs into findings on the source image, as the manifest says.

The package names its decoder (``postprocessing.name``) and its parameters;
the worker calls::

    decode = get_postprocessor(manifest["postprocessing"]["name"])
    findings = decode(outputs, manifest["postprocessing"]["params"], package.thresholds, transform)

numpy only. Boxes and the heatmap are given in source-image pixels: the
letterbox padding is cropped away and the resize undone with ``transform``.

``centre_heatmap_boxes`` (CenterNet-style) reads:

* ``lesion_logit`` [1, 1] - image-level logit, ``probability = sigmoid``;
* ``centre_heatmap`` [1, 1, h, w] - probability of a lesion centre per cell;
* ``box_size`` [1, 2, h, w] - box width, height as a fraction of the input size;
* ``cam`` [1, 1, h, w] - optional class-activation map (logits) for display.

Parameters (all optional): ``stride`` (input pixels per cell, default: input
size / map size, else 8), ``input_size`` [H, W], ``max_boxes`` (5),
``nms_iou`` (0.3), ``pool`` (3), ``label`` ("lesion"), ``display``
("cam" or "centre_heatmap"; falls back to the centre heatmap when the cam is
missing), and the output names (``logit_output``, ``heatmap_output``,
``size_output``, ``cam_output``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from firmware_app.imaging.preprocess import Transform


@dataclass(frozen=True)
class Box:
    """A finding's box in source-image pixel coordinates, with its score and label."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    label: str


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


Postprocessor = Callable[[dict[str, np.ndarray], dict, dict[str, float], Transform],
                         FrameFindings]


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    """Numerically stable logistic function."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _plane(array: np.ndarray, name: str, channels: int = 1) -> np.ndarray:
    """Drop the batch axis: [1, C, h, w] or [C, h, w] -> [C, h, w] (float32)."""
    a = np.asarray(array, dtype=np.float32)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 2 and channels == 1:
        a = a[None]
    if a.ndim != 3 or a.shape[0] != channels:
        raise ValueError(f"output {name!r} has shape {np.shape(array)}; want [1,{channels},h,w]")
    return a


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


def _bilinear(grid: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample a 2-D grid at fractional (row, col) positions, clamped at the edges."""
    h, w = grid.shape
    ys = np.clip(ys, 0, h - 1)
    xs = np.clip(xs, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x1] * fx
    bottom = grid[y1][:, x0] * (1 - fx) + grid[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


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
    return np.clip(_bilinear(grid, ys, xs), 0.0, 1.0).astype(np.float32)


def _stride(params: dict[str, Any], grid_shape: tuple[int, int]) -> tuple[float, float, float]:
    """(stride, input height, input width) from params, inferring what is missing."""
    h, w = grid_shape
    if "input_size" in params:
        in_h, in_w = (float(v) for v in params["input_size"])
        return float(params.get("stride", in_w / w)), in_h, in_w
    stride = float(params.get("stride", 8))
    return stride, h * stride, w * stride


def centre_heatmap_boxes(outputs: dict[str, np.ndarray], params: dict[str, Any],
                         thresholds: dict[str, float], transform: Transform) -> FrameFindings:
    """CenterNet-style decoder: heatmap peaks + sizes -> NMS'd boxes in source pixels."""
    logit_name = params.get("logit_output", "lesion_logit")
    heat_name = params.get("heatmap_output", "centre_heatmap")
    size_name = params.get("size_output", "box_size")
    cam_name = params.get("cam_output", "cam")
    for name in (logit_name, heat_name, size_name):
        if name not in outputs:
            raise ValueError(f"model output {name!r} is missing; got {sorted(outputs)}")
    logit = float(np.asarray(outputs[logit_name], dtype=np.float64).reshape(-1)[0])
    probability = float(sigmoid(logit))
    heat = _plane(outputs[heat_name], heat_name)[0]
    sizes = _plane(outputs[size_name], size_name, channels=2)
    if sizes.shape[1:] != heat.shape:
        raise ValueError(f"{size_name} grid {sizes.shape[1:]} differs from {heat.shape}")
    stride, in_h, in_w = _stride(params, heat.shape)
    box_threshold = float(thresholds.get("box", params.get("box_threshold", 0.5)))
    label = str(params.get("label", "lesion"))
    candidates = []
    ys, xs = np.nonzero(local_peaks(heat, int(params.get("pool", 3))) & (heat >= box_threshold))
    for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
        cx, cy = (x + 0.5) * stride, (y + 0.5) * stride
        bw, bh = float(sizes[0, y, x]) * in_w, float(sizes[1, y, x]) * in_h
        x0, y0 = transform.to_source(cx - bw / 2, cy - bh / 2)
        x1, y1 = transform.to_source(cx + bw / 2, cy + bh / 2)
        if x1 - x0 > 0 and y1 - y0 > 0 and math.isfinite(x0 + y0 + x1 + y1):
            candidates.append(Box(x0, y0, x1, y1, float(heat[y, x]), label))
    boxes = nms(candidates, float(params.get("nms_iou", 0.3)), int(params.get("max_boxes", 5)))
    display = params.get("display", "cam")
    if display == "cam" and cam_name in outputs:
        grid = sigmoid(_plane(outputs[cam_name], cam_name)[0]).astype(np.float32)
    else:
        grid = heat
    return FrameFindings(probability, boxes, source_heatmap(grid, stride, transform))


def classification(outputs: dict[str, np.ndarray], params: dict[str, Any],
                   thresholds: dict[str, float], transform: Transform) -> FrameFindings:
    """Image classifier decoder: the finding probability from one score output.

    Parameters: ``output`` (the score output's name; default the only output),
    ``activation`` ("sigmoid" or "softmax"), ``labels`` (class names in output
    order) and ``negative_label`` (the class that is not a finding). With
    softmax and a negative label the probability is ``1 - p(negative)``; else
    the largest probability among the other classes. ``classes`` holds every
    class probability. No boxes, no heatmap.
    """
    name = params.get("output") or (next(iter(outputs)) if len(outputs) == 1 else None)
    if name is None or name not in outputs:
        raise ValueError(f"classification needs params.output among {sorted(outputs)}")
    scores = np.asarray(outputs[name], dtype=np.float64).reshape(-1)
    activation = params.get("activation", "sigmoid")
    if activation == "softmax":
        e = np.exp(scores - scores.max())
        probs = e / e.sum()
    elif activation == "sigmoid":
        probs = sigmoid(scores)
    else:
        raise ValueError(f"classification activation {activation!r} is not sigmoid or softmax")
    labels = [str(x) for x in params.get("labels", [])] or [f"class {i}" for i in range(
        len(probs))]
    if len(labels) != len(probs):
        raise ValueError(f"output {name!r} has {len(probs)} scores for {len(labels)} labels")
    negative = params.get("negative_label")
    classes = {label: float(p) for label, p in zip(labels, probs, strict=True)}
    if activation == "softmax" and negative in classes:
        probability = 1.0 - classes[negative]
    else:
        probability = max((p for label, p in classes.items() if label != negative), default=0.0)
    return FrameFindings(float(probability), [], None, classes)


POSTPROCESSORS: dict[str, Postprocessor] = {"centre_heatmap_boxes": centre_heatmap_boxes,
                                            "classification": classification}


def get_postprocessor(name: str) -> Postprocessor:
    """The decoder a manifest names; ValueError naming the known ones otherwise."""
    try:
        return POSTPROCESSORS[name]
    except KeyError:
        known = ", ".join(sorted(POSTPROCESSORS))
        raise ValueError(f"unknown postprocessing {name!r}; this box knows: {known}") from None
