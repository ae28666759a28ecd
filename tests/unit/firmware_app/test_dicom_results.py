"""DICOM results for the PACS: SR (TID 1500), SEG and key image, from real analysis results.

Phantoms and pydicom's real CT are landed and analysed by the real worker with
the bundled demo model (phantom-trained, not for clinical use); the documents
are built from what ``ResultStore.instances()`` returns, written to disk,
validated with dicom3tools' ``dciodvfy`` and read back with highdicom. A CT
phantom series (``phantoms/series.py``) with its lesion records made
from its truth by the box's own lesion code checks the 3-D reading: one TID
1411 group per 3-D lesion, planar groups and the reason for a series with a gap.

Warnings ``dciodvfy`` still gives (errors fail the tests):

* "Unrecognized defined term <99CLINIBOX> ... <Coding Scheme Designator>":
  the box's private coding scheme (``dicom_out/codes.py``); dciodvfy knows only
  the registered designators, and the scheme is identified in Coding Scheme
  Identification as PS3.3 asks;
* "Value is zero for ... <Patient's Weight>": pydicom's CT_small carries a
  weight of 0, copied from the source into every document about it;
* "... attribute <Laterality>" (key image): Type 2C, required for a paired body
  part; the sources do not say, so it is empty (unknown), which dciodvfy
  accepts with this warning (leaving it out is an error).
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.sr.codedict import codes

from clinibox_common.bundled import REPO_ROOT
from engine.imaging import annotate
from engine.imaging.decode import decode, decode_guard, frame_pixels, open_dataset
from engine.imaging.preview import frame_preview
from engine.inference.lesions import lesion_from_box
from engine.inference.postprocess import Box
from engine.settings import LimitsConfig
from firmware_app.dicom_out.document import Document
from firmware_app.dicom_out.seg import rasterise
from firmware_app.dicom_out.study_documents import (
    AnalysedInstance,
    HeaderReport,
    ModelIdentity,
    study_documents,
)
from firmware_app.settings.box import Config
from firmware_app.storage.results import ResultStore
from phantoms.dicom import us_dataset, us_multiframe_dataset, write_dicom
from phantoms.images import generate, generate_sweep
from tests.viewer_state import ct_phantom, local_box
from web.render import key_image_png

DEVICE = "box-0042"
ALL_KINDS = ("sr", "seg", "key_image")
UTF8_NAME = "张^三"
GB18030_NAME = "李四^王五"
LONG_AXIS = hd.sr.CodedConcept(*codes.SCT.LongAxis)
SHORT_AXIS = hd.sr.CodedConcept(*codes.SCT.ShortAxis)
AREA = hd.sr.CodedConcept(*codes.SCT.Area)
MORPHOLOGY = hd.sr.CodedConcept(*codes.SCT.AssociatedMorphology)


# -- a box with real results ------------------------------------------------------------


@dataclasses.dataclass
class Analysed:
    """Analysed images by name, and the model that analysed them."""

    instances: dict[str, AnalysedInstance]
    model: ModelIdentity


def _uncalibrated_us_lesion(runner, path: Path, identity: dict[str, str]) -> Path:
    """An ultrasound phantom without calibration on which the demo model finds a lesion."""
    for seed in range(40):
        ds = us_dataset(generate("us", np.random.default_rng(100 + seed), lesion=True), identity)
        del ds.SequenceOfUltrasoundRegions
        write_dicom(ds, path)
        if runner.analyse(decode(path, LimitsConfig(), 8), 64).findings.lesions:
            return path
    raise AssertionError("no uncalibrated ultrasound phantom gives a lesion in 40 seeds")


def _join_study(source: Path, target: Path, study: pydicom.Dataset, **values: str) -> Path:
    """A copy of ``source`` in ``study``'s study (same patient), with ``values`` set."""
    ds = pydicom.dcmread(source)
    for keyword in ("StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "StudyTime",
                    "AccessionNumber", "StudyID"):
        if keyword in study:
            setattr(ds, keyword, study.get(keyword))
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.save_as(target, enforce_file_format=True)
    return target


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, demo_runner) -> Analysed:
    """Studies landed and analysed by the real worker and demo model:

    * ``alert`` (study A, patient 张^三, UTF-8): a CT phantom with a lesion, in mm,
      with its mask's contour; ``real_ct`` (pydicom's CT_small moved into study A:
      outside the validated range) and ``dark`` (an ultrasound too dark: not
      assessable) belong to the same study;
    * ``gb18030`` (study B, patient 李四^王五 in GB18030): an ultrasound phantom
      without calibration, its lesion in pixels;
    * ``sweep`` (study C): a multi-frame ultrasound sweep with a lesion mid-sweep.
    """
    root = tmp_path_factory.mktemp("dicom-results")
    box = local_box(Config(), root / "state", demo_runner)
    conn, lander, worker = box.conn, box.lander, box.worker
    folder = root / "sources"
    folder.mkdir()
    alert = ct_phantom(demo_runner, folder / "alert.dcm", lesion=True, alert=True, identity={
        "PatientName": UTF8_NAME, "PatientID": "ZS-1", "StudyDescription": "CT 胸部"})
    assert pydicom.dcmread(alert, stop_before_pixels=True).FrameOfReferenceUID
    study_a = pydicom.dcmread(alert, stop_before_pixels=True)
    real_ct = _join_study(Path(get_testdata_file("CT_small.dcm")), folder / "real_ct.dcm",
                          study_a, SpecificCharacterSet="ISO_IR 192")
    dark = write_dicom(us_dataset(
        generate("us", np.random.default_rng(3), lesion=False).image * 0.12,
        {"PatientName": UTF8_NAME, "PatientID": "ZS-1"}), folder / "dark.dcm")
    dark = _join_study(dark, dark, study_a)
    gb = _uncalibrated_us_lesion(demo_runner, folder / "gb.dcm", {"PatientID": "LS-2"})
    gb = _join_study(gb, gb, pydicom.Dataset(), SpecificCharacterSet="GB18030",
                     PatientName=GB18030_NAME, StudyDescription="超声")
    sweep = write_dicom(us_multiframe_dataset(
        generate_sweep(np.random.default_rng(7), frames=6),
        {"PatientName": "SWEEP^PHANTOM", "PatientID": "SWEEP-1"}), folder / "sweep.dcm")
    files = {"alert": alert, "real_ct": real_ct, "dark": dark, "gb18030": gb, "sweep": sweep}
    landed = {}
    for name, path in files.items():
        landed[lander.land(path.read_bytes(), sop_instance_uid=None, source="dicom",
                           origin="TEST").instance_id] = name
        assert worker.run_once()
    instances = {landed[row["id"]]: AnalysedInstance(worker.spool.path_for(row["local_id"]),
                                                     row)
                 for row in ResultStore(conn).instances()}
    conn.close()
    model = ModelIdentity.from_manifest(demo_runner.package.manifest)
    return Analysed(instances, model)


def _sop(instance: AnalysedInstance) -> str:
    """The SOP Instance UID of an analysed image (its file's)."""
    return str(pydicom.dcmread(instance.path, stop_before_pixels=True).SOPInstanceUID)


def _study(analysed: Analysed, *names: str) -> list[AnalysedInstance]:
    return [analysed.instances[name] for name in names]


def _write(document: Document, folder: Path) -> Path:
    path = folder / f"{document.kind}-{document.sop_instance_uid}.dcm"
    document.dataset.save_as(path, enforce_file_format=True)
    return path


def dciodvfy(path: Path) -> list[str]:
    """dciodvfy's warnings about ``path``; fails the test on any error."""
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    assert errors == [], f"{path.name}: {errors}"
    return [line for line in lines if line.startswith("Warning")]


def _allowed(warning: str) -> bool:
    return ("<99CLINIBOX>" in warning and "Coding Scheme Designator" in warning) or (
        "Patient's Weight" in warning) or warning.endswith("attribute <Laterality>")


def _text_items(sr: pydicom.Dataset) -> list[str]:
    found = []

    def walk(items) -> None:
        for item in items:
            if item.get("ValueType") == "TEXT":
                found.append(str(item.TextValue))
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return found


def _assessments(sr: hd.sr.Comprehensive3DSR) -> dict[str, str]:
    """SOP Instance UID -> the assessment code each image's measurement group holds."""
    out = {}
    for group in sr.content.get_image_measurement_groups():
        source = next(i for i in group[0].ContentSequence if i.ValueType == "IMAGE")
        sop = source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        evaluation = group.get_qualitative_evaluations()
        out[sop] = next(e.value.value for e in evaluation if e.name.value == "ASSESSMENT")
    return out


# -- the structured report --------------------------------------------------------------


@pytest.mark.slow
def test_the_sr_carries_each_lesion_with_its_region_class_sizes_and_probability(
        analysed, tmp_path):
    alert = analysed.instances["alert"]
    lesion = alert.result["lesions"][0]
    assert lesion["units"] == "mm" and len(lesion["contour"]) >= 3  # a real segmenting result
    (document,) = study_documents(_study(analysed, "alert", "real_ct", "dark"), analysed.model,
                                  device_id=DEVICE, version=1, kinds=["sr"])
    path = _write(document, tmp_path)
    assert [w for w in dciodvfy(path) if not _allowed(w)] == []
    sr = hd.sr.srread(path)
    assert sr.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == len(alert.result["lesions"])
    group = groups[0]
    long_axis = group.get_measurements(name=LONG_AXIS)[0]
    short_axis = group.get_measurements(name=SHORT_AXIS)[0]
    area = group.get_measurements(name=AREA)[0]
    assert long_axis.value == pytest.approx(lesion["long_axis_mm"])
    assert short_axis.value == pytest.approx(lesion["short_axis_mm"])
    assert area.value == pytest.approx(lesion["area_mm2"])
    assert (long_axis.unit.value, short_axis.unit.value, area.unit.value) == ("mm", "mm", "mm2")
    probability = group.get_measurements(name=hd.sr.CodedConcept(*codes.DCM.Probability))[0]
    assert probability.value == pytest.approx(lesion["probability"])
    cancer = group.get_measurements(name=hd.sr.CodedConcept(*codes.DCM.ProbabilityOfCancer))[0]
    assert cancer.value == pytest.approx(lesion["class_probabilities"]["malignant"])
    expected_class = max(lesion["class_probabilities"], key=lesion["class_probabilities"].get)
    morphology = group.get_qualitative_evaluations(name=MORPHOLOGY)[0].value
    assert morphology.value == {"benign": "3898006", "malignant": "86049000"}[expected_class]
    assert morphology.scheme_designator == "SCT"
    assert group.finding_type.value == "52988006"  # SCT Lesion
    # the region: the mask's outline on the source image, closed, through the pixel centres
    outline = group.roi.value
    assert outline.shape == (len(lesion["contour"]) + 1, 2)
    assert outline[0] == pytest.approx(outline[-1])
    assert outline[0] == pytest.approx(np.array(lesion["contour"][0]) + 0.5)
    (image_ref,) = [i for i in group.roi.ContentSequence if i.ValueType == "IMAGE"]
    assert image_ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
        _sop(alert))
    # the observer is the model as a device; its name and version are said
    observers = sr.content.get_observer_contexts()
    device = observers[0].observer_identifying_attributes
    assert device.name == analysed.model.name
    assert device.model_name == analysed.model.model_id == "clinibox-demo-lesion@1.0.0"
    assert device.manufacturer_name == "clinibox"


def test_the_sr_references_the_source_study_series_and_instances(analysed, tmp_path):
    study = _study(analysed, "alert", "real_ct", "dark")
    (document,) = study_documents(study, analysed.model, device_id=DEVICE, version=1,
                                  kinds=["sr"])
    sr = pydicom.dcmread(_write(document, tmp_path))
    sources = [pydicom.dcmread(i.path, stop_before_pixels=True) for i in study]
    assert sr.StudyInstanceUID == sources[0].StudyInstanceUID
    assert document.study_key == sources[0].StudyInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence
    assert [e.StudyInstanceUID for e in evidence] == [sources[0].StudyInstanceUID]
    referenced = {(s.SeriesInstanceUID, i.ReferencedSOPInstanceUID)
                  for s in evidence[0].ReferencedSeriesSequence for i in s.ReferencedSOPSequence}
    assert referenced == {(s.SeriesInstanceUID, s.SOPInstanceUID) for s in sources}
    assert sr.SeriesInstanceUID not in {s.SeriesInstanceUID for s in sources}


def test_an_image_the_model_cannot_judge_is_stated_never_reported_as_no_finding(
        analysed, tmp_path):
    real_ct, dark = analysed.instances["real_ct"], analysed.instances["dark"]
    assert real_ct.result["assessment"] == "outside_validated_range"
    assert dark.result["assessment"] == "not_assessable"
    (document,) = study_documents(_study(analysed, "alert", "real_ct", "dark"), analysed.model,
                                  device_id=DEVICE, version=1, kinds=["sr"])
    path = _write(document, tmp_path)
    sr = hd.sr.srread(path)
    assessments = _assessments(sr)
    assert assessments[_sop(real_ct)] == "OUTSIDE-RANGE"
    assert assessments[_sop(dark)] == "NOT-ASSESSABLE"
    assert assessments[_sop(analysed.instances["alert"])] == "FINDING"
    texts = _text_items(pydicom.dcmread(path))
    # images are named by their place in the report (and series/instance numbers), never by
    # a UID: free text survives a de-identified export
    assert not any(_sop(i) in t for t in texts for i in (real_ct, dark))
    about_ct = [t for t in texts if t.startswith("Image 2 (")]
    about_dark = [t for t in texts if t.startswith("Image 3 (")]
    assert len(about_ct) == 1 and "outside what the model was validated on" in about_ct[0]
    assert len(about_dark) == 1 and "not assessable" in about_dark[0]
    assert "rescan suggested" in about_dark[0]
    for text in about_ct + about_dark:
        assert "not a negative result" in text and "no suspicious area" not in text


def test_the_sr_says_it_assists_a_doctor_and_a_demo_model_is_not_for_clinical_use(
        analysed, tmp_path):
    assert analysed.model.demo  # the bundled package is signed with the DEMO-ONLY key
    study = _study(analysed, "alert")
    (demo,) = study_documents(study, analysed.model, device_id=DEVICE, version=1, kinds=["sr"])
    texts = " ".join(_text_items(pydicom.dcmread(_write(demo, tmp_path))))
    assert "to assist a doctor" in texts and "not a diagnosis" in texts
    assert "trained on synthetic phantoms" in texts and "not for clinical use" in texts
    clinical = dataclasses.replace(analysed.model, demo=False)
    (plain,) = study_documents(study, clinical, device_id=DEVICE, version=1, kinds=["sr"])
    texts = " ".join(_text_items(plain.dataset))
    assert "to assist a doctor" in texts and "synthetic phantoms" not in texts


def test_a_lesion_on_an_uncalibrated_image_is_measured_in_pixels(analysed, tmp_path):
    gb = analysed.instances["gb18030"]
    lesion = gb.result["lesions"][0]
    assert lesion["units"] == "px" and lesion["long_axis_mm"] is None
    (document,) = study_documents([gb], analysed.model, device_id=DEVICE, version=1,
                                  kinds=["sr"])
    path = _write(document, tmp_path)
    assert [w for w in dciodvfy(path) if not _allowed(w)] == []
    group = hd.sr.srread(path).content.get_planar_roi_measurement_groups()[0]
    long_axis = group.get_measurements(name=LONG_AXIS)[0]
    area = group.get_measurements(name=AREA)[0]
    assert long_axis.value == pytest.approx(lesion["long_axis_px"])
    assert area.value == pytest.approx(lesion["area_px2"])
    for measurement in (long_axis, area, group.get_measurements(name=SHORT_AXIS)[0]):
        assert (measurement.unit.value, measurement.unit.scheme_designator) == (
            "{pixels}", "UCUM")


@pytest.mark.slow
def test_a_lesion_on_a_multi_frame_image_points_at_its_frame(analysed, tmp_path):
    sweep = analysed.instances["sweep"]
    lesion = sweep.result["lesions"][0]
    (document,) = study_documents([sweep], analysed.model, device_id=DEVICE, version=1,
                                  kinds=["sr"])
    path = _write(document, tmp_path)
    assert [w for w in dciodvfy(path) if not _allowed(w)] == []
    group = hd.sr.srread(path).content.get_planar_roi_measurement_groups()[0]
    (image_ref,) = [i for i in group.roi.ContentSequence if i.ValueType == "IMAGE"]
    assert image_ref.ReferencedSOPSequence[0].ReferencedFrameNumber == lesion["frame"] + 1


def test_chinese_patient_names_survive_in_utf8_and_from_gb18030(analysed, tmp_path):
    alert = study_documents(_study(analysed, "alert"), analysed.model, device_id=DEVICE,
                            version=1, kinds=ALL_KINDS)
    gb = study_documents([analysed.instances["gb18030"]], analysed.model, device_id=DEVICE,
                         version=1, kinds=ALL_KINDS)
    assert pydicom.dcmread(analysed.instances["gb18030"].path).SpecificCharacterSet == "GB18030"
    assert {d.kind for d in alert} == {d.kind for d in gb} == set(ALL_KINDS)
    for documents, name in ((alert, UTF8_NAME), (gb, GB18030_NAME)):
        for document in documents:
            back = pydicom.dcmread(_write(document, tmp_path))
            assert back.SpecificCharacterSet == "ISO_IR 192"
            assert str(back.PatientName) == name, document.kind
    raw = (tmp_path / f"sr-{gb[0].sop_instance_uid}.dcm").read_bytes()
    assert GB18030_NAME.encode("utf-8") in raw


# -- versions and UIDs --------------------------------------------------------------------


@pytest.mark.slow
def test_uids_are_deterministic_per_device_study_model_version_and_kind(analysed):
    study = _study(analysed, "alert")

    def uids(**overrides) -> dict[str, str]:
        arguments = {"device_id": DEVICE, "version": 1, "kinds": ALL_KINDS} | overrides
        return {d.kind: d.sop_instance_uid
                for d in study_documents(study, analysed.model, **arguments)}

    first = uids()
    assert uids() == first  # the same completion after a crash makes the same documents
    assert len(set(first.values())) == 3
    assert set(uids(device_id="box-0043").values()).isdisjoint(first.values())
    assert set(uids(version=2).values()).isdisjoint(first.values())
    other_model = dataclasses.replace(analysed.model, model_id="other@2.0.0")
    other = {d.kind: d.sop_instance_uid for d in study_documents(
        study, other_model, device_id=DEVICE, version=1, kinds=ALL_KINDS)}
    assert set(other.values()).isdisjoint(first.values())


@pytest.mark.slow
def test_version_two_names_version_one_as_its_predecessor(analysed, tmp_path):
    study = _study(analysed, "alert", "real_ct")
    (first,) = study_documents(study[:1], analysed.model, device_id=DEVICE, version=1,
                               kinds=["sr"])
    (second,) = study_documents(study, analysed.model, device_id=DEVICE, version=2,
                                kinds=["sr"], predecessor=first)
    (derived,) = study_documents(study, analysed.model, device_id=DEVICE, version=2,
                                 kinds=["sr"])
    assert first.dataset.get("PredecessorDocumentsSequence") is None
    for document in (second, derived):
        path = _write(document, tmp_path)
        assert [w for w in dciodvfy(path) if not _allowed(w)] == []
        back = pydicom.dcmread(path)
        assert back.InstanceNumber == 2
        assert back.SeriesInstanceUID == first.dataset.SeriesInstanceUID
        (study_ref,) = back.PredecessorDocumentsSequence
        assert study_ref.StudyInstanceUID == first.dataset.StudyInstanceUID
        (series_ref,) = study_ref.ReferencedSeriesSequence
        assert series_ref.SeriesInstanceUID == first.dataset.SeriesInstanceUID
        (sop_ref,) = series_ref.ReferencedSOPSequence
        assert sop_ref.ReferencedSOPInstanceUID == first.sop_instance_uid
        assert sop_ref.ReferencedSOPClassUID == first.sop_class_uid
    assert second.sop_instance_uid == derived.sop_instance_uid != first.sop_instance_uid


def test_bad_requests_are_refused_plainly(analysed):
    alert, gb = analysed.instances["alert"], analysed.instances["gb18030"]
    with pytest.raises(ValueError, match="unknown DICOM result kinds"):
        study_documents([alert], analysed.model, device_id=DEVICE, version=1, kinds=["pdf"])
    with pytest.raises(ValueError, match="share one study"):
        study_documents([alert, gb], analysed.model, device_id=DEVICE, version=1, kinds=["sr"])
    with pytest.raises(ValueError, match="starts at 1"):
        study_documents([alert], analysed.model, device_id=DEVICE, version=0, kinds=["sr"])


def test_the_demo_is_recognised_from_its_manifest(analysed):
    manifest = {"name": "x", "version": "1.0.0", "thresholds": {"finding": 0.3},
                "intended_use": "lesion detection", "signature": {"key_id": "0123456789abcdef"}}
    clinical = ModelIdentity.from_manifest(manifest)
    assert not clinical.demo and clinical.finding_threshold == 0.3
    assert clinical.model_id == "x@1.0.0"
    assert ModelIdentity.from_manifest(manifest | {"intended_use": "DEMONSTRATION ONLY — x"}).demo
    shipped = json.loads((REPO_ROOT / "models" / "clinibox-demo-lesion" / "1.0.0"
                          / "manifest.json").read_text(encoding="utf-8"))
    assert analysed.model.demo
    assert analysed.model.finding_threshold == pytest.approx(shipped["thresholds"]["finding"])


# -- segmentation ---------------------------------------------------------------------------


def test_the_seg_holds_each_lesion_mask_as_its_class_segment(analysed, tmp_path):
    alert = analysed.instances["alert"]
    lesion = alert.result["lesions"][0]
    documents = study_documents(_study(analysed, "alert", "real_ct", "dark"), analysed.model,
                                device_id=DEVICE, version=1, kinds=["seg"])
    (document,) = documents  # only the alert has contours
    path = _write(document, tmp_path)
    assert [w for w in dciodvfy(path) if not _allowed(w)] == []
    seg = hd.seg.segread(path)
    classes = {max(x["class_probabilities"], key=x["class_probabilities"].get)
               for x in alert.result["lesions"]}
    labels = {seg.get_segment_description(n).segment_label for n in seg.segment_numbers}
    assert labels == classes
    description = seg.get_segment_description(1)
    assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    algorithm = description.algorithm_identification[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (
        analysed.model.name, analysed.model.version)
    (source_ref,) = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert source_ref.ReferencedSOPInstanceUID == _sop(alert)
    mask = seg.get_pixels_by_source_instance(
        [_sop(alert)], combine_segments=True)[0]
    rows, columns = mask.shape[:2]
    expected = np.zeros((rows, columns), dtype=bool)
    for each in alert.result["lesions"]:
        expected |= rasterise(each["contour"], rows, columns)
    assert np.array_equal(np.squeeze(mask) > 0, expected)
    # the filled outlines are the model's masks (every lesion of the image), up to the
    # outlines' simplification
    assert lesion["area_px2"] > 0
    assert (mask > 0).sum() == pytest.approx(
        sum(each["area_px2"] for each in alert.result["lesions"]), rel=0.25)


def test_a_multi_frame_source_gets_its_mask_on_the_lesions_frame(analysed, tmp_path):
    """pydicom's enhanced CT (two frames, a frame of reference) with a lesion on frame 2,
    its record made by the box's own lesion code."""
    path = Path(get_testdata_file("eCT_Supplemental.dcm"))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    contour = ((100.0, 100.0), (140.0, 100.0), (140.0, 130.0), (100.0, 130.0))
    box = Box(100.0, 100.0, 141.0, 131.0, 0.93, "lesion", contour=contour,
              class_probabilities={"benign": 0.7, "malignant": 0.3})
    lesion = lesion_from_box(box, 1, (0.5, 0.5)).to_dict()
    result = {"sop_instance_uid": ds.SOPInstanceUID, "study_instance_uid": ds.StudyInstanceUID,
              "assessment": "finding", "assessment_reason": "", "probability": 0.93,
              "lesions": [lesion], "findings": [box.to_dict()], "key_frame": 1}
    documents = study_documents([AnalysedInstance(path, result)], analysed.model,
                                device_id=DEVICE, version=1, kinds=ALL_KINDS)
    by_kind = {d.kind: d for d in documents}
    assert set(by_kind) == set(ALL_KINDS)
    for document in documents:
        assert [w for w in dciodvfy(_write(document, tmp_path)) if not _allowed(w)] == []
    seg = hd.seg.segread(tmp_path / f"seg-{by_kind['seg'].sop_instance_uid}.dcm")
    assert seg.get_segment_description(1).segment_label == "benign"
    (frame,) = seg.PerFrameFunctionalGroupsSequence
    source = frame.DerivationImageSequence[0].SourceImageSequence[0]
    assert (source.ReferencedSOPInstanceUID, source.ReferencedFrameNumber) == (
        ds.SOPInstanceUID, 2)
    filled = np.asarray(seg.pixel_array).reshape(-1, ds.Rows, ds.Columns)[0] > 0
    assert filled[100:131, 100:141].all() and filled.sum() == 41 * 31
    key = pydicom.dcmread(tmp_path / f"key_image-{by_kind['key_image'].sop_instance_uid}.dcm")
    assert key.SourceImageSequence[0].ReferencedFrameNumber == 2


def test_a_ct_without_its_frame_of_reference_gets_no_seg_but_its_other_documents(
        analysed, tmp_path, caplog):
    alert = analysed.instances["alert"]
    broken = _join_study(alert.path, tmp_path / "no-for.dcm", pydicom.Dataset())
    ds = pydicom.dcmread(broken)
    del ds.FrameOfReferenceUID
    ds.save_as(broken, enforce_file_format=True)
    documents = study_documents([dataclasses.replace(alert, path=broken)], analysed.model,
                                device_id=DEVICE, version=1, kinds=ALL_KINDS)
    assert [d.kind for d in documents] == ["sr", "key_image"]
    assert "no DICOM SEG" in caplog.text and "Frame Of Reference" in caplog.text


def test_no_seg_without_contours_nor_for_a_cine_highdicom_cannot_place(analysed):
    # the sweep's lesion has an outline, but an ultrasound cine has no frame of reference
    assert analysed.instances["sweep"].result["lesions"][0]["contour"]
    for study in (["real_ct"], ["dark"], ["sweep"]):
        documents = study_documents(_study(analysed, *study), analysed.model, device_id=DEVICE,
                                    version=1, kinds=["seg"])
        assert documents == [], study


# -- key image ------------------------------------------------------------------------------


def test_the_key_image_is_the_viewers_drawing_as_a_secondary_capture(analysed, tmp_path):
    alert = analysed.instances["alert"]
    heatmap = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8)
    with_heatmap = dataclasses.replace(alert, heatmap=heatmap)
    documents = study_documents([with_heatmap], analysed.model, device_id=DEVICE, version=1,
                                kinds=["key_image"])
    (document,) = documents
    path = _write(document, tmp_path)
    assert [w for w in dciodvfy(path) if not _allowed(w)] == []
    key = pydicom.dcmread(path)
    assert key.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert key.PhotometricInterpretation == "RGB" and key.BurnedInAnnotation == "YES"
    assert "not for clinical use" in key.ImageComments and "assist a doctor" in key.ImageComments
    assert key.SourceImageSequence[0].ReferencedSOPInstanceUID == _sop(alert)
    assert key.StudyInstanceUID == pydicom.dcmread(alert.path).StudyInstanceUID
    # exactly what the viewer prints: web.render draws the same frame the same way
    ds, header = open_dataset(alert.path, LimitsConfig())
    with decode_guard():
        array, photometric = frame_pixels(ds, header, alert.result["key_frame"])
    preview = frame_preview(ds, header, alert.result["key_frame"], array, photometric)
    printed = np.asarray(Image.open(io.BytesIO(key_image_png(
        preview, None, alert.result["findings"], heatmap, max_side=1024))))
    assert np.array_equal(key.pixel_array, printed)
    red = (key.pixel_array == np.array(annotate.BOX_COLOUR)).all(axis=-1)
    assert red.sum() > 50  # the boxes are burned in


def test_no_key_image_without_a_finding(analysed):
    assert study_documents(_study(analysed, "real_ct", "dark"), analysed.model,
                           device_id=DEVICE, version=1, kinds=["key_image"]) == []


def test_uids_are_valid_dicom_uids(analysed):
    for document in study_documents(_study(analysed, "alert"), analysed.model,
                                    device_id=DEVICE, version=3, kinds=ALL_KINDS):
        for uid in (document.sop_instance_uid, str(document.dataset.SeriesInstanceUID)):
            assert len(uid) <= 64 and re.fullmatch(r"[0-9]+(\.[0-9]+)*", uid), uid


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
    path = _write(document, tmp_path)
    assert [w for w in dciodvfy(path) if not _allowed(w)] == []
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
    texts = _text_items(pydicom.dcmread(path))
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
    texts = _text_items(pydicom.dcmread(path))
    (series,) = [t for t in texts if t.startswith("Series")]
    assert "read image by image, not as a volume: slices are missing or unevenly spaced" in series
    assert sum("1 lesion marked" in t for t in texts) == 6


def test_a_series_or_instance_number_that_is_no_number_never_reaches_a_sentence():
    from firmware_app.dicom_out import statements

    line = statements.image_result(1, "DOE^JOHN 1970", "12", {"assessment": "no_finding",
                                                               "probability": 0.1})
    assert "DOE" not in line and line.startswith("Image 1 (instance 12)")
    assert "DOE" not in statements.per_slice_result("DOE^JOHN", "CT", 3, "gap")


def _imperfect_sex_u(ds: pydicom.Dataset) -> None:
    ds.PatientSex = "U"  # common on modalities; not one of PS3.3's M, F, O


def _imperfect_orientation(ds: pydicom.Dataset) -> None:
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1]  # five cosines


def _imperfect_thickness(ds: pydicom.Dataset) -> None:
    ds.SliceThickness = ["1", "2"]


@pytest.mark.parametrize("change", [_imperfect_sex_u, _imperfect_orientation,
                                    _imperfect_thickness])
def test_an_imperfect_header_still_gets_its_documents(analysed, tmp_path, change):
    """Found by the red team of issue 43: each of these stopped the study's SR for good."""
    source = analysed.instances["alert"]
    ds = pydicom.dcmread(source.path)
    change(ds)
    path = tmp_path / "imperfect.dcm"
    ds.save_as(path, enforce_file_format=True)
    documents = study_documents([dataclasses.replace(source, path=path)], analysed.model,
                                device_id=DEVICE, version=1, kinds=["sr", "seg", "key_image"])
    assert {"sr", "key_image"} <= {d.kind for d in documents}
    report = next(d.dataset for d in documents if d.kind == "sr")
    assert str(report.get("PatientSex", "")) in ("", "M", "F", "O")


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
    (_imperfect_orientation, "no-image-orientation"),
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
    path = _write(by_kind["seg"], tmp_path)
    assert [w for w in dciodvfy(path) if not _allowed(w)] == []
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
