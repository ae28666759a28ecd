"""Aggregate findings: frames → instance → study.

An instance's probability is its most suspicious frame's (the key frame,
whose boxes and heatmap are kept); a study's is its most suspicious
instance's. Decisions use the manifest's operating thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from firmware_app.inference.postprocess import Box, FrameFindings


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
    )


@dataclass(frozen=True)
class StudySummary:
    """The roll-up of every processed instance of one study."""

    instances: int
    max_probability: float
    findings: int
    alert: bool
    top_instance_id: int | None
    warnings: int


def aggregate_study(rows: list[tuple[int, float, bool, bool, int]]) -> StudySummary:
    """Roll up (instance id, probability, finding, alert, warning count) rows of one study."""
    if not rows:
        return StudySummary(0, 0.0, 0, False, None, 0)
    top = max(rows, key=lambda r: r[1])
    return StudySummary(
        instances=len(rows),
        max_probability=float(top[1]),
        findings=sum(1 for r in rows if r[2]),
        alert=any(r[3] for r in rows),
        top_instance_id=top[0],
        warnings=sum(r[4] for r in rows),
    )
