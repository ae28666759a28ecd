"""The study's images grouped by series, each series read as a volume or per slice.

What the SR counts and measures, read as the store reads it
(``storage/volumes.py``) so the SR counts what the page counts: a series is
the images of one Series Instance UID (an image without one is a series of
its own); each image is a slice with its geometry read off its header
(``imaging/geometry.header_geometry``) and, where its assessment is
``finding``, its lesion records; ``inference/volume.series_volume`` reads the
series as a volume (its 3-D lesions) or per slice (with the reason code).
An image's instance id in these readings is its place in the study's list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clinibox_common.contracts.statuses import AssessmentKind
from engine.imaging.geometry import header_geometry
from engine.inference.volume import (
    READ_AS_VOLUME,
    LesionPart,
    SeriesSlice,
    SeriesVolume,
    series_volume,
)
from firmware_app.dicom_out.source import Source

#: the assessment whose lesion records count (``inference/assessment.py``)
FINDING = AssessmentKind.FINDING


@dataclass(frozen=True)
class SeriesReading:
    """One series of the study: its images (as given) and how it was read."""

    #: (the image's place in the study's list, the image), in the study's order
    images: tuple[tuple[int, Source], ...]
    #: the slices it was read from (instance id: the image's place in the study's list)
    slices: tuple[SeriesSlice, ...]
    volume: SeriesVolume

    @property
    def as_volume(self) -> bool:
        """Whether the series was read as a volume (its lesions are 3-D lesions)."""
        return self.volume.read_as == READ_AS_VOLUME

    @property
    def modality(self) -> str:
        """The series' modality (its first image's)."""
        return str(self.images[0][1].dataset.get("Modality") or "")

    @property
    def series_number(self) -> object:
        """The series' Series Number as a PACS viewer shows it (its first image's)."""
        return self.images[0][1].dataset.get("SeriesNumber")

    def source(self, instance_id: int) -> Source:
        """The image of ``instance_id`` (its place in the study's list)."""
        return dict(self.images)[instance_id]

    def record(self, part: LesionPart) -> Mapping[str, Any]:
        """The lesion record a part of a 3-D lesion was made of."""
        (found,) = (s for s in self.slices if s.instance_id == part.instance_id)
        return found.lesions[part.lesion_index]


def series_readings(sources: Sequence[Source]) -> list[SeriesReading]:
    """The study's series in the order of their first image, each read with its images."""
    grouped: dict[str, list[tuple[int, Source]]] = {}
    for index, source in enumerate(sources):
        uid = str(source.dataset.get("SeriesInstanceUID") or "") or f"instance:{index}"
        grouped.setdefault(uid, []).append((index, source))
    return [_reading(images) for images in grouped.values()]


def _reading(images: list[tuple[int, Source]]) -> SeriesReading:
    """One series read as a volume or per slice."""
    first = images[0][1].dataset
    slices = tuple(_slice(index, source) for index, source in images)
    volume = series_volume(slices, str(first.get("SeriesInstanceUID") or ""),
                           str(first.get("Modality") or ""))
    return SeriesReading(tuple(images), slices, volume)


def _slice(index: int, source: Source) -> SeriesSlice:
    """One image as a slice: its header's geometry and, for a finding, its lesion records."""
    lesions = source.result.get("lesions") if source.result.get("assessment") == FINDING else []
    return SeriesSlice.from_geometry(
        index, header_geometry(source.dataset),
        [lesion for lesion in lesions if isinstance(lesion, dict)]
        if isinstance(lesions, list) else [])
