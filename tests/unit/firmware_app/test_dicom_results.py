"""DICOM results for the PACS: SR (TID 1500), SEG and key image, from real analysis results.

Phantoms and pydicom's real CT are landed and analysed by the real worker with
the bundled demo model (phantom-trained, not for clinical use); the documents
are built from what ``ResultStore.instances()`` returns, written to disk,
validated with dicom3tools' ``dciodvfy`` and read back with highdicom. A CT
series read as a volume is in ``test_dicom_results_series.py``.

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
from firmware_app.dicom_out.seg import rasterise
from firmware_app.dicom_out.study_documents import (
    AnalysedInstance,
    ModelIdentity,
    study_documents,
)
from firmware_app.settings.box import Config
from firmware_app.storage.results import ResultStore
from phantoms.dicom import us_dataset, us_multiframe_dataset, write_dicom
from phantoms.images import generate, generate_sweep
from tests.dicom_documents import (
    AREA,
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
from tests.viewer_state import ct_phantom, local_box
from web.render import key_image_png

ALL_KINDS = ("sr", "seg", "key_image")
UTF8_NAME = "张^三"
GB18030_NAME = "李四^王五"


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
    path = write_document(document, tmp_path)
    assert [w for w in dciodvfy(path) if not allowed_warning(w)] == []
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
    sr = pydicom.dcmread(write_document(document, tmp_path))
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
    path = write_document(document, tmp_path)
    sr = hd.sr.srread(path)
    assessments = _assessments(sr)
    assert assessments[_sop(real_ct)] == "OUTSIDE-RANGE"
    assert assessments[_sop(dark)] == "NOT-ASSESSABLE"
    assert assessments[_sop(analysed.instances["alert"])] == "FINDING"
    texts = text_items(pydicom.dcmread(path))
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
    texts = " ".join(text_items(pydicom.dcmread(write_document(demo, tmp_path))))
    assert "to assist a doctor" in texts and "not a diagnosis" in texts
    assert "trained on synthetic phantoms" in texts and "not for clinical use" in texts
    clinical = dataclasses.replace(analysed.model, demo=False)
    (plain,) = study_documents(study, clinical, device_id=DEVICE, version=1, kinds=["sr"])
    texts = " ".join(text_items(plain.dataset))
    assert "to assist a doctor" in texts and "synthetic phantoms" not in texts


def test_a_lesion_on_an_uncalibrated_image_is_measured_in_pixels(analysed, tmp_path):
    gb = analysed.instances["gb18030"]
    lesion = gb.result["lesions"][0]
    assert lesion["units"] == "px" and lesion["long_axis_mm"] is None
    (document,) = study_documents([gb], analysed.model, device_id=DEVICE, version=1,
                                  kinds=["sr"])
    path = write_document(document, tmp_path)
    assert [w for w in dciodvfy(path) if not allowed_warning(w)] == []
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
    path = write_document(document, tmp_path)
    assert [w for w in dciodvfy(path) if not allowed_warning(w)] == []
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
            back = pydicom.dcmread(write_document(document, tmp_path))
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
        path = write_document(document, tmp_path)
        assert [w for w in dciodvfy(path) if not allowed_warning(w)] == []
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
    path = write_document(document, tmp_path)
    assert [w for w in dciodvfy(path) if not allowed_warning(w)] == []
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
        written = write_document(document, tmp_path)
        assert [w for w in dciodvfy(written) if not allowed_warning(w)] == []
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
    path = write_document(document, tmp_path)
    assert [w for w in dciodvfy(path) if not allowed_warning(w)] == []
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


def test_a_series_or_instance_number_that_is_no_number_never_reaches_a_sentence():
    from firmware_app.dicom_out import statements

    line = statements.image_result(1, "DOE^JOHN 1970", "12", {"assessment": "no_finding",
                                                               "probability": 0.1})
    assert "DOE" not in line and line.startswith("Image 1 (instance 12)")
    assert "DOE" not in statements.per_slice_result("DOE^JOHN", "CT", 3, "gap")


def _imperfect_sex_u(ds: pydicom.Dataset) -> None:
    ds.PatientSex = "U"  # common on modalities; not one of PS3.3's M, F, O


def _imperfect_thickness(ds: pydicom.Dataset) -> None:
    ds.SliceThickness = ["1", "2"]


@pytest.mark.parametrize("change", [_imperfect_sex_u, imperfect_orientation,
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
