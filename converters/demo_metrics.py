"""Metrics for the demo model: AUC, operating points, artifact validation, boxes."""

from __future__ import annotations

import math
import time

import numpy as np

from converters.demo_model import GRID, OUTPUTS, SHAPE, STRIDE, Split
from firmware_app.inference.postprocess import Box, get_postprocessor, iou, sigmoid

# -- metrics ---------------------------------------------------------------------------------


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank (Mann-Whitney) formula, ties counted half."""
    labels = np.asarray(labels).astype(bool)
    pos, neg = np.asarray(scores)[labels][:, None], np.asarray(scores)[~labels][None, :]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def operating_point(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    """Sensitivity and specificity at ``probability >= threshold``."""
    labels, hit = np.asarray(labels).astype(bool), np.asarray(probs) >= threshold
    return {"sensitivity": float(hit[labels].mean()) if labels.any() else float("nan"),
            "specificity": float((~hit[~labels]).mean()) if (~labels).any() else float("nan")}


def choose_thresholds(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """finding: maximises sensitivity + specificity; alert: specificity >= 0.99, above finding."""
    candidates = np.unique(np.round(probs, 4))
    if len(candidates) < 2:
        return 0.5, 0.9
    best = max(candidates, key=lambda t: (sum(operating_point(labels, probs, t).values()), -t))
    finding = float(np.clip(best, 0.05, 0.9))
    negatives = np.sort(probs[~labels.astype(bool)])
    spec99 = float(negatives[min(len(negatives) - 1, math.ceil(0.99 * len(negatives)))])
    alert = float(np.clip(max(spec99 + 1e-4, finding + 0.1), finding + 0.05, 0.99))
    return round(finding, 4), round(alert, 4)


def run_all(fn, planes: np.ndarray, mean: float, std: float) -> dict[str, np.ndarray]:
    """Run an artifact one image at a time (static batch 1); outputs stacked."""
    rows = [fn(((p.astype(np.float32) - mean) / std)[None, None]) for p in planes]
    return {k: np.concatenate([r[k] for r in rows]) for k in OUTPUTS}


def ms_per_image(fn, runs: int = 40) -> float:
    """Median wall time of one inference in ms, after five warm-up runs."""
    x, times = np.zeros(SHAPE, np.float32), []
    for i in range(runs + 5):
        start = time.perf_counter()
        fn(x)
        times += [(time.perf_counter() - start) * 1000] if i >= 5 else []
    return round(float(np.median(times)), 3)


def validate(outs: dict, ref: dict, labels: np.ndarray, finding: float) -> dict:
    """Fidelity of an artifact's outputs against torch's, and its own accuracy."""
    p, q = sigmoid(outs["lesion_logit"][:, 0]), sigmoid(ref["lesion_logit"][:, 0])
    return {"auc": round(auc(labels, p), 4),
            **{k: round(v, 4) for k, v in operating_point(labels, p, finding).items()},
            "max_abs_delta_probability": round(float(np.abs(p - q).max()), 5),
            "decision_agreement": round(float(((p >= finding) == (q >= finding)).mean()), 4),
            "max_abs_delta_heatmap": round(float(np.abs(
                outs["centre_heatmap"] - ref["centre_heatmap"]).max()), 5),
            "heldout_images": len(labels), "reference": "torch fp32"}


# -- packaging -------------------------------------------------------------------------------


def box_metrics(outs: dict, split: Split, threshold: float, params: dict) -> dict:
    """Lesion recall / box precision at IoU >= 0.3, decoded by the box's own decoder."""
    decode = get_postprocessor("centre_heatmap_boxes")
    found = predicted = matched = truth = 0
    for i, transform in enumerate(split.transforms):
        one = {k: v[i : i + 1] for k, v in outs.items()}
        boxes = decode(one, params, {"box": threshold}, transform).boxes
        gts = [Box(*b, 1.0, "lesion") for b in split.source_boxes[i]]
        predicted, truth = predicted + len(boxes), truth + len(gts)
        matched += sum(any(iou(b, g) >= 0.3 for g in gts) for b in boxes)
        found += sum(any(iou(b, g) >= 0.3 for b in boxes) for g in gts)
    recall, precision = found / max(truth, 1), matched / max(predicted, 1)
    f1 = 2 * recall * precision / max(recall + precision, 1e-9)
    return {"lesion_recall": round(recall, 4), "box_precision": round(precision, 4),
            "f1": round(f1, 4), "threshold": threshold}


def false_positive_analysis(outs: dict, split: Split, finding: float) -> dict:
    """Where false positives sit: on a distractor (cyst, vessel) or elsewhere; per-kind AUC."""
    probs, neg = sigmoid(outs["lesion_logit"][:, 0]), split.labels == 0
    on_distractor, fps = {"cyst": 0, "vessel": 0}, np.nonzero(neg & (probs >= finding))[0]
    for i in fps:
        y, x = np.unravel_index(np.argmax(outs["cam"][i, 0]), (GRID, GRID))
        cx, cy = (x + 0.5) * STRIDE, (y + 0.5) * STRIDE
        for what, (x0, y0, x1, y1) in split.distractors[i]:
            if x0 - STRIDE <= cx <= x1 + STRIDE and y0 - STRIDE <= cy <= y1 + STRIDE:
                on_distractor[what] += 1
                break
    with_cyst = np.array([any(w == "cyst" for w, _ in d) for d in split.distractors]) & neg
    kinds = np.array(split.kinds)
    return {"false_positives": len(fps), "negatives": int(neg.sum()),
            "false_positives_peaking_on": on_distractor,
            "specificity_negatives_with_cyst": round(float(
                (probs[with_cyst] < finding).mean()), 4) if with_cyst.any() else None,
            "specificity_negatives_without_cyst": round(float(
                (probs[neg & ~with_cyst] < finding).mean()), 4),
            "auc_by_kind": {k: round(auc(split.labels[kinds == k], probs[kinds == k]), 4)
                            for k in sorted(set(split.kinds))}}


