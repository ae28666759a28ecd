"""Score an image against its model's validated range (the out-of-distribution guard).

The package's ``ood`` section (``clinibox_common/contracts/heads.py``) holds the
mean and inverse covariance of what the validation data looked like to the
model, and the squared Mahalanobis distance above which an image is unlike it.
What is measured: the input's own statistics (:func:`image_statistics`,
computed here in float whatever the artifact's precision) when the section
names them, then a features output of the model. Every analysed frame is
scored; the instance is ``outside_validated_range`` when at least half of its
judged frames lie beyond the threshold; otherwise it is judged on the frames
within the range (``inference/runner.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from clinibox_common.contracts.heads import (
    ImageStatistics,
    ValidatedRange,
    parse_validated_range,
)
from clinibox_common.contracts.reasons import Reason, ReasonCode


@dataclass(frozen=True)
class RangeScore:
    """One frame's distance from the validated data, and the limit it is judged by."""

    distance: float
    threshold: float

    @property
    def outside(self) -> bool:
        """True when the frame lies beyond the validated range."""
        return not self.distance <= self.threshold  # NaN counts as outside

    @property
    def ratio(self) -> float:
        """The distance as a multiple of the limit (above 1: outside)."""
        return self.distance / self.threshold


def image_statistics(grey: np.ndarray, statistics: ImageStatistics) -> np.ndarray:
    """What an image looks like as a whole: the share of its pixels whose grey lies above
    each of ``statistics.levels``, then the mean absolute difference between neighbouring
    pixels, down and across, after averaging blocks of each of ``statistics.scales``
    pixels (texture and noise at that scale). ``grey`` is [H, W] or [C, H, W] (channels
    averaged); a scale larger than the image gives 0."""
    g = np.asarray(grey, dtype=np.float32)
    if g.ndim == 3:
        g = g.mean(axis=0)
    shares = [float(np.count_nonzero(g > level)) / max(g.size, 1)
              for level in statistics.levels]
    texture = []
    for k in statistics.scales:
        h, w = g.shape[0] // k, g.shape[1] // k
        pooled = _block_means(g, k) if k > 1 else g
        texture.append(float(np.abs(np.diff(pooled, axis=0)).mean()) if h > 1 else 0.0)
        texture.append(float(np.abs(np.diff(pooled, axis=1)).mean()) if w > 1 else 0.0)
    return np.asarray(shares + texture, dtype=np.float64)


def _block_means(g: np.ndarray, k: int) -> np.ndarray:
    """The means of ``g``'s whole k × k blocks: k² strided sums, many times faster than a
    reduction over the blocks' axes for the same float32 values (to the last bit or so)."""
    h, w = g.shape[0] // k, g.shape[1] // k
    total = np.zeros((h, w), np.float32)
    for i in range(k):
        for j in range(k):
            total += g[i: h * k: k, j: w * k: k]
    return total / np.float32(k * k)


class RangeGuard:
    """A package's validated range, ready to score frames."""

    def __init__(self, validated: ValidatedRange, input_mean: float = 0.0,
                 input_std: float = 1.0) -> None:
        self.output = validated.output
        self.statistics = validated.image_statistics
        self.mean = np.asarray(validated.mean, dtype=np.float64)
        self.inverse = np.asarray(validated.inverse_covariance, dtype=np.float64)
        self.threshold = validated.threshold
        self.input_mean, self.input_std = input_mean, input_std

    @classmethod
    def from_manifest(cls, manifest: dict) -> RangeGuard | None:
        """The guard of a manifest, or None when its package declares no range."""
        if "ood" not in manifest:
            return None
        normalisation = (manifest.get("inputs") or [{}])[0].get("normalisation", {})
        return cls(parse_validated_range(manifest["ood"]),
                   float(normalisation.get("mean", 0.0)), float(normalisation.get("std", 1.0)))

    def measure(self, outputs: dict[str, np.ndarray],
                model_input: np.ndarray | None = None) -> np.ndarray:
        """The values the range is measured on: the statistics of ``model_input`` (the
        normalised tensor [1, C, H, W] the model was given) when the range names them,
        then the features output; ValueError when one is missing."""
        parts = []
        if self.statistics is not None:
            if model_input is None:
                raise ValueError("the validated range measures the model's input; none given")
            grey = np.asarray(model_input, np.float32)[0] * self.input_std + self.input_mean
            parts.append(image_statistics(grey, self.statistics))
        if self.output is not None:
            if self.output not in outputs:
                raise ValueError(f"model output {self.output!r} (the validated range's "
                                 f"features) is missing; got {sorted(outputs)}")
            parts.append(np.asarray(outputs[self.output], dtype=np.float64).reshape(-1))
        return np.concatenate(parts)

    def score(self, outputs: dict[str, np.ndarray],
              model_input: np.ndarray | None = None) -> RangeScore:
        """Squared Mahalanobis distance of a frame (:meth:`measure`)."""
        values = self.measure(outputs, model_input)
        if values.shape != self.mean.shape:
            raise ValueError(f"the validated range measures {self.mean.size} values; this "
                             f"frame gave {values.size}")
        d = values - self.mean
        return RangeScore(float(d @ self.inverse @ d), self.threshold)


def instance_outside(scores: list[RangeScore]) -> bool:
    """An instance is outside its model's range when at least half of its judged frames
    are: a cine whose frames mostly look unlike the validation data gets no verdict,
    even if a few frames happen to fall inside."""
    return bool(scores) and 2 * sum(s.outside for s in scores) >= len(scores)


def outside_reason(scores: list[RangeScore]) -> Reason:
    """The reason for an instance outside the range: how far its nearest judged frame lies
    beyond the limit (``ratio``, to one decimal; "inf" or "nan" when not a number)."""
    nearest = min((s.ratio for s in scores), default=float("inf"))
    ratio: float | str = round(nearest, 1) if math.isfinite(nearest) else f"{nearest:.1f}"
    return Reason(ReasonCode.OUTSIDE_VALIDATED_RANGE, {"ratio": ratio})
