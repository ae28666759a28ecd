"""Detection metrics for the demo model's card: box recall/precision, false positives."""

from __future__ import annotations

import numpy as np

from converters.demo_model import GRID, STRIDE, Split
from converters.verify import auc
from firmware_app.inference.postprocess import Box, get_postprocessor, iou, sigmoid


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


