"""DICOM results for a CT series read as a volume (issues 43 and 56).

A CT phantom series (``phantoms/series.py``) with its lesion records made from its truth by
the box's own lesion code checks the 3-D reading of the SR: one TID 1411 group per 3-D
lesion, planar groups and the reason for a series with a gap; and one bad slice never takes
its series' SEG with it. Documents are written to disk and validated with dicom3tools'
``dciodvfy`` (the warnings allowed: ``test_dicom_results.py``'s docstring).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from engine.inference.lesions import lesion_from_box
from engine.inference.postprocess import Box
from firmware_app.dicom_out.document import Document
from firmware_app.dicom_out.study_documents import (
    AnalysedInstance,
    HeaderReport,
    ModelIdentity,
    study_documents,
)
from tests.dicom_documents import (
    DEVICE,
    LONG_AXIS,
    MORPHOLOGY,
    SHORT_AXIS,
    allowed_warning,
    dciodvfy,
    imperfect_orientation,
    text_items,
    write_document,
)

# -- a CT series read as a volume: one measurement group per 3-D lesion --------------------

VOLUME = hd.sr.CodedConcept(*codes.SCT.Volume)
VOLUME_BASIS = hd.sr.CodedConcept("VOLUME-BASIS", "99CLINIBOX", "Volume measured on")
#: a made-up segmenting model (the records are built from the phantom's truth, not inferred)
SERIES_MODEL = ModelIdentity("phantom-truth@1.0.0", "phantom-truth", "1.0.0", 0.5, demo=True)


@dataclasses.dataclass
class PhantomSeries:
    """A CT phantom series on disk, its 3-D lesion's truth and which slices show it."""

    paths: list[Path]
    series: object  # phantoms.series.PhantomSeries
    shown: list[int]


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory) -> PhantomSeries:
    """Ten axial CT slices 2.5 mm apart with one sphere (7.3 mm radius) seen on six."""
    from phantoms.series import generate_series, write_series

    series = generate_series(np.random.default_rng(2), slices=10, size=160, spacing_mm=2.5,
                             lesions=1, diameters_mm=(14.0, 16.0))
    shown = [k for k, phantom in enumerate(series.slices) if phantom.lesions]
    assert len(series.lesions) == 1 and shown == list(range(shown[0], shown[0] + 6))
    paths = write_series(series, tmp_path_factory.mktemp("ct-series"),
                         {"PatientName": "SERIES^PHANTOM", "PatientID": "SERIES-1"})
    return PhantomSeries(paths, series, shown)


def _truth_record(truth, spacing: tuple[float, float], segmented: bool) -> dict:
    """A stored lesion record made by the box's own lesion code from a slice's truth: its
    mask and outline when ``segmented``, else its box alone."""
    from engine.inference.masks import simplify, trace_contour

    row, column = truth.origin
    contour = tuple((float(x + column), float(y + row)) for y, x in
                    simplify(trace_contour(truth.mask))) if segmented else ()
    box = Box(*truth.box, 0.9, "lesion", class_probabilities={"benign": 0.2, "malignant": 0.8},
              contour=contour, mask=truth.mask if segmented else None, mask_origin=truth.origin)
    return lesion_from_box(box, 0, spacing).to_dict()


def _series_instances(ct_series: PhantomSeries, segmented: bool = True,
                      left_out: tuple[int, ...] = ()) -> list[AnalysedInstance]:
    """The series' slices as analysed images: a finding with the truth's record where a
    slice shows the lesion, no finding elsewhere; ``left_out`` slices are not there."""
    instances = []
    for k, path in enumerate(ct_series.paths):
        if k in left_out:
            continue
        phantom = ct_series.series.slices[k]
        lesions = [_truth_record(t, ct_series.series.pixel_spacing, segmented)
                   for t in phantom.lesions]
        study = str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
        instances.append(AnalysedInstance(path, {
            "study_instance_uid": study, "assessment": "finding" if lesions else "no_finding",
            "assessment_reason": "", "probability": 0.9 if lesions else 0.1,
            "lesions": lesions, "findings": [], "key_frame": 0}))
    return instances


def _sr(instances: list[AnalysedInstance], tmp_path: Path) -> Path:
    """The study's SR written to disk, checked by dciodvfy."""
    (document,) = study_documents(instances, SERIES_MODEL, device_id=DEVICE, version=1,
                                  kinds=["sr"])
    path = write_document(document, tmp_path)
    assert [w for w in dciodvfy(path) if not allowed_warning(w)] == []
    return path


@pytest.mark.slow
def test_a_lesion_on_six_contiguous_slices_is_one_volumetric_group(ct_series, tmp_path):
    path = _sr(_series_instances(ct_series), tmp_path)
    report = hd.sr.srread(path).content
    assert report.get_planar_roi_measurement_groups() == []
    (group,) = report.get_volumetric_roi_measurement_groups()
    assert group[0].ContentTemplateSequence[0].TemplateIdentifier == "1411"
    assert group.tracking_identifier == "Lesion 1"
    regions = group.roi
    referenced = [next(i for i in r.ContentSequence if i.ValueType == "IMAGE")
                  .ReferencedSOPSequence[0].ReferencedSOPInstanceUID for r in regions]
    slices = [str(pydicom.dcmread(ct_series.paths[k], stop_before_pixels=True).SOPInstanceUID)
              for k in ct_series.shown]
    assert len(regions) == 6 and referenced == slices  # one region on each of its 6 images
    for region in regions:
        assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        assert region.value[0] == pytest.approx(region.value[-1])  # closed
    (volume,) = group.get_measurements(name=VOLUME)
    assert (volume.unit.value, volume.unit.scheme_designator) == ("mm3", "UCUM")
    (truth,) = ct_series.series.lesions
    assert volume.value == pytest.approx(truth.volume_mm3, rel=0.2)
    assert volume.method.value == "122503"  # sum of the slices' areas
    (long_axis,) = group.get_measurements(name=LONG_AXIS)
    assert long_axis.unit.value == "mm" and long_axis.value == pytest.approx(
        truth.diameter_mm, rel=0.2)
    assert group.get_measurements(name=SHORT_AXIS)[0].unit.value == "mm"
    (basis,) = group.get_qualitative_evaluations(name=VOLUME_BASIS)
    assert basis.value.value == "MASKS"
    assert group.get_qualitative_evaluations(name=MORPHOLOGY)[0].value.value == "86049000"
    assert group.get_measurements(name=hd.sr.CodedConcept(
        *codes.DCM.ProbabilityOfCancer))[0].value == pytest.approx(0.8)
    # the sentences count one lesion, not one a slice
    texts = text_items(pydicom.dcmread(path))
    (series,) = [t for t in texts if t.startswith("Series")]
    assert "read as a volume, shows 1 lesion in 3-D: lesion 1 on 6 slices" in series
    for k in ct_series.shown:
        (about,) = [t for t in texts if t.startswith(f"Image {k + 1} (")]
        assert "part of lesion 1 (" in about and "marked" not in about


def test_a_volume_from_boxes_says_it_is_estimated(ct_series, tmp_path):
    path = _sr(_series_instances(ct_series, segmented=False), tmp_path)
    (group,) = hd.sr.srread(path).content.get_volumetric_roi_measurement_groups()
    assert group.get_qualitative_evaluations(name=VOLUME_BASIS)[0].value.value == "BOXES"
    assert len(group.roi) == 6  # the boxes' edges on each slice
    (truth,) = ct_series.series.lesions
    assert group.get_measurements(name=VOLUME)[0].value == pytest.approx(
        truth.volume_mm3, rel=0.3)


@pytest.mark.slow
def test_a_series_with_a_gap_keeps_planar_groups_and_says_why(ct_series, tmp_path):
    gap = ct_series.shown[-1] + 1  # a slice without the lesion, inside the stack
    assert gap < len(ct_series.paths) - 1
    path = _sr(_series_instances(ct_series, left_out=(gap,)), tmp_path)
    report = hd.sr.srread(path).content
    assert report.get_volumetric_roi_measurement_groups() == []
    groups = report.get_planar_roi_measurement_groups()
    assert len(groups) == 6 and [g.tracking_identifier for g in groups] == [
        f"Lesion {n}" for n in range(1, 7)]
    texts = text_items(pydicom.dcmread(path))
    (series,) = [t for t in texts if t.startswith("Series")]
    assert "read image by image, not as a volume: slices are missing or unevenly spaced" in series
    assert sum("1 lesion marked" in t for t in texts) == 6



# -- issue 56: one bad slice never takes its series' SEG with it ---------------------------


def _with_bad_slice(ct_series: PhantomSeries, folder: Path, change) -> tuple[
        list[AnalysedInstance], str]:
    """The series' analysed slices with ``change`` made to the header of the third slice
    showing the lesion (a copy in ``folder``); (the instances, that slice's file name)."""
    instances = _series_instances(ct_series)
    bad = ct_series.shown[2]
    ds = pydicom.dcmread(ct_series.paths[bad])
    change(ds)
    path = folder / ct_series.paths[bad].name
    ds.save_as(path, enforce_file_format=True)
    instances[bad] = dataclasses.replace(instances[bad], path=path)
    return instances, path.name


def _seg_sources(document: Document) -> list[str]:
    """The SOP Instance UIDs a SEG's frames were derived from, in order."""
    return [frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for frame in document.dataset.PerFrameFunctionalGroupsSequence]


def _no_frame_of_reference(ds: pydicom.Dataset) -> None:
    del ds.FrameOfReferenceUID  # a SEG of its own, which highdicom refuses (its IOD needs one)


@pytest.mark.slow
@pytest.mark.parametrize(("change", "reason"), [
    (imperfect_orientation, "no-image-orientation"),
    (lambda ds: setattr(ds, "ImageOrientationPatient", [0] * 6), "invalid-image-orientation"),
    (_no_frame_of_reference, "seg-refused"),
    (lambda ds: setattr(ds, "PixelSpacing", ["nan", "nan"]), "no-pixel-spacing"),
])
def test_one_bad_slice_is_left_out_of_the_seg_with_its_reason_and_the_rest_still_go(
        ct_series, tmp_path, change, reason):
    """Found by the red team of issue 56: one slice with five orientation cosines took the
    whole series' SEG with it ('FileDataset' object has no attribute
    'ImageOrientationPatient')."""
    instances, bad = _with_bad_slice(ct_series, tmp_path, change)
    report = HeaderReport()
    documents = study_documents(instances, SERIES_MODEL, device_id=DEVICE, version=1,
                                kinds=["sr", "seg"], report=report)
    by_kind = {d.kind: d for d in documents}
    assert set(by_kind) == {"sr", "seg"}
    assert report.seg_left_out == {bad: reason} and report.left_out == {}
    shown = [str(pydicom.dcmread(ct_series.paths[k], stop_before_pixels=True).SOPInstanceUID)
             for k in ct_series.shown]
    outlined = [n for n, k in enumerate(ct_series.shown)  # the lesion's edge: one point
                if any(len(x["contour"]) >= 3 for x in instances[k].result["lesions"])]
    assert len(outlined) == 5 and 2 in outlined
    good = [shown[n] for n in outlined if n != 2]
    assert sorted(_seg_sources(by_kind["seg"])) == sorted(good)
    path = write_document(by_kind["seg"], tmp_path)
    assert [w for w in dciodvfy(path) if not allowed_warning(w)] == []
    # the bad slice is still in the SR: its findings reach the PACS
    evidence = [item.ReferencedSOPInstanceUID for study in
                by_kind["sr"].dataset.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence
                for item in series.ReferencedSOPSequence]
    assert shown[2] in evidence


def test_a_series_highdicom_refuses_keeps_the_slices_it_takes_alone(ct_series, tmp_path,
                                                                    monkeypatch):
    """The last resort: a group highdicom refuses is tried slice by slice, and those it
    refuses alone are left out (``seg-refused``). highdicom 0.28 reads little of a slice
    beyond the first one's, so the refusal is made here: any group holding the bad slice."""
    from firmware_app.dicom_out import seg

    instances, bad = _with_bad_slice(ct_series, tmp_path, lambda ds: None)
    real = seg._segmentation

    def refusing(members, *args):
        if any(source.instance.path.name == bad and source.instance.path.parent == tmp_path
               for source in members):
            raise ValueError("refused")
        return real(members, *args)

    monkeypatch.setattr(seg, "_segmentation", refusing)
    report = HeaderReport()
    (document,) = study_documents(instances, SERIES_MODEL, device_id=DEVICE, version=1,
                                  kinds=["seg"], report=report)
    assert report.seg_left_out == {bad: "seg-refused"}
    assert len(_seg_sources(document)) == 4
    monkeypatch.setattr(seg, "MAX_ALONE", 1)  # a group too large to try slice by slice
    report = HeaderReport()
    assert study_documents(instances, SERIES_MODEL, device_id=DEVICE, version=1,
                           kinds=["seg"], report=report) == []
    assert len(report.seg_left_out) == 5 and set(report.seg_left_out.values()) == {
        "seg-refused"}
