"""The study's structured report: a Comprehensive 3D SR with the TID 1500 Measurement Report.

Content tree (highdicom builds the templates and checks them):

* observer: the model as a device (TID 1004: name, ``name@version`` as model
  name, manufacturer "clinibox", the box's device id as serial number);
* procedure reported: SCT "Imaging procedure"; an image library entry per
  analysed image (its evidence);
* lesions, counted as the page counts them: the images are grouped by series
  and each series is read as a volume or per slice (``series_reading``,
  ``inference/volume.py``); the groups are numbered "Lesion 1", "Lesion 2", …
  across the study, series by series;
* per 3-D lesion of a series read as a volume, ONE volumetric ROI measurement
  group (TID 1411): its region on each of its slices (an SCOORD POLYLINE as
  below, one per image: the largest where records of one slice joined),
  finding type and class as below, its volume in UCUM ``mm3`` (SCT "Volume",
  measurement method DCM 122503 "Integration of sum of closed areas on
  contiguous slices"), a ``99CLINIBOX`` "Volume measured on" evaluation saying
  whether the volume comes from the masks or is estimated from the boxes, its
  largest in-plane long and short axis in mm, its probability and class
  probabilities (the highest of its slices'). Its depth (its extent across the
  slices) has no standard code (DCM "Height" is a vertical measurement, not one
  along the slice normal): it is said in the series' sentence only;
* per lesion record of a series read per slice (and of every image that is no
  slice of a volume: an ultrasound cine, a radiograph) a planar ROI measurement
  group (TID 1410): the region as an SCOORD POLYLINE on its image and frame
  (the mask's outline through the pixel centres, else the box's edges as a
  closed polyline), finding type (SCT "Lesion"), the class as SCT "Associated
  morphology" = SCT "Neoplasm, benign"/"Malignant neoplasm, primary" (other
  labels: ``99CLINIBOX``), long and short axis and area in mm/mm2, or in UCUM
  ``{pixels}`` when the image has no calibration, the lesion's probability and
  each class probability (no units, 0..1), and the model as algorithm (name,
  version);
* per image a measurement group (TID 1501) referencing it, with its assessment
  (``finding``, ``no_finding``, ``not_assessable``, ``outside_validated_range``)
  as a ``99CLINIBOX`` qualitative evaluation;
* a "Qualitative Evaluations" container (TID 1500 row 12) of TEXT: the software
  assists a doctor and is not a diagnosis, the demonstration statement, a
  sentence per series read as a volume (its 3-D lesions, each with its slices
  and depth) and per series of several images read per slice (why, in the
  page's words), and a sentence per image (a not assessable or
  outside-range image says so and that it is no negative result; an image of a
  volume names the 3-D lesions it shows rather than counting its own).

Every version of a study's SR goes into one series; version N > 1 names
version N-1 in Predecessor Documents. Text is written as UTF-8 (ISO_IR 192),
so a patient name in any source character set (GB18030 included) survives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as sr_codes
from pydicom.uid import Comprehensive3DSRStorage

from engine.inference.volume import SINGLE_SLICE, Lesion3D, LesionPart
from firmware_app.dicom_out import codes, statements
from firmware_app.dicom_out.series_reading import SeriesReading, series_readings
from firmware_app.dicom_out.source import (
    MANUFACTURER,
    ModelIdentity,
    ResultIds,
    Source,
    StudyInput,
)

SERIES_NUMBER = 9901
SERIES_DESCRIPTION = "clinibox lesion model report"
#: the character set of every result document: UTF-8 holds any source's text
CHARACTER_SET = "ISO_IR 192"


def structured_report(sources: list[Source], model: ModelIdentity, ids: ResultIds,
                      predecessor: Dataset | None = None) -> hd.sr.Comprehensive3DSR:
    """The SR of one study version from its analysed images (in the order given).

    ``predecessor`` is the previous version's SR (or a dataset with its study,
    series, SOP class and SOP instance UIDs); required when ``ids.version > 1``.
    """
    if not sources:
        raise ValueError("a structured report needs at least one analysed image")
    if ids.version > 1 and predecessor is None:
        raise ValueError(f"version {ids.version} of a study's SR must name its predecessor")
    algorithm = hd.sr.AlgorithmIdentification(model.name, model.version,
                                              manufacturer=MANUFACTURER)
    readings = series_readings(sources)
    groups: list = []
    for reading, first in zip(readings, _first_numbers(readings), strict=True):
        groups += _lesion_groups(reading, first, algorithm, ids)
    for index, source in enumerate(sources, start=1):
        groups.append(_assessment_group(source, index, algorithm, ids))
    report = hd.sr.MeasurementReport(
        observation_context=_observer(model, ids),
        procedure_reported=codes.IMAGING_PROCEDURE,
        imaging_measurements=groups,
        referenced_images=_library(sources) or None,
    )
    report[0].ContentSequence.append(_statements(sources, readings, model))
    return hd.sr.Comprehensive3DSR(
        evidence=[s.dataset for s in sources],
        content=report[0],
        series_instance_uid=ids.series("sr"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=ids.document("sr"),
        instance_number=ids.version,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,  # a doctor has not read it yet; a late image makes a new version
        is_verified=False,
        previous_versions=[predecessor] if predecessor is not None else None,
        series_description=SERIES_DESCRIPTION,
        coding_schemes=codes.coding_schemes(),
        specific_character_set=CHARACTER_SET,
    )


def write_sr(study: StudyInput) -> list[Dataset]:
    """The SR output's writer (``writers.DocumentWriter``): the study version's one SR,
    naming the previous version (the caller's, else its reference from the UIDs)."""
    previous = None
    if study.ids.version > 1:
        previous = (study.predecessor if study.predecessor is not None else
                    predecessor_reference(str(study.sources[0].dataset.StudyInstanceUID),
                                          study.ids))
    return [structured_report(study.sources, study.model, study.ids, previous)]


def predecessor_reference(study_uid: str, ids: ResultIds) -> Dataset:
    """The previous version's SR as Predecessor Documents need it, from its deterministic UIDs
    (when the caller no longer holds the document itself)."""
    reference = Dataset()
    reference.StudyInstanceUID = study_uid
    reference.SeriesInstanceUID = ids.series("sr")
    reference.SOPClassUID = Comprehensive3DSRStorage
    reference.SOPInstanceUID = ids.previous("sr")
    return reference


def _library(sources: list[Source]) -> list[Dataset]:
    """The images the Image Library describes.

    highdicom's library entries (TID 1602/1604) read an image's geometry from
    the top level of its header; an enhanced multi-frame image keeps it per
    frame, and a cross-sectional image without it cannot be described. Such
    an image is referenced by its measurement groups and the evidence only.
    """
    out = []
    for source in sources:
        ds = source.dataset
        if "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds:
            continue
        geometry = ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient",
                    "SliceThickness")
        if str(ds.get("Modality", "")) in ("CT", "MR", "PT") and not all(k in ds for k in geometry):
            continue
        out.append(ds)
    return out


def _observer(model: ModelIdentity, ids: ResultIds) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=ids.item("observer"), name=model.name, manufacturer_name=MANUFACTURER,
        model_name=model.model_id, serial_number=ids.device_id)
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=sr_codes.DCM.Device, observer_identifying_attributes=device))


def _first_numbers(readings: list[SeriesReading]) -> list[int]:
    """The number of each series' first lesion: the study's lesions are numbered series
    by series (3-D lesions in a volume, lesion records image by image otherwise)."""
    firsts, number = [], 1
    for reading in readings:
        firsts.append(number)
        number += _lesion_count(reading)
    return firsts


def _lesion_count(reading: SeriesReading) -> int:
    """The lesions of a series as the SR counts them: its 3-D lesions, else its records."""
    if reading.as_volume:
        return len(reading.volume.lesions)
    return sum(len(source.result.get("lesions") or []) for _, source in reading.images)


def _lesion_groups(reading: SeriesReading, first: int, algorithm: hd.sr.AlgorithmIdentification,
                   ids: ResultIds) -> list:
    """The series' lesion groups, numbered from ``first``: one volumetric group per 3-D
    lesion, else one planar group per lesion record."""
    if reading.as_volume:
        return [_volume_group(reading, lesion, first + k, algorithm, ids)
                for k, lesion in enumerate(reading.volume.lesions)]
    records = [(source, lesion) for _, source in reading.images
               for lesion in source.result.get("lesions") or []]
    return [_lesion_group(source, lesion, first + k, algorithm, ids)
            for k, (source, lesion) in enumerate(records)]


def _volume_group(reading: SeriesReading, lesion: Lesion3D, number: int,
                  algorithm: hd.sr.AlgorithmIdentification, ids: ResultIds
                  ) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """One 3-D lesion (TID 1411): its region on each of its slices, its volume, axes,
    probabilities and class."""
    regions = [_region(reading.source(part.instance_id), reading.record(part))
               for part in _outlined_parts(lesion)]
    measurements = [hd.sr.Measurement(codes.VOLUME, float(lesion.volume_mm3),
                                      codes.CUBIC_MILLIMETRE,
                                      method=codes.VOLUME_FROM_SLICE_AREAS)
                    ] if _finite(lesion.volume_mm3) else []
    measurements += [hd.sr.Measurement(name, float(value), codes.MILLIMETRE)
                     for name, value in ((codes.LONG_AXIS, lesion.long_axis_mm),
                                         (codes.SHORT_AXIS, lesion.short_axis_mm))
                     if _finite(value)]
    measurements += _probabilities(lesion.probability, lesion.class_probabilities)
    record = {"label": lesion.label, "class_probabilities": lesion.class_probabilities}
    evaluations = [hd.sr.QualitativeEvaluation(codes.VOLUME_BASIS,
                                               codes.VOLUME_BASES[lesion.volume_from])]
    evaluations += _class_evaluations(record)
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=ids.item("lesion", reading.volume.series_instance_uid, str(number)),
            identifier=f"Lesion {number}"),
        referenced_regions=regions,
        finding_type=codes.label_concept(lesion.label or "lesion"),
        finding_category=codes.ABNORMAL_STRUCTURE,
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )


def _outlined_parts(lesion: Lesion3D) -> list[LesionPart]:
    """One part per slice, in slice order: the largest where records of one slice joined
    (an image holds one region of a volumetric group)."""
    largest: dict[int, LesionPart] = {}
    for part in lesion.parts:
        kept = largest.get(part.slice_index)
        if kept is None or part.area_mm2 > kept.area_mm2:
            largest[part.slice_index] = part
    return [largest[index] for index in sorted(largest)]


def _region(source: Source, lesion: Mapping[str, Any]) -> hd.sr.ImageRegion:
    """A lesion record's outline on its image and frame."""
    frame = int(lesion.get("frame") or 0)
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=region_outline(lesion),
        source_image=hd.sr.SourceImageForRegion.from_source_image(
            source.dataset, source.frame_numbers(frame)),
    )


def _probabilities(probability: float, classes: dict) -> list[hd.sr.Measurement]:
    """The lesion's probability and each class' (no units, 0..1)."""
    out = [hd.sr.Measurement(codes.PROBABILITY, float(probability), codes.NO_UNITS)]
    out += [hd.sr.Measurement(codes.class_probability_concept(label), float(value),
                              codes.NO_UNITS)
            for label, value in sorted((classes or {}).items())]
    return out


def _class_evaluations(lesion: dict) -> list[hd.sr.QualitativeEvaluation]:
    """The lesion's class as an "Associated morphology", when it is not its label."""
    lesion_class = class_of(lesion)
    if lesion_class == str(lesion.get("label") or ""):
        return []
    return [hd.sr.QualitativeEvaluation(codes.ASSOCIATED_MORPHOLOGY,
                                        codes.label_concept(lesion_class))]


def _lesion_group(source: Source, lesion: dict, number: int,
                  algorithm: hd.sr.AlgorithmIdentification, ids: ResultIds
                  ) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """One lesion record on its image (TID 1410): its region, sizes, probabilities, class."""
    sop_uid = str(source.dataset.SOPInstanceUID)
    measurements = [hd.sr.Measurement(name, value, unit) for name, value, unit
                    in _sizes(lesion, not source.uncalibrated)]
    measurements += _probabilities(float(lesion["probability"]),
                                   lesion.get("class_probabilities") or {})
    evaluations = _class_evaluations(lesion)
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=ids.item("lesion", sop_uid, str(number)), identifier=f"Lesion {number}"),
        referenced_region=_region(source, lesion),
        finding_type=codes.label_concept(str(lesion.get("label") or "lesion")),
        finding_category=codes.ABNORMAL_STRUCTURE,
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations or None,
    )


def class_of(lesion: dict) -> str:
    """A lesion's class: its most probable class, else its label."""
    probabilities = lesion.get("class_probabilities") or {}
    if probabilities:
        return max(sorted(probabilities), key=lambda label: float(probabilities[label]))
    return str(lesion.get("label") or "lesion")


def region_outline(lesion: Mapping[str, Any]) -> np.ndarray:
    """The lesion's region as a closed polyline in SCOORD image coordinates (column, row).

    SCOORD puts (0, 0) at the top left corner of the top left pixel: the
    contour's points are pixel positions, so they go through the pixels'
    centres (+0.5); the box's coordinates are pixel edges already.
    """
    contour = [(float(x) + 0.5, float(y) + 0.5) for x, y in lesion.get("contour") or []]
    if len(contour) >= 3:
        points = contour
    else:
        x0, y0, x1, y1 = (float(v) for v in lesion["box"])
        points = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    points.append(points[0])
    return np.array(points, dtype=np.float64)


def _sizes(lesion: dict, calibrated: bool = True) -> list[tuple]:
    """(concept, value, unit) of the long axis, short axis and area: mm on a ``calibrated``
    image, else pixels; a size that is no finite number is left out (never NaN)."""
    mm = [(codes.LONG_AXIS, lesion.get("long_axis_mm"), codes.MILLIMETRE),
          (codes.SHORT_AXIS, lesion.get("short_axis_mm"), codes.MILLIMETRE),
          (codes.AREA, lesion.get("area_mm2"), codes.SQUARE_MILLIMETRE)]
    if calibrated and lesion.get("units") == "mm" and all(_finite(v) for _, v, _ in mm):
        return [(name, float(value), unit) for name, value, unit in mm]
    pixels = [(codes.LONG_AXIS, lesion.get("long_axis_px"), codes.PIXELS),
              (codes.SHORT_AXIS, lesion.get("short_axis_px"), codes.PIXELS),
              (codes.AREA, lesion.get("area_px2"), codes.PIXELS)]
    return [(name, float(value), unit) for name, value, unit in pixels if _finite(value)]


def _finite(value: object) -> bool:
    """Whether ``value`` is a finite number."""
    try:
        return value is not None and math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _assessment_group(source: Source, number: int, algorithm: hd.sr.AlgorithmIdentification,
                      ids: ResultIds) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    assessment = str(source.result.get("assessment") or "")
    if assessment not in codes.ASSESSMENTS:
        raise ValueError(f"image {source.dataset.SOPInstanceUID} has no assessment "
                         f"({assessment!r}): was it analysed?")
    sop_uid = str(source.dataset.SOPInstanceUID)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=ids.item("assessment", sop_uid), identifier=f"Image {number} assessment"),
        algorithm_id=algorithm,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(
            codes.ASSESSMENT, codes.ASSESSMENTS[assessment])],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source.dataset)],
    )


def _statements(sources: list[Source], readings: list[SeriesReading],
                model: ModelIdentity) -> hd.sr.ContainerContentItem:
    """The "Qualitative Evaluations" container: the statements, then a sentence per series
    (read as a volume; of several images read per slice) and per image, then each lesion
    compared with the patient's earlier study (``storage/growth.py``)."""
    container = hd.sr.ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    container.ContentSequence = hd.sr.ContentSequence()
    texts = [(codes.ASSIST_STATEMENT, statements.assists_a_doctor(model))]
    if model.demo:
        texts.append((codes.DEMO_STATEMENT, statements.demonstration(model)))
    part_of: dict[int, list[int]] = {}
    for reading, first in zip(readings, _first_numbers(readings), strict=True):
        sentence = _series_sentence(reading, first, part_of)
        if sentence:
            texts.append((codes.SERIES_STATEMENT, sentence))
    texts += [(codes.IMAGE_STATEMENT,
               statements.image_result(n, s.dataset.get("SeriesNumber"),
                                       s.dataset.get("InstanceNumber"), s.result,
                                       part_of.get(n - 1)))
              for n, s in enumerate(sources, start=1)]
    texts += [(codes.COMPARISON_STATEMENT, line) for n, s in enumerate(sources, start=1)
              if s.result.get("comparison")
              for line in statements.comparison(n, s.result["comparison"])]
    for name, text in texts:
        container.ContentSequence.append(hd.sr.TextContentItem(
            name=name, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    return container


def _series_sentence(reading: SeriesReading, first: int, part_of: dict[int, list[int]]) -> str:
    """A series' sentence ("" for a series that needs none); for a volume, notes in
    ``part_of`` which 3-D lesions each of its images shows (image index → numbers)."""
    images = len(reading.images)
    if reading.as_volume:
        numbered = list(enumerate(reading.volume.lesions, start=first))
        for index, _ in reading.images:
            part_of[index] = [n for n, lesion in numbered if index in lesion.instance_ids]
        return statements.volume_result(reading.series_number, reading.modality, images,
                                        numbered)
    if images > 1 and reading.volume.reason != SINGLE_SLICE:
        return statements.per_slice_result(reading.series_number, reading.modality, images,
                                           reading.volume.reason)
    return ""
