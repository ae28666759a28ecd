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
on the key image. Neither does an image highdicom refuses to segment (a CT
without the Frame of Reference its IOD requires, say) nor one whose Pixel
Spacing was no number (``source_header``): it is logged, and the study's
other documents go out all the same.
"""

from __future__ import annotations

import logging

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


def segmentations(sources: list[Source], model: ModelIdentity,
                  ids: ResultIds) -> list[hd.seg.Segmentation]:
    """The SEG objects of one study version ([] when no lesion has a contour)."""
    groups: dict[tuple, list[Source]] = {}
    for source in sources:
        if not _contoured(source) or not _segmentable(source):
            continue
        groups.setdefault(_group_key(source), []).append(source)
    out = []
    for members in groups.values():
        try:
            out.append(_segmentation(members, model, ids, len(out) + 1))
        except (ValueError, AttributeError, KeyError) as exc:  # highdicom's checks, or a
            # source lacking what its IOD requires
            log.warning("no DICOM SEG for %s: %s", _members_key(members), exc)
    return out


def write_seg(study: StudyInput) -> list[Dataset]:
    """The SEG output's writer (``writers.DocumentWriter``): ``segmentations`` of the study
    version (none when no lesion has an outline)."""
    return list(segmentations(study.sources, study.model, study.ids))


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
    if source.uncalibrated:  # its Pixel Spacing was no number: a SEG cannot place its mask
        return False
    return source.frames == 1 or get_image_coordinate_system(source.dataset) is not None


def _group_key(source: Source) -> tuple:
    ds = source.dataset
    if (source.frames == 1 and "FrameOfReferenceUID" in ds and "ImagePositionPatient" in ds
            and not source.uncalibrated):  # one without its Pixel Spacing cannot join a volume
        return ("series", str(ds.SeriesInstanceUID), int(ds.Rows), int(ds.Columns),
                str(ds.FrameOfReferenceUID))
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
