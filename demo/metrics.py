"""Metrics for the demo model's card: boxes, false positives, lesion classes, sizes, the
validated range.

Every lesion figure goes through the box's own decoder
(``engine.inference.heads``) and measurement (``engine.inference.masks``),
so the card says what the box will say on these phantoms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from clinibox_common.contracts.heads import parse_heads
from converters.ood import mahalanobis_squared
from converters.verify import auc
from demo.model import GRID, STRIDE, Split
from engine.inference.heads import HeadsDecoder
from engine.inference.masks import axes
from engine.inference.postprocess import Box, iou, sigmoid
from phantoms.images import CLASSES

#: a lesion's measured axis counts as right within this share of the truth
SIZE_TOLERANCE = 0.15
#: lesions at least this long (mm) are held to SIZE_TOLERANCE
SIZE_FLOOR_MM = 5.0
#: pydicom's own test files: real CT and MR images the demo model never saw
REAL_FILES = ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "693_J2KR.dcm")


def _one(outs: dict, i: int) -> dict:
    return {k: v[i : i + 1] for k, v in outs.items()}


def _decoder(heads: list[dict], params: dict, thresholds: dict,
             kinds: tuple[str, ...] | None = None) -> HeadsDecoder:
    chosen = [h for h in heads if kinds is None or h["kind"] in kinds]
    return HeadsDecoder(parse_heads(chosen), params, {k: float(v) for k, v in thresholds.items()})


def box_metrics(outs: dict, split: Split, threshold: float, heads: list[dict],
                params: dict) -> dict:
    """Lesion recall / box precision at IoU >= 0.3, from the box's detection decoder."""
    decoder = _decoder(heads, params, {"box": threshold}, ("detection",))
    found = predicted = matched = truth = 0
    for i, transform in enumerate(split.transforms):
        boxes = decoder.decode(_one(outs, i), transform).boxes
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


def _softmax(values: np.ndarray) -> np.ndarray:
    e = np.exp(values - values.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def _centre_malignancy(outs: dict, i: int, box: tuple[float, ...]) -> float:
    """p(malignant) of the class map at the cell holding a model-input box's centre."""
    x0, y0, x1, y1 = box
    gx = min(GRID - 1, max(0, int((x0 + x1) / 2 / STRIDE)))
    gy = min(GRID - 1, max(0, int((y0 + y1) / 2 / STRIDE)))
    return float(_softmax(outs["lesion_class"][i, :, gy, gx])[CLASSES.index("malignant")])


def _match(boxes: list[Box], truths: list[dict]) -> list[Box | None]:
    """The decoded box of each truth lesion (greedy by IoU >= 0.3), or None."""
    pairs = sorted(((iou(b, Box(*t["box"], 1.0, "")), bi, ti) for bi, b in enumerate(boxes)
                    for ti, t in enumerate(truths)), reverse=True)
    taken: set[int] = set()
    out: list[Box | None] = [None] * len(truths)
    for overlap, bi, ti in pairs:
        if overlap < 0.3 or bi in taken or out[ti] is not None:
            continue
        taken.add(bi)
        out[ti] = boxes[bi]
    return out


def _error(measured: float, truth: float) -> float:
    return abs(measured - truth) / truth if truth > 0 else math.inf


def lesion_rows(outs: dict, split: Split, heads: list[dict], params: dict, thresholds: dict,
                refine: Callable[[int, list[Box]], list[Box]] | None = None) -> list[dict]:
    """One row per truth lesion of ``split``, decoded and measured as the box does.

    Every truth lesion is matched to a decoded lesion (IoU >= 0.3); its
    malignancy probability ``p`` is the decoder's (the class map under its mask),
    its ``measured_long`` and ``measured_short`` axes are measured on its mask with
    the phantom's spacing. ``refine(i, boxes)`` is the package's second stage on
    phantom ``i``'s decoded boxes, as the box runs it (``inference/stage.py``).
    ``centre_p`` reads the class map at the true centre of every lesion, found or not.
    """
    decoder = _decoder(heads, params, thresholds)
    rows: list[dict] = []
    for i, transform in enumerate(split.transforms):
        truths = split.truth[i]
        if not truths:
            continue
        boxes = decoder.decode(_one(outs, i), transform).boxes
        found = _match(refine(i, boxes) if refine is not None and boxes else boxes, truths)
        for truth, box, model_box in zip(truths, found, split.boxes[i], strict=True):
            row = {"image": i, "kind": split.kinds[i], "class": truth["class"],
                   "long_mm": truth["long_axis_mm"], "short_mm": truth["short_axis_mm"],
                   "centre_p": _centre_malignancy(outs, i, model_box), "found": box is not None}
            if box is not None and box.class_probabilities:
                row["p"] = box.class_probabilities.get("malignant")
            if box is not None and box.mask is not None and box.mask.any():
                measured = axes(box.mask, split.spacings[i])
                row.update(measured_long=measured.long_axis, measured_short=measured.short_axis)
            rows.append(row)
    return rows


def lesion_metrics(outs: dict, split: Split, heads: list[dict], params: dict,
                   thresholds: dict, refine: Callable[[int, list[Box]], list[Box]] | None = None
                   ) -> dict:
    """Class AUC and sizes of held-out lesions, decoded and measured as the box does
    (:func:`lesion_rows`)."""
    rows = lesion_rows(outs, split, heads, params, thresholds, refine)
    return {"lesions": len(rows), "detected": sum(r["found"] for r in rows),
            **_class_figures(rows), "sizes": size_figures(rows), "agreement": size_agreement(rows)}


def size_misses(rows: list[dict]) -> list[dict]:
    """The measured lesions over SIZE_FLOOR_MM with an axis off by more than
    SIZE_TOLERANCE, each with its axes' signed errors (``long_error``, ``short_error``)."""
    misses = []
    for row in rows:
        if row["long_mm"] <= SIZE_FLOOR_MM or "measured_long" not in row:
            continue
        long_error = row["measured_long"] / row["long_mm"] - 1
        short_error = row["measured_short"] / row["short_mm"] - 1
        if max(abs(long_error), abs(short_error)) > SIZE_TOLERANCE:
            misses.append({**row, "long_error": long_error, "short_error": short_error})
    return misses


def _class_figures(rows: list[dict]) -> dict:
    malignant = np.array([r["class"] == "malignant" for r in rows], bool)
    found = [r for r in rows if r.get("p") is not None]
    kinds = sorted({r["kind"] for r in rows})
    return {
        "class_auc": round(auc(np.array([r["class"] == "malignant" for r in found]),
                               np.array([r["p"] for r in found])), 4) if found else None,
        "class_lesions": len(found),
        "class_auc_at_truth_centre": round(auc(malignant, np.array([r["centre_p"]
                                                                     for r in rows])), 4),
        "class_auc_by_kind": {k: round(auc(np.array([r["class"] == "malignant" for r in found
                                                     if r["kind"] == k]),
                                           np.array([r["p"] for r in found
                                                     if r["kind"] == k])), 4) for k in kinds},
        "class_accuracy": round(float(np.mean([(r["p"] >= 0.5) == (r["class"] == "malignant")
                                               for r in found])), 4) if found else None}


def size_figures(rows: list[dict]) -> dict:
    """Within-tolerance shares and median errors of the measured axes."""
    large = [r for r in rows if r["long_mm"] > SIZE_FLOOR_MM]
    measured = [r for r in large if "measured_long" in r]
    if not measured:
        return {"lesions_over_5mm": len(large), "measured": 0}
    long_err = np.array([_error(r["measured_long"], r["long_mm"]) for r in measured])
    short_err = np.array([_error(r["measured_short"], r["short_mm"]) for r in measured])
    long_mm = np.array([abs(r["measured_long"] - r["long_mm"]) for r in measured])
    every = [r for r in rows if "measured_long" in r]
    all_err = np.array([_error(r["measured_long"], r["long_mm"]) for r in every])
    within = (long_err <= SIZE_TOLERANCE) & (short_err <= SIZE_TOLERANCE)
    return {"lesions_over_5mm": len(large), "measured": len(measured),
            "long_axis_within_15pct": round(float((long_err <= SIZE_TOLERANCE).mean()), 4),
            "short_axis_within_15pct": round(float((short_err <= SIZE_TOLERANCE).mean()), 4),
            "both_within_15pct": round(float(within.mean()), 4),
            "both_within_15pct_of_all_over_5mm": round(float(within.sum()) / len(large), 4),
            "median_long_axis_error_pct": round(100 * float(np.median(long_err)), 2),
            "median_short_axis_error_pct": round(100 * float(np.median(short_err)), 2),
            "median_long_axis_error_mm": round(float(np.median(long_mm)), 2),
            "p95_long_axis_error_pct": round(100 * float(np.percentile(long_err, 95)), 2),
            "measured_all_sizes": len(every),
            "median_long_axis_error_pct_all_sizes": round(100 * float(np.median(all_err)), 2)}


def _wilson_lower(successes: int, n: int, z: float = 1.645) -> float:
    """One-sided 95 % lower confidence bound of a share (Wilson's score interval)."""
    if n == 0:
        return 0.0
    share, z2 = successes / n, z * z
    centre = share + z2 / (2 * n)
    margin = z * math.sqrt(share * (1 - share) / n + z2 / (4 * n * n))
    return (centre - margin) / (1 + z2 / n)


def size_agreement(rows: list[dict]) -> dict:
    """How the box's axes agree with truth, as a measuring instrument's accuracy is stated
    (lesions over SIZE_FLOOR_MM that were measured; the error is measured / truth - 1).

    Per axis: the bias (mean error) and the 95 % limits of agreement, both Bland and
    Altman's (bias ± 1.96 SD) and, since the errors have heavier tails than a normal
    distribution, the 2.5th and 97.5th percentiles, which bound 95 % of the lesions
    whatever their distribution. Then the share of lesions with both axes within
    SIZE_TOLERANCE and its one-sided 95 % lower confidence bound (Wilson), for rows that
    are independent lesions (one scan: rescans of the same lesions are not)."""
    measured = [r for r in rows if r["long_mm"] > SIZE_FLOOR_MM and "measured_long" in r]
    if not measured:
        return {"measured": 0}
    out: dict = {"measured": len(measured)}
    errors = {}
    for axis in ("long", "short"):
        error = np.array([r[f"measured_{axis}"] / r[f"{axis}_mm"] - 1 for r in measured])
        errors[axis] = error
        bias, sd = float(error.mean()), float(error.std(ddof=1)) if len(error) > 1 else 0.0
        out[f"{axis}_axis"] = {
            "bias_pct": round(100 * bias, 2),
            "limits_of_agreement_pct": [round(100 * (bias - 1.96 * sd), 2),
                                        round(100 * (bias + 1.96 * sd), 2)],
            "central_95pct_of_errors_pct": [round(100 * float(np.percentile(error, 2.5)), 2),
                                            round(100 * float(np.percentile(error, 97.5)), 2)],
        }
    within = int(((np.abs(errors["long"]) <= SIZE_TOLERANCE)
                  & (np.abs(errors["short"]) <= SIZE_TOLERANCE)).sum())
    out["both_within_15pct"] = round(within / len(measured), 4)
    out["both_within_15pct_lower_95pct_bound"] = round(_wilson_lower(within, len(measured)), 4)
    return out


# -- the validated range ------------------------------------------------------------------


def real_images(shape: tuple[int, ...], mean: float, std: float, max_frames: int = 8
                ) -> list[tuple[str, int, np.ndarray]]:
    """pydicom's real CT and MR test files as model inputs, decoded exactly as the box does
    (``imaging.decode``, then ``letterbox_grey``): (file, frame, input [1,1,H,W]) per frame.
    A file this pydicom cannot decode is left out."""
    from pydicom.data import get_testdata_file

    from engine.imaging.decode import DecodeError, decode
    from engine.imaging.preprocess import letterbox_grey
    from engine.settings import LimitsConfig

    rows = []
    for name in REAL_FILES:
        path = get_testdata_file(name)
        if path is None:
            continue
        try:
            image = decode(Path(path), LimitsConfig(), max_frames)
        except DecodeError:
            continue
        for frame, index in zip(image.frames, image.frame_indices, strict=True):
            rows.append((name, index, letterbox_grey(frame, shape, mean, std, {})[0]))
    return rows


def range_report(section: dict, phantoms: np.ndarray, real: list[tuple[str, int]],
                 real_features: np.ndarray) -> dict:
    """Share of held-out phantoms outside the validated range, and each real file's frames
    outside it (with their distance over the threshold)."""
    mean, inverse = np.asarray(section["mean"]), np.asarray(section["inverse_covariance"])
    threshold = float(section["threshold"])
    phantom_d = mahalanobis_squared(phantoms, mean, inverse)
    real_d = mahalanobis_squared(real_features, mean, inverse) if len(real) else np.zeros(0)
    files: dict[str, dict] = {}
    for (name, _), d in zip(real, real_d, strict=True):
        entry = files.setdefault(name, {"frames": 0, "flagged": 0, "min_ratio": math.inf})
        entry["frames"] += 1
        entry["flagged"] += int(d > threshold)
        entry["min_ratio"] = min(entry["min_ratio"], round(float(d / threshold), 2))
    return {"phantoms": len(phantoms),
            "phantoms_flagged": round(float(np.mean(phantom_d > threshold)), 4),
            "real_files": files,
            "real_all_flagged": bool(len(real_d)) and bool(np.all(real_d > threshold))}
