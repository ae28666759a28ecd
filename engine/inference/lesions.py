"""Lesion records: what a clinician can act on, from the findings of one instance.

A lesion record carries its label, its probability and every class
probability the model gives, its box in source pixels, the frame it was seen
on, and its size: long and short axis and area, in millimetres when the image
is calibrated (Pixel Spacing, Imager Pixel Spacing or an ultrasound region's
physical deltas, ``imaging/decode.py``) and in pixels otherwise, said plainly
with ``units``.

When the model segments, the size is measured on the lesion's mask the way a
radiologist measures it (RECIST: the long axis is the largest diameter, the
short axis the largest extent perpendicular to it; ``inference/masks.py``),
the area is the mask's, the record carries the mask's outline (``contour``)
and ``size_from`` is "mask". Otherwise the size is read off the box: the axes
are its width and height, the area is the ellipse inscribed in it
(π/4 · w · h), and ``size_from`` says so ("box").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from engine.inference.masks import Axes, axes_at
from engine.inference.postprocess import Box


@dataclass(frozen=True)
class Lesion:
    """One lesion as the box reports it (``clinibox results --json``, the viewer, the PDF)."""

    label: str
    probability: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in source pixels
    frame: int
    long_axis_px: float
    short_axis_px: float
    area_px2: float
    #: null (None) when the image has no calibration
    long_axis_mm: float | None
    short_axis_mm: float | None
    area_mm2: float | None
    units: str  # "mm" or "px"
    size_from: str = "box"
    class_probabilities: dict[str, float] = field(default_factory=dict)
    #: the mask's outline, (x, y) source pixels (empty without a segmentation)
    contour: tuple[tuple[float, float], ...] = ()
    #: every frame the lesion was seen on (tracked across a cine); ``frame`` is its best
    frames: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready values (the results contract)."""
        record = {f.name: getattr(self, f.name) for f in fields(self)}  # no deep copies
        record["class_probabilities"] = dict(self.class_probabilities)
        record["box"] = [round(v, 1) for v in self.box]
        record["contour"] = [[round(x, 1), round(y, 1)] for x, y in self.contour]
        record["frames"] = list(self.frames or (self.frame,))
        return record


def lesion_from_box(box: Box, frame: int, spacing: tuple[float, float] | None,
                    class_probabilities: dict[str, float] | None = None) -> Lesion:
    """A lesion record from a detection box (and its mask, when the model segments);
    ``spacing`` is (row, column) mm per pixel. The box's own class probabilities
    win over the image's (``class_probabilities``)."""
    width, height = max(0.0, box.x1 - box.x0), max(0.0, box.y1 - box.y0)
    if box.mask is not None and box.mask.any():
        in_px, *calibrated = axes_at(box.mask, [(1.0, 1.0)] + ([spacing] if spacing else []))
        long_px, short_px, area_px = in_px.long_axis, in_px.short_axis, in_px.area
        in_mm = calibrated[0] if calibrated else None
        size_from = "mask"
    else:
        long_px, short_px = max(width, height), min(width, height)
        area_px = math.pi / 4 * width * height
        in_mm: Axes | None = None
        if spacing is not None:
            row_mm, column_mm = spacing
            width_mm, height_mm = width * column_mm, height * row_mm
            in_mm = Axes(max(width_mm, height_mm), min(width_mm, height_mm),
                         math.pi / 4 * width_mm * height_mm)
        size_from = "box"
    mm = (None, None, None) if in_mm is None else (
        round(in_mm.long_axis, 1), round(in_mm.short_axis, 1), round(in_mm.area, 1))
    return Lesion(
        label=box.label, probability=round(float(box.score), 4),
        box=(box.x0, box.y0, box.x1, box.y1), frame=frame,
        long_axis_px=round(long_px, 1), short_axis_px=round(short_px, 1),
        area_px2=round(area_px, 1),
        long_axis_mm=mm[0], short_axis_mm=mm[1], area_mm2=mm[2],
        units="mm" if spacing is not None else "px", size_from=size_from,
        class_probabilities=dict(box.class_probabilities or class_probabilities or {}),
        contour=tuple(box.contour),
    )


def lesion_records(boxes: list[Box], frame: int, spacing: tuple[float, float] | None,
                   class_probabilities: dict[str, float] | None = None) -> list[Lesion]:
    """Every box of the key frame as a lesion record, in the boxes' order (their numbers)."""
    return [lesion_from_box(b, frame, spacing, class_probabilities) for b in boxes]
