"""Decode a detector's candidate boxes and suppress them, class by class, in numpy.

A package whose detection head declares a ``layout`` (``contracts/box_lists.py``)
exports the candidates its detector had before non-maximum suppression; here
the box turns them into lesions: scores after the declared activation (times
the objectness column when there is one), boxes as corners in model-input
pixels, then class-aware NMS with the head's IoU and score thresholds and at
most ``max_detections`` lesions, mapped back to source pixels through the
preprocessor's ``Transform``. The converter runs the same functions on the
PyTorch model's outputs and on each artifact's to compare their final boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from clinibox_common.contracts.box_lists import DEFAULTS
from clinibox_common.contracts.heads import Head
from engine.imaging.preprocess import Transform
from engine.inference.postprocess import Box, sigmoid


@dataclass(frozen=True)
class Candidates:
    """A frame's candidates: corners [M, 4] (x0, y0, x1, y1, model-input pixels), the
    score of each class [M, K] (background columns zeroed) and the best class [M]."""

    boxes: np.ndarray
    class_scores: np.ndarray

    @property
    def scores(self) -> np.ndarray:
        """Each candidate's best class score [M]."""
        return self.class_scores.max(axis=1, initial=0.0)

    @property
    def classes(self) -> np.ndarray:
        """Each candidate's best class [M]."""
        if not self.class_scores.shape[1]:
            return np.zeros(len(self.class_scores), np.int64)
        return self.class_scores.argmax(axis=1)


def _param(head: Head, key: str) -> Any:
    return head.param(key, DEFAULTS[key])


def _rows(outputs: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in outputs:
        raise ValueError(f"model output {name!r} is missing; got {sorted(outputs)}")
    a = np.asarray(outputs[name], dtype=np.float32)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"output {name!r} has shape {np.shape(outputs[name])}; want a list "
                         "of candidates [1, N, C]")
    return a


def _activate(scores: np.ndarray, activation: str) -> np.ndarray:
    if activation == "sigmoid":
        return sigmoid(scores).astype(np.float32)
    if activation == "softmax":
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return scores.astype(np.float32)


def candidates(outputs: dict[str, np.ndarray], head: Head,
               input_size: tuple[float, float]) -> Candidates:
    """A frame's candidates from its outputs, as the head declares them; ValueError when
    an output is missing or its shape does not fit the labels."""
    labels = list(head.param("labels", []))
    k = len(labels)
    if head.param("layout") == "yolo":
        rows = _rows(outputs, head.outputs["output"])
        if _param(head, "transposed"):
            rows = rows.T
        extra = 1 if _param(head, "objectness") else 0
        if rows.shape[1] != 4 + extra + k:
            raise ValueError(f"output {head.outputs['output']!r} has {rows.shape[1]} columns "
                             f"per candidate; the head declares 4 box + {extra} objectness + "
                             f"{k} class columns")
        raw_boxes, scores = rows[:, :4], rows[:, 4 + extra:]
        objectness = rows[:, 4] if extra else None
    else:
        raw_boxes = _rows(outputs, head.outputs["boxes_output"])
        scores = _rows(outputs, head.outputs["scores_output"])
        if raw_boxes.shape[1] != 4 or scores.shape != (len(raw_boxes), k):
            raise ValueError(f"boxes {raw_boxes.shape} and scores {scores.shape} do not fit "
                             f"[N, 4] and [N, {k}] (the head's {k} labels)")
        objectness = None
    activation = str(_param(head, "activation"))
    class_scores = _activate(scores, activation)
    if objectness is not None:
        obj = objectness if activation == "none" else sigmoid(objectness).astype(np.float32)
        class_scores = class_scores * obj[:, None]
    background = set(_param(head, "background"))
    class_scores = np.where([label in background for label in labels], 0.0,
                            class_scores).astype(np.float32)
    boxes = raw_boxes.astype(np.float64)
    if _param(head, "box_format") == "cxcywh":
        half = boxes[:, 2:] / 2
        boxes = np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)
    if _param(head, "coordinates") == "normalized":
        in_h, in_w = input_size
        boxes = boxes * np.array([in_w, in_h, in_w, in_h])
    finite = np.isfinite(boxes).all(axis=1) & np.isfinite(class_scores).all(axis=1)
    return Candidates(boxes[finite], np.nan_to_num(class_scores[finite]))


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [M, 4] with every box of ``b`` [L, 4] (corners): [M, L]."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) -
                 np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) -
                 np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def class_aware_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                    iou_threshold: float, limit: int) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, best score first, at most ``limit``: a box is
    dropped when it overlaps a kept box *of its own class* by more than ``iou_threshold``
    (the classes are kept apart by shifting each class's boxes beyond the others')."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(boxes) or limit < 1:
        return np.zeros(0, np.int64)
    span = float(np.abs(boxes).max()) * 2 + 1.0
    shifted = boxes + (np.asarray(classes, np.float64) * span)[:, None]
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    kept: list[int] = []
    while order.size and len(kept) < limit:
        best = int(order[0])
        kept.append(best)
        rest = order[1:]
        order = rest[pairwise_iou(shifted[best], shifted[rest])[0] <= iou_threshold]
    return np.asarray(kept, np.int64)


def select(found: Candidates, head: Head, score_threshold: float | None = None
           ) -> np.ndarray:
    """Indices of the candidates the box keeps, best first: those scoring at least the score
    threshold (the head's unless given), after class-aware NMS."""
    threshold = float(_param(head, "score_threshold") if score_threshold is None
                      else score_threshold)
    scores, b = found.scores, found.boxes
    valid = np.nonzero((scores >= threshold) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]))[0]
    keep = class_aware_nms(b[valid], scores[valid], found.classes[valid],
                           float(_param(head, "iou_threshold")),
                           int(_param(head, "max_detections")))
    return valid[keep]


def final_boxes(outputs: dict[str, np.ndarray], head: Head, input_size: tuple[float, float],
                score_threshold: float | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The boxes the box keeps, in model-input pixels: (corners [M, 4], scores [M], classes
    [M]), best first (:func:`select`)."""
    found = candidates(outputs, head, input_size)
    keep = select(found, head, score_threshold)
    return found.boxes[keep], found.scores[keep], found.classes[keep]


def top_score(outputs: dict[str, np.ndarray], head: Head,
              input_size: tuple[float, float]) -> float:
    """The image's finding probability: its most probable lesion candidate's score."""
    return float(candidates(outputs, head, input_size).scores.max(initial=0.0))


def box_list_lesions(outputs: dict[str, np.ndarray], head: Head,
                     input_size: tuple[float, float], transform: Transform,
                     score_threshold: float | None = None) -> list[Box]:
    """The frame's lesions in source pixels, best first, as every detection head gives
    them; with more than one lesion class each carries its class scores."""
    found = candidates(outputs, head, input_size)
    labels = [str(x) for x in head.param("labels", [])]
    background = set(_param(head, "background"))
    lesion_classes = [i for i, label in enumerate(labels) if label not in background]
    out = []
    for index in select(found, head, score_threshold).tolist():
        x0, y0, x1, y1 = found.boxes[index].tolist()
        sx0, sy0 = transform.to_source(x0, y0)
        sx1, sy1 = transform.to_source(x1, y1)
        if not (sx1 - sx0 > 0 and sy1 - sy0 > 0 and math.isfinite(sx0 + sy0 + sx1 + sy1)):
            continue
        row = found.class_scores[index]
        probabilities = ({labels[i]: round(float(row[i]), 4) for i in lesion_classes}
                         if len(lesion_classes) > 1 else {})
        out.append(Box(sx0, sy0, sx1, sy1, float(found.scores[index]),
                       labels[int(found.classes[index])], class_probabilities=probabilities))
    return out
