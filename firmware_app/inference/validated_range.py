"""Score an image against its model's validated range (the out-of-distribution guard).

The package's ``ood`` section (``firmware_app/contracts/heads.py``) holds the
mean and inverse covariance of a features output on the validation data and
the squared Mahalanobis distance above which an image is unlike it. Every
analysed frame is scored; the instance is ``outside_validated_range`` when at
least half of its judged frames lie beyond the threshold; otherwise it is judged
on the frames within the range (``inference/runner.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_app.contracts.heads import ValidatedRange, parse_validated_range

OUTSIDE_REASON = ("The image is unlike the images this model was validated on "
                  "(its features lie {ratio:.1f}× beyond the validated limit); "
                  "the model's answer cannot be trusted for it")


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


class RangeGuard:
    """A package's validated range, ready to score frames."""

    def __init__(self, validated: ValidatedRange) -> None:
        self.output = validated.output
        self.mean = np.asarray(validated.mean, dtype=np.float64)
        self.inverse = np.asarray(validated.inverse_covariance, dtype=np.float64)
        self.threshold = validated.threshold

    @classmethod
    def from_manifest(cls, manifest: dict) -> RangeGuard | None:
        """The guard of a manifest, or None when its package declares no range."""
        if "ood" not in manifest:
            return None
        return cls(parse_validated_range(manifest["ood"]))

    def score(self, outputs: dict[str, np.ndarray]) -> RangeScore:
        """Squared Mahalanobis distance of a frame's features; ValueError when missing."""
        if self.output not in outputs:
            raise ValueError(f"model output {self.output!r} (the validated range's features) "
                             f"is missing; got {sorted(outputs)}")
        features = np.asarray(outputs[self.output], dtype=np.float64).reshape(-1)
        if features.shape != self.mean.shape:
            raise ValueError(f"features output {self.output!r} has {features.size} values; "
                             f"the validated range has {self.mean.size}")
        d = features - self.mean
        return RangeScore(float(d @ self.inverse @ d), self.threshold)


def instance_outside(scores: list[RangeScore]) -> bool:
    """An instance is outside its model's range when at least half of its judged frames
    are: a cine whose frames mostly look unlike the validation data gets no verdict,
    even if a few frames happen to fall inside."""
    return bool(scores) and 2 * sum(s.outside for s in scores) >= len(scores)


def outside_reason(scores: list[RangeScore]) -> str:
    """The sentence for an instance whose judged frames all lie outside the range."""
    nearest = min((s.ratio for s in scores), default=float("inf"))
    return OUTSIDE_REASON.format(ratio=nearest)
