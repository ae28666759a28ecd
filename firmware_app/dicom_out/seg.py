"""Binary Segmentation objects of the lesions' outlines (highdicom.seg).

Each lesion's contour (a polygon of source pixel positions, the segmenting
model's mask outline) is filled on its frame; there is one segment per lesion
class present (label: the class; property type: its code, ``codes.py``),
made AUTOMATICALLY by the model (algorithm name and version).

highdicom needs the source images of one SEG to be one series of one size in
one frame of reference, so single-frame images that share a series, a size
and a Frame of Reference get one SEG together, every other image one of its
own. A multi-frame image without a frame of reference or plane positions (an
ultrasound cine) cannot be segmented by highdicom 0.28 beyond its first frame
("Only a single frame is supported"), so such an image gets no SEG: its
lesions' outlines still reach the PACS in the SR (SCOORD on their frame) and
on the key image.

One bad image never takes the others' SEG with it. An image is left out of the
SEG, with a reason code in ``StudyInput.seg_left_out`` (the study's event log
says so), when its Pixel Spacing was no number (``no-pixel-spacing``), or when
it would join a series' SEG without an Image Orientation (Patient) of two unit,
orthogonal direction cosines (``source_header`` removed one of 5 values:
``no-image-orientation``; six that are no directions:
``invalid-image-orientation``). When highdicom still refuses a group (a CT
without the Frame of Reference its IOD requires, say), each of its images is
tried alone (up to ``MAX_ALONE``): those it refuses alone are left out
(``seg-refused``) and the others still get their SEG. The study's other
documents go out all the same.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import highdicom as hd
import numpy as np
from highdicom.spatial import get_image_coordinate_system
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset

from firmware_app.dicom_out import codes
from firmware_app.dicom_out.source import (
    MANUFACTURER,
    ModelIdentity,
    ResultIds,
    Source,
    StudyInput,
)
from firmware_app.dicom_out.sr import CHARACTER_SET, class_of

SERIES_NUMBER = 9902
SERIES_DESCRIPTION = "clinibox lesion model segmentation"
log = logging.getLogger(__name__)

# why an image is left out of the SEG (``StudyInput.seg_left_out``; the others still go)
NO_PIXEL_SPACING = "no-pixel-spacing"
NO_ORIENTATION = "no-image-orientation"
INVALID_ORIENTATION = "invalid-image-orientation"
REFUSED = "seg-refused"
#: the most images of a group highdicom refused that are tried one by one (a larger group
#: is left out whole: each try costs a SEG's making, within the maker's time limit)
MAX_ALONE = 32
#: how far from unit length and from orthogonal direction cosines may be
COSINE_TOLERANCE = 0.05
#: what highdicom refuses or a source lacking what its IOD requires raises
_REFUSALS = (ValueError, AttributeError, KeyError, TypeError)


def segmentations(sources: list[Source], model: ModelIdentity, ids: ResultIds,
                  left_out: dict[str, str] | None = None) -> list[hd.seg.Segmentation]:
    """The SEG objects of one study version ([] when no lesion has a contour); ``left_out``
    receives the outlined images left out of them, by name, with their reason codes."""
    left_out = left_out if left_out is not None else {}
    groups: dict[tuple, list[Source]] = {}
    for source in sources:
        if not _contoured(source) or not _segmentable(source):
            continue
        reason = _unfit(source)
        if reason:
            log.warning("image %s left out of the DICOM SEG: %s", source.instance.name, reason)
            left_out[source.instance.name] = reason
            continue
        groups.setdefault(_group_key(source), []).append(source)
    out = []
    for members in groups.values():
        made = _segmentation_of_those_it_takes(members, model, ids, len(out) + 1, left_out)
        if made is not None:
            out.append(made)
    return out


def write_seg(study: StudyInput) -> list[Dataset]:
    """The SEG output's writer (``writers.DocumentWriter``): ``segmentations`` of the study
    version (none when no lesion has an outline); the images left out, with their reasons,
    in ``study.seg_left_out``."""
    return list(segmentations(study.sources, study.model, study.ids, study.seg_left_out))


def _segmentation_of_those_it_takes(members: list[Source], model: ModelIdentity,
                                    ids: ResultIds, number: int, left_out: dict[str, str]
                                    ) -> hd.seg.Segmentation | None:
    """The SEG of ``members``; where highdicom refuses it, the SEG of those it takes alone
    (the others in ``left_out``); None when none is left."""
    try:
        return _segmentation(members, model, ids, number)
    except _REFUSALS as exc:
        log.warning("no DICOM SEG for %s: %s", _members_key(members), exc)
    kept = []
    if 1 < len(members) <= MAX_ALONE:
        for source in members:
            try:
                _segmentation([source], model, ids, number)
            except _REFUSALS as exc:
                log.warning("image %s left out of the DICOM SEG: %s", source.instance.name, exc)
                continue
            kept.append(source)
    if kept and len(kept) < len(members):
        try:
            made = _segmentation(kept, model, ids, number)
        except _REFUSALS as exc:
            log.warning("no DICOM SEG for %s: %s", _members_key(kept), exc)
        else:
            left_out.update({s.instance.name: REFUSED for s in members if s not in kept})
            return made
    left_out.update({source.instance.name: REFUSED for source in members})
    return None


def _unfit(source: Source) -> str | None:
    """Why an outlined image cannot be in a SEG (None: it can): no Pixel Spacing; or no
    usable orientation where it would join a series' SEG (highdicom places each slice by
    its plane)."""
    if source.uncalibrated:  # its Pixel Spacing was no number: a SEG cannot place its mask
        return NO_PIXEL_SPACING
    ds = source.dataset
    if not _in_a_series(source):
        return None
    if "ImageOrientationPatient" not in ds:  # absent, or removed: not 6 values
        return NO_ORIENTATION
    return None if _directions(ds.ImageOrientationPatient) else INVALID_ORIENTATION


def _directions(cosines: Iterable[Any]) -> bool:
    """Whether ``cosines`` are a row and a column direction: two unit, orthogonal vectors."""
    try:
        values = np.asarray([float(v) for v in cosines], dtype=float)
    except (TypeError, ValueError):
        return False
    if values.shape != (6,) or not np.all(np.isfinite(values)):
        return False
    row, column = values[:3], values[3:]
    return bool(abs(np.linalg.norm(row) - 1) < COSINE_TOLERANCE
                and abs(np.linalg.norm(column) - 1) < COSINE_TOLERANCE
                and abs(float(row @ column)) < COSINE_TOLERANCE)


def rasterise(contour: list, rows: int, columns: int) -> np.ndarray:
    """The filled polygon of ``contour`` ([x, y] pixel positions) as a bool [rows, columns] mask.

    The outline's own pixels are inside, as in the model's mask it was traced from.
    """
    canvas = Image.new("1", (int(columns), int(rows)), 0)
    points = [(float(x), float(y)) for x, y in contour]
    if len(points) >= 3:
        ImageDraw.Draw(canvas).polygon(points, fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def _contoured(source: Source) -> bool:
    lesions = source.result.get("lesions") or []
    return any(len(lesion.get("contour") or []) >= 3 for lesion in lesions)


def _segmentable(source: Source) -> bool:
    """Whether highdicom can segment the image at all (not a cine without planes)."""
    return source.frames == 1 or get_image_coordinate_system(source.dataset) is not None


def _in_a_series(source: Source) -> bool:
    """Whether the image joins its series' SEG (a slice placed in a frame of reference)."""
    ds = source.dataset
    return (source.frames == 1 and "FrameOfReferenceUID" in ds
            and "ImagePositionPatient" in ds and not source.uncalibrated)


def _group_key(source: Source) -> tuple:
    ds = source.dataset
    if _in_a_series(source):  # one orientation per SEG: a tilted slice gets its own
        orientation = tuple(round(float(v), 3) for v in ds.ImageOrientationPatient)
        return ("series", str(ds.SeriesInstanceUID), int(ds.Rows), int(ds.Columns),
                str(ds.FrameOfReferenceUID), orientation)
    return ("image", str(ds.SOPInstanceUID))


def _segmentation(members: list[Source], model: ModelIdentity, ids: ResultIds,
                  number: int) -> hd.seg.Segmentation:
    classes: list[str] = []
    for source in members:
        for lesion in source.result.get("lesions") or []:
            if len(lesion.get("contour") or []) >= 3 and class_of(lesion) not in classes:
                classes.append(class_of(lesion))
    first = members[0].dataset
    rows, columns = int(first.Rows), int(first.Columns)
    frames = sum(source.frames for source in members)
    masks = np.zeros((frames, rows, columns, len(classes)), dtype=bool)
    offset = 0
    for source in members:
        for lesion in source.result.get("lesions") or []:
            if len(lesion.get("contour") or []) < 3:
                continue
            frame = min(max(int(lesion.get("frame") or 0), 0), source.frames - 1)
            masks[offset + frame, :, :, classes.index(class_of(lesion))] |= rasterise(
                lesion["contour"], rows, columns)
        offset += source.frames
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model.name, family=codes.ARTIFICIAL_INTELLIGENCE, version=model.version)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=label[:64],
            segmented_property_category=codes.ABNORMAL_STRUCTURE,
            segmented_property_type=codes.label_concept(label),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm)
        for n, label in enumerate(classes, start=1)
    ]
    return hd.seg.Segmentation(
        source_images=[source.dataset for source in members],
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=ids.series("seg"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=ids.document("seg", _members_key(members)),
        instance_number=number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=model.name,
        software_versions=model.version,
        device_serial_number=ids.device_id,
        content_label="LESIONS",
        content_description=f"Lesion outlines by {model.model_id}",
        series_description=SERIES_DESCRIPTION,
        coding_schemes=codes.coding_schemes(),
        specific_character_set=CHARACTER_SET,
    )


def _members_key(members: list[Source]) -> str:
    """Which images a SEG covers, for its UID (the same images give the same UID)."""
    return ",".join(sorted(str(s.dataset.SOPInstanceUID) for s in members))
