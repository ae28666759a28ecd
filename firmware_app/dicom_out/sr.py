"""The study's structured report: a Comprehensive 3D SR with the TID 1500 Measurement Report.

Content tree (highdicom builds the templates and checks them):

* observer: the model as a device (TID 1004: name, ``name@version`` as model
  name, manufacturer "clinibox", the box's device id as serial number);
* procedure reported: SCT "Imaging procedure"; an image library entry per
  analysed image (its evidence);
* per lesion a planar ROI measurement group (TID 1410): the region as an SCOORD
  POLYLINE on its image and frame (the mask's outline through the pixel
  centres, else the box's edges as a closed polyline), finding type (SCT
  "Lesion"), the class as SCT "Associated morphology" = SCT "Neoplasm,
  benign"/"Malignant neoplasm, primary" (other labels: ``99CLINIBOX``), long
  and short axis and area in mm/mm2, or in UCUM ``{pixels}`` when the image
  has no calibration, the lesion's probability and each class probability
  (no units, 0..1), and the model as algorithm (name, version);
* per image a measurement group (TID 1501) referencing it, with its assessment
  (``finding``, ``no_finding``, ``not_assessable``, ``outside_validated_range``)
  as a ``99CLINIBOX`` qualitative evaluation;
* a "Qualitative Evaluations" container (TID 1500 row 12) of TEXT: the software
  assists a doctor and is not a diagnosis, the demonstration statement, and a
  sentence per image (a not assessable or outside-range image says so and that
  it is no negative result).

Every version of a study's SR goes into one series; version N > 1 names
version N-1 in Predecessor Documents. Text is written as UTF-8 (ISO_IR 192),
so a patient name in any source character set (GB18030 included) survives.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as sr_codes
from pydicom.uid import Comprehensive3DSRStorage

from firmware_app.dicom_out import codes, statements
from firmware_app.dicom_out.source import MANUFACTURER, ModelIdentity, ResultIds, Source

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
    groups: list = []
    number = 0
    for source in sources:
        for lesion in source.result.get("lesions") or []:
            number += 1
            groups.append(_lesion_group(source, lesion, number, algorithm, ids))
    for index, source in enumerate(sources, start=1):
        groups.append(_assessment_group(source, index, algorithm, ids))
    report = hd.sr.MeasurementReport(
        observation_context=_observer(model, ids),
        procedure_reported=codes.IMAGING_PROCEDURE,
        imaging_measurements=groups,
        referenced_images=_library(sources) or None,
    )
    report[0].ContentSequence.append(_statements(sources, model))
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
        geometry = ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient")
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


def _lesion_group(source: Source, lesion: dict, number: int,
                  algorithm: hd.sr.AlgorithmIdentification, ids: ResultIds
                  ) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    sop_uid = str(source.dataset.SOPInstanceUID)
    frame = int(lesion.get("frame") or 0)
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=region_outline(lesion),
        source_image=hd.sr.SourceImageForRegion.from_source_image(
            source.dataset, source.frame_numbers(frame)),
    )
    measurements = [hd.sr.Measurement(name, value, unit) for name, value, unit in _sizes(lesion)]
    measurements.append(hd.sr.Measurement(codes.PROBABILITY, float(lesion["probability"]),
                                          codes.NO_UNITS))
    for label, probability in sorted((lesion.get("class_probabilities") or {}).items()):
        measurements.append(hd.sr.Measurement(codes.class_probability_concept(label),
                                              float(probability), codes.NO_UNITS))
    evaluations = []
    lesion_class = class_of(lesion)
    if lesion_class != str(lesion.get("label") or ""):
        evaluations.append(hd.sr.QualitativeEvaluation(codes.ASSOCIATED_MORPHOLOGY,
                                                       codes.label_concept(lesion_class)))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=ids.item("lesion", sop_uid, str(number)), identifier=f"Lesion {number}"),
        referenced_region=region,
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


def region_outline(lesion: dict) -> np.ndarray:
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


def _sizes(lesion: dict) -> list[tuple]:
    """(concept, value, unit) of the long axis, short axis and area: mm, else pixels."""
    if lesion.get("units") == "mm" and lesion.get("long_axis_mm") is not None:
        return [(codes.LONG_AXIS, float(lesion["long_axis_mm"]), codes.MILLIMETRE),
                (codes.SHORT_AXIS, float(lesion["short_axis_mm"]), codes.MILLIMETRE),
                (codes.AREA, float(lesion["area_mm2"]), codes.SQUARE_MILLIMETRE)]
    return [(codes.LONG_AXIS, float(lesion["long_axis_px"]), codes.PIXELS),
            (codes.SHORT_AXIS, float(lesion["short_axis_px"]), codes.PIXELS),
            (codes.AREA, float(lesion["area_px2"]), codes.PIXELS)]


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


def _statements(sources: list[Source], model: ModelIdentity) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    container.ContentSequence = hd.sr.ContentSequence()
    texts = [(codes.ASSIST_STATEMENT, statements.assists_a_doctor(model))]
    if model.demo:
        texts.append((codes.DEMO_STATEMENT, statements.demonstration(model)))
    texts += [(codes.IMAGE_STATEMENT,
               statements.image_result(n, s.dataset.get("SeriesNumber"),
                                       s.dataset.get("InstanceNumber"), s.result))
              for n, s in enumerate(sources, start=1)]
    for name, text in texts:
        container.ContentSequence.append(hd.sr.TextContentItem(
            name=name, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    return container
