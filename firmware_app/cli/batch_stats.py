"""Diagnostic accuracy with 95 % intervals: sensitivity, specificity (Wilson) and AUC (DeLong).

Pure arithmetic on truth labels, predictions and scores (numpy only):

* a proportion (sensitivity = TP / (TP + FN), specificity = TN / (TN + FP)) with its
  Wilson score interval (Wilson 1927; Newcombe 1998, method 3), which stays inside
  [0, 1] and is sensible at 0/n and n/n;
* the area under the ROC curve as the Mann–Whitney statistic (a tie counts one
  half), its standard error by DeLong, DeLong and Clarke-Pearson (1988), and the
  interval AUC ± z·SE clipped to [0, 1] (as pROC's ``ci.auc(method = "delong")``).
  With every positive scored above every negative the DeLong error is 0 and the
  interval collapses to the point: read it with the counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: the two-sided 95 % standard normal quantile
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Proportion:
    """``successes`` of ``total`` with its point estimate and interval (None when total is 0)."""

    successes: int
    total: int
    value: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class AreaUnderCurve:
    """The ROC AUC of ``positives`` against ``negatives`` scores, its DeLong standard error
    and interval (None without a positive or a negative)."""

    positives: int
    negatives: int
    value: float | None
    standard_error: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Accuracy:
    """Sensitivity and specificity at the operating point and the AUC, with their counts."""

    true_positives: int
    false_negatives: int
    true_negatives: int
    false_positives: int
    sensitivity: Proportion
    specificity: Proportion
    auc: AreaUnderCurve


def wilson_interval(successes: int, total: int, z: float = Z95) -> Proportion:
    """``successes`` of ``total`` with its Wilson score interval."""
    if total <= 0:
        return Proportion(successes, total, None, None, None)
    if not 0 <= successes <= total:
        raise ValueError(f"{successes} successes of {total}")
    p = successes / total
    z2 = z * z
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = z / (1 + z2 / total) * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total))
    return Proportion(successes, total, p, max(0.0, centre - half), min(1.0, centre + half))


def _placements(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """ψ[i, j]: 1 when positive i scores above negative j, ½ on a tie, else 0."""
    difference = positives[:, None] - negatives[None, :]
    return (difference > 0) + 0.5 * (difference == 0)


def auc_delong(positives: Sequence[float], negatives: Sequence[float], z: float = Z95
               ) -> AreaUnderCurve:
    """The ROC AUC (Mann–Whitney) with its DeLong standard error and interval."""
    pos = np.asarray(positives, dtype=np.float64)
    neg = np.asarray(negatives, dtype=np.float64)
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        return AreaUnderCurve(m, n, None, None, None, None)
    psi = _placements(pos, neg)
    auc = float(psi.mean())
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)  # structural components
    s10 = float(np.var(v10, ddof=1)) if m > 1 else 0.0
    s01 = float(np.var(v01, ddof=1)) if n > 1 else 0.0
    se = math.sqrt(s10 / m + s01 / n)
    return AreaUnderCurve(m, n, auc, se, max(0.0, auc - z * se), min(1.0, auc + z * se))


def diagnostic_accuracy(truth: Sequence[int], predicted: Sequence[bool],
                        scores: Sequence[float]) -> Accuracy:
    """Sensitivity and specificity of ``predicted`` (the operating point) and the AUC of
    ``scores`` against ``truth`` (1 = disease present, 0 = absent), one entry per case."""
    if not len(truth) == len(predicted) == len(scores):
        raise ValueError("truth, predictions and scores differ in length")
    actual = np.asarray(truth, dtype=np.int64)
    said = np.asarray(predicted, dtype=bool)
    score = np.asarray(scores, dtype=np.float64)
    if not np.isin(actual, (0, 1)).all():
        raise ValueError("truth labels must be 0 or 1")
    diseased, healthy = actual == 1, actual == 0
    tp, fn = int((said & diseased).sum()), int((~said & diseased).sum())
    tn, fp = int((~said & healthy).sum()), int((said & healthy).sum())
    return Accuracy(tp, fn, tn, fp, wilson_interval(tp, tp + fn), wilson_interval(tn, tn + fp),
                    auc_delong(score[diseased], score[healthy]))
