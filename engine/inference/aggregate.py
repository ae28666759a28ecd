"""Aggregate findings: frames → instance (and, in results.py, instance → study).

An instance's probability is its most suspicious frame's (the key frame,
whose boxes and heatmap are kept). A study's is its most suspicious
instance's; that roll-up is one SQL aggregate in ``results.py``, kept where
the instances are. Decisions use the manifest's operating thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clinibox_common.contracts.reasons import Reason
from clinibox_common.contracts.statuses import AssessmentKind
from engine.inference.lesions import Lesion
from engine.inference.postprocess import Box, FrameFindings


@dataclass
class InstanceFindings:
    """The result for one received instance."""

    probability: float
    finding: bool
    alert: bool
    boxes: list[Box]
    heatmap: np.ndarray | None
    key_frame: int
    frame_probabilities: dict[int, float] = field(default_factory=dict)
    #: every class probability of the key frame (classifier models; empty for detectors)
    classes: dict[str, float] = field(default_factory=dict)
    #: ``inference/assessment.py``: finding, no_finding, not_assessable, outside_validated_range
    assessment: str = AssessmentKind.NO_FINDING
    #: why the box gives no verdict (not_assessable, outside_validated_range): reason codes
    assessment_reason: list[Reason] = field(default_factory=list)
    #: the key frame's lesion records (``inference/lesions.py``)
    lesions: list[Lesion] = field(default_factory=list)


def aggregate_frames(
    frames: list[tuple[int, FrameFindings]], thresholds: dict[str, float]
) -> InstanceFindings:
    """Combine per-frame findings (frame index, findings) into the instance result."""
    if not frames:
        raise ValueError("an instance needs at least one inferred frame")
    key_index, key = max(frames, key=lambda item: item[1].probability)
    probability = float(key.probability)
    return InstanceFindings(
        probability=probability,
        finding=probability >= thresholds.get("finding", 0.5),
        alert=probability >= thresholds.get("alert", 1.01),
        boxes=list(key.boxes),
        heatmap=key.heatmap,
        key_frame=key_index,
        frame_probabilities={index: float(f.probability) for index, f in frames},
        classes=dict(key.classes),
        assessment=(AssessmentKind.FINDING if probability >= thresholds.get("finding", 0.5)
                    else AssessmentKind.NO_FINDING),
    )
