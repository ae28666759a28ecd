"""Where an image lies in the patient and how large its pixels are, read off its header.

* ``slice_geometry``: Image Position and Orientation (Patient), Slice Thickness, Spacing
  Between Slices and Frame of Reference UID (top level, then an enhanced object's
  functional groups), what a series is read as a volume by (``inference/volume.py``);
* ``header_geometry``: the same with the pixel spacing and frame count, from a header
  alone (the study's SR reads its series from the files);
* ``pixel_spacing``: (row, column) mm per pixel and where it comes from: Pixel Spacing,
  the functional groups', Imager Pixel Spacing, or an ultrasound region's deltas.

A value missing, of the wrong length, not a number or not finite is None; never an
exception.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from engine.imaging.dataset_values import integer as _int
from engine.imaging.dataset_values import number as _float
from engine.imaging.dataset_values import text as _text
from engine.imaging.dataset_values import value as _get


def slice_geometry(ds: Dataset) -> dict[str, Any]:
    """Image Position and Orientation (Patient), Slice Thickness, Spacing Between Slices
    and Frame of Reference UID, as ``DecodedImage``'s fields of those names.

    The top level first, then the functional groups of an enhanced object (shared, then
    the first frame's). A value that is missing, of the wrong length, not a number, not
    finite or (thickness, spacing) not above zero is None; never an exception.
    """
    return {
        "image_position": _geometry_vector(ds, "PlanePositionSequence",
                                           "ImagePositionPatient", 3),
        "image_orientation": _geometry_vector(ds, "PlaneOrientationSequence",
                                              "ImageOrientationPatient", 6),
        "slice_thickness": _geometry_length(ds, "SliceThickness"),
        "spacing_between_slices": _geometry_length(ds, "SpacingBetweenSlices"),
        "frame_of_reference_uid": _text(ds, "FrameOfReferenceUID", 64),
    }


def header_geometry(ds: Dataset) -> dict[str, Any]:
    """``DecodedImage.geometry()`` read off a header alone (no pixels decoded): for
    whoever reads a series as a volume from the files (the study's SR)."""
    spacing, source = pixel_spacing(ds)
    frames = _int(ds, "NumberOfFrames") if "NumberOfFrames" in ds else 1
    return {
        **{key: as_list(value) if isinstance(value, tuple) else value
           for key, value in slice_geometry(ds).items()},
        "pixel_spacing": as_list(spacing) if source == "Pixel Spacing" else None,
        "frames": frames if frames is not None and frames > 0 else None,
    }


def _geometry_sources(ds: Dataset, sequence: str) -> list[Dataset]:
    """The data set itself, then the ``sequence`` items of its shared and first
    per-frame functional groups."""
    sources = [ds]
    for groups_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        try:
            groups = _get(ds, groups_name)
            items = _get(groups[0], sequence) if groups else None
            if items:
                sources.append(items[0])
        except (TypeError, IndexError, AttributeError):
            continue
    return sources


def _geometry_vector(ds: Dataset, sequence: str, keyword: str,
                     length: int) -> tuple[float, ...] | None:
    """The first well-formed ``keyword`` of ``length`` finite numbers, or None."""
    for source in _geometry_sources(ds, sequence):
        numbers = _finite_numbers(_get(source, keyword), length)
        if numbers is not None:
            return numbers
    return None


def _geometry_length(ds: Dataset, keyword: str) -> float | None:
    """A length in mm above zero, at the top level or in the pixel measures, or None."""
    for source in _geometry_sources(ds, "PixelMeasuresSequence"):
        value = _get(source, keyword)
        several = isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"
        number = None if several else _float(value)
        if number is not None and number > 0:
            return number
    return None


def _finite_numbers(value: Any, length: int) -> tuple[float, ...] | None:
    """Exactly ``length`` finite numbers from a multi-valued attribute, or None."""
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError, OverflowError):
        return None
    if len(numbers) != length or not all(math.isfinite(n) for n in numbers):
        return None
    return numbers


def as_list(values: tuple[float, ...] | None) -> list[float] | None:
    """A vector as a JSON-ready list (None stays None)."""
    return None if values is None else [float(v) for v in values]


#: ultrasound region physical units: 3 is centimetres (PS3.3 C.8.5.5.1.15)
_US_CENTIMETRES = 3


def _us_region_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) mm per pixel from the first ultrasound region calibrated in cm."""
    for region in _get(ds, "SequenceOfUltrasoundRegions") or ():
        try:
            units = (int(_get(region, "PhysicalUnitsXDirection")),
                     int(_get(region, "PhysicalUnitsYDirection")))
            delta_x = abs(float(_get(region, "PhysicalDeltaX"))) * 10.0
            delta_y = abs(float(_get(region, "PhysicalDeltaY"))) * 10.0
        except (TypeError, ValueError):
            continue
        if units == (_US_CENTIMETRES, _US_CENTIMETRES) and delta_x > 0 and delta_y > 0:
            return delta_y, delta_x
    return None


def pixel_spacing(ds: Dataset) -> tuple[tuple[float, float] | None, str]:
    """(row, column) mm per pixel and where it comes from; (None, "") when uncalibrated.

    Pixel Spacing (the patient plane), then the functional groups' (enhanced
    objects), then Imager Pixel Spacing (at the detector: a projection
    radiograph's, magnification not corrected), then an ultrasound region's
    physical deltas.
    """
    candidates = [(_get(ds, "PixelSpacing"), "Pixel Spacing")]
    for sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = _get(ds, sequence)
        measures = _get(groups[0], "PixelMeasuresSequence") if groups else None
        if measures:
            candidates.append((_get(measures[0], "PixelSpacing"), "Pixel Spacing"))
    candidates.append((_get(ds, "ImagerPixelSpacing"), "Imager Pixel Spacing"))
    candidates.append((_us_region_spacing(ds), "ultrasound region"))
    for value, source in candidates:
        try:
            row, column = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if row > 0 and column > 0 and np.isfinite(row) and np.isfinite(column):
            return (row, column), source
    return None, ""


