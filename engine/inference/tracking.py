"""Lesions across frames: the same lesion in several frames of a cine is one lesion.

Boxes of consecutive analysed frames are linked when they overlap (IoU at
least ``MIN_IOU``); a track may skip one analysed frame. Each track becomes
one lesion record at its best frame (its highest score), with every frame it
was seen on. The study's summary counts the lesions and gives the largest
diameter and the highest probability of each class.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from engine.inference.lesions import Lesion, lesion_from_box
from engine.inference.postprocess import Box, FrameFindings, iou

MIN_IOU = 0.3
#: a track stays open this many analysed frames after it was last seen
MAX_GAP = 2


def track_lesions(frames: list[tuple[int, FrameFindings]], key_frame: int,
                  spacing: tuple[float, float] | None,
                  class_probabilities: dict[str, float] | None = None) -> list[Lesion]:
    """One lesion record per track, at its best frame.

    ``frames`` are (frame index, findings) in analysis order. The lesions seen
    on ``key_frame`` come first, in its boxes' order (the numbers drawn on
    it); the others follow, most probable first.
    """
    tracks: list[list[tuple[int, int, Box]]] = []  # (position, frame, box)
    for position, (frame, findings) in enumerate(frames):
        taken: set[int] = set()
        for box in sorted(findings.boxes, key=lambda b: -b.score):
            best, best_iou = None, MIN_IOU
            for number, track in enumerate(tracks):
                last_position, _, last_box = track[-1]
                if number in taken or not 0 < position - last_position <= MAX_GAP:
                    continue
                overlap = iou(box, last_box)
                if overlap >= best_iou:
                    best, best_iou = number, overlap
            if best is None:
                tracks.append([(position, frame, box)])
                taken.add(len(tracks) - 1)
            else:
                tracks[best].append((position, frame, box))
                taken.add(best)
    key_boxes = next((f.boxes for index, f in frames if index == key_frame), [])

    def order(track: list[tuple[int, int, Box]]) -> tuple[int, float]:
        on_key = [i for i, b in enumerate(key_boxes)
                  if any(frame == key_frame and box is b for _, frame, box in track)]
        return (on_key[0] if on_key else len(key_boxes), -max(b.score for _, _, b in track))

    lesions = []
    for track in sorted(tracks, key=order):
        _, frame, box = max(track, key=lambda item: item[2].score)
        record = lesion_from_box(box, frame, spacing, class_probabilities)
        lesions.append(replace(record, frames=tuple(sorted({f for _, f, _ in track}))))
    return lesions


def study_summary(lesions: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of a study's lesion records (as stored): how many, the largest
    diameter (mm when every lesion is calibrated, else pixels) and the highest
    probability of each class."""
    calibrated = all(lesion.get("long_axis_mm") is not None for lesion in lesions)
    key = "long_axis_mm" if calibrated else "long_axis_px"
    largest = max((float(lesion[key]) for lesion in lesions if lesion.get(key) is not None),
                  default=None)
    highest: dict[str, float] = {}
    for lesion in lesions:
        for label, p in dict(lesion.get("class_probabilities") or {}).items():
            highest[label] = max(highest.get(label, 0.0), float(p))
    return {"lesions": len(lesions), "largest_diameter": largest,
            "units": "mm" if calibrated else "px", "highest_class_probabilities": highest}
