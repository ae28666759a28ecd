"""De-identification of one object at a time: the Basic Profile via dicognito and the rest.

Real images (pydicom's test files) full of canaries (tests/export_canaries.py):
no canary survives in the written bytes, UIDs and dates are replaced the same
way across one export, a report's references follow its images, burned-in
text of ultrasound is blanked (or the image refused).
"""

from __future__ import annotations

import copy
import datetime as dt
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from firmware_app.dicom_out.burned_in import BAND_BOTTOM, BAND_SIDE, BAND_TOP
from firmware_app.dicom_out.deidentify import Deidentifier
from firmware_app.dicom_out.leaks import identifying_values, leaked
from tests.canary import DATE_ATTRIBUTES
from tests.export_canaries import (
    STUDY_UID,
    US_FRAMES_REGION,
    CanaryStudy,
    canary_date,
    write_canary_study,
)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> CanaryStudy:
    return write_canary_study(tmp_path_factory.mktemp("canaries"))


def _written(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _deidentified(study: CanaryStudy, deidentifier: Deidentifier | None = None,
                  ) -> dict[str, tuple[Dataset, bytes]]:
    deidentifier = deidentifier or Deidentifier()
    out = {}
    for name, path in study.files.items():
        ds = deidentifier.deidentify(pydicom.dcmread(path))
        data = _written(ds)
        out[name] = (pydicom.dcmread(io.BytesIO(data)), data)
    return out


def test_the_canaries_are_there_before(study):
    for path in study.files.values():
        assert len(study.canaries.found_in(path.read_bytes())) > 40


def test_no_canary_survives_in_any_byte(study):
    for name, (_ds, data) in _deidentified(study).items():
        assert study.canaries.found_in(data) == [], name


def test_the_profile_is_recorded_and_identifying_attributes_are_gone(study):
    for name, (ds, _data) in _deidentified(study).items():
        assert ds.PatientIdentityRemoved == "YES"
        codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
        assert codes[:2] == ["113100", "113107"], name
        assert ("113101" in codes) == name.startswith("us"), name  # clean pixel data
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        assert any("BASIC PROFILE" in m for m in ds.DeidentificationMethod)
        for keyword in ("OtherPatientIDsSequence", "ReferencedPatientSequence",
                        "RequestAttributesSequence", "PatientAge", "PatientWeight",
                        "PatientSize", "InstitutionAddress",
                        "StudyDescription", "SeriesDescription", "ImageComments",
                        "PatientComments", "PerformingPhysicianName",
                        "PatientTelephoneNumbers", "IssuerOfPatientID"):
            assert keyword not in ds, (name, keyword)
        # X/Z/D resolved to D: dicognito's consistent dummies
        for keyword in ("InstitutionName", "OperatorsName", "StationName"):
            assert not str(ds[keyword].value).startswith("CNRY"), (name, keyword)
        for keyword in ("PatientName", "PatientBirthDate", "PatientSex",
                        "ReferringPhysicianName"):
            assert ds[keyword].value in (None, "", b""), (name, keyword)
        assert ds.DeviceSerialNumber == "0"
        assert not [e for e in ds.iterall() if e.tag.is_private]
        assert not [e for e in ds if e.tag.group in (0x5000, 0x6000)]
        assert ds.PatientID and not ds.PatientID.startswith("CNRY")
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert "SourceApplicationEntityTitle" not in ds.file_meta


def test_uids_and_dates_are_replaced_the_same_way_in_every_file_of_one_export(study):
    files = _deidentified(study)
    study_uids = {ds.StudyInstanceUID for ds, _ in files.values()}
    assert len(study_uids) == 1 and STUDY_UID not in study_uids
    assert len({ds.SOPInstanceUID for ds, _ in files.values()}) == len(files)
    shifts = set()
    for n, (ds, _) in enumerate(files.values()):
        original = canary_date(n, DATE_ATTRIBUTES.index("StudyDate"))
        shifts.add((original - dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date()).days)
    assert len(shifts) == 1 and 62 <= shifts.pop() <= 731
    again = _deidentified(study)
    assert {ds.StudyInstanceUID for ds, _ in again.values()} != study_uids  # a new export


def test_a_report_still_points_at_the_deidentified_images(study):
    deidentifier = Deidentifier()
    images = {name: deidentifier.deidentify(pydicom.dcmread(path))
              for name, path in study.files.items()}
    source = pydicom.dcmread(study.files["ct"])
    report = structured_report(source)
    out = pydicom.dcmread(io.BytesIO(_written(deidentifier.deidentify(report, own=True))))
    ct = images["ct"]
    evidence = out.CurrentRequestedProcedureEvidenceSequence[0]
    assert out.StudyInstanceUID == ct.StudyInstanceUID == evidence.StudyInstanceUID
    assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.SeriesInstanceUID
    item = out.ContentSequence[1].ReferencedSOPSequence[0]
    assert item.ReferencedSOPInstanceUID == ct.SOPInstanceUID
    assert out.ContentSequence[0].TextValue == "Lesion 1: nodule, 12 mm"  # the box's own words
    codes = [c.CodeValue for c in out.DeidentificationMethodCodeSequence]
    assert "113104" in codes  # clean structured content
    assert study.canaries.found_in(_written(out)) == []


def structured_report(image: Dataset) -> Dataset:
    """A minimal Comprehensive SR about ``image`` (patient and study copied from it)."""
    sr = Dataset()
    sr.file_meta = pydicom.dataset.FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    sr.SOPInstanceUID = "1.2.826.0.1.3680043.9.7777.50.1"
    sr.Modality = "SR"
    sr.Manufacturer = "clinibox"
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID",
                    "StudyDate", "StudyTime", "AccessionNumber", "SpecificCharacterSet"):
        setattr(sr, keyword, image.get(keyword))
    sr.SeriesInstanceUID = "1.2.826.0.1.3680043.9.7777.50.2"
    sr.ContentDate, sr.ContentTime = image.StudyDate, image.StudyTime
    series = Dataset()
    series.SeriesInstanceUID = image.SeriesInstanceUID
    reference = Dataset()
    reference.ReferencedSOPClassUID = image.SOPClassUID
    reference.ReferencedSOPInstanceUID = image.SOPInstanceUID
    series.ReferencedSOPSequence = Sequence([reference])
    evidence = Dataset()
    evidence.StudyInstanceUID = image.StudyInstanceUID
    evidence.ReferencedSeriesSequence = Sequence([series])
    sr.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    text = Dataset()
    text.ValueType, text.TextValue = "TEXT", "Lesion 1: nodule, 12 mm"
    observer = Dataset()
    observer.ValueType, observer.PersonName = "PNAME", image.PatientName
    picture = Dataset()
    picture.ValueType = "IMAGE"
    picture.ReferencedSOPSequence = Sequence([copy.deepcopy(reference)])
    sr.ContentSequence = Sequence([text, picture, observer])
    return sr


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(pydicom.dcmread(path).pixel_array)


def test_ultrasound_regions_keep_only_the_data_and_blank_the_text(study):
    files = _deidentified(study)
    before = _pixels(study.files["us_frames"])
    after, _data = files["us_frames"]
    pixels = np.asarray(after.pixel_array)
    assert pixels.shape == before.shape == (3, 480, 640, 3)
    x0, y0, x1, y1 = US_FRAMES_REGION
    inside = np.zeros(pixels.shape[1:3], dtype=bool)
    inside[y0:y1 + 1, x0:x1 + 1] = True
    assert before[:, ~inside].any()  # the burned-in text was there …
    assert not pixels[:, ~inside].any()  # … and is gone from every frame
    assert np.array_equal(pixels[:, inside], before[:, inside])
    assert after.BurnedInAnnotation == "NO"
    assert after.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    palette, _ = files["us_regions"]
    region = palette.SequenceOfUltrasoundRegions[0]
    top_bar = np.asarray(palette.pixel_array)[: int(region.RegionLocationMinY0)]
    assert not top_bar.any() and _pixels(study.files["us_regions"])[:60].any()


def test_ultrasound_without_regions_keeps_only_a_central_rectangle_stored_uncompressed(study):
    source = pydicom.dcmread(study.files["us_band"])
    assert source.file_meta.TransferSyntaxUID.is_compressed
    before = np.asarray(source.pixel_array)
    after, _ = _deidentified(study)["us_band"]
    pixels = np.asarray(after.pixel_array)
    top, bottom = round(480 * BAND_TOP), round(480 * BAND_BOTTOM)
    side = round(640 * BAND_SIDE)
    assert before[:top].any() and not pixels[:top].any() and not pixels[-bottom:].any()
    assert not pixels[:, :side].any() and not pixels[:, -side:].any()
    assert np.array_equal(pixels[top:-bottom, side:-side], before[top:-bottom, side:-side])
    assert after.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert after.PhotometricInterpretation == "RGB"
    assert "CLEAN PIXEL DATA US-FRAME" in after.DeidentificationMethod


def test_burned_in_text_without_regions_is_blanked_entirely_not_left_out():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert np.asarray(ds.pixel_array).any()
    ds.BurnedInAnnotation = ["NO", "YES"]  # any YES of a multi-valued annotation counts
    out = Deidentifier().deidentify(ds)
    assert not np.asarray(out.pixel_array).any() and out.Rows == 128
    assert "CLEAN PIXEL DATA ALL" in out.DeidentificationMethod
    assert out.BurnedInAnnotation == "NO"


def test_a_secondary_capture_is_blanked_whatever_it_says_another_text_kind_unless_no():
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_small_odd.dcm"))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.pop("BurnedInAnnotation", None)
    says_no = copy.deepcopy(ds)
    says_no.BurnedInAnnotation = "NO"  # a screen capture's header is not believed (issue 56)
    photo = copy.deepcopy(says_no)
    photo.SOPClassUID, photo.Modality = "1.2.840.10008.5.1.4.1.1.77.1.4", "XC"
    for source in (ds, says_no):
        out = Deidentifier().deidentify(source)
        assert not np.asarray(out.pixel_array).any()
        assert "113101" in [c.CodeValue for c in out.DeidentificationMethodCodeSequence]
    kept = Deidentifier().deidentify(photo)
    assert np.asarray(kept.pixel_array).any()
    assert "113101" not in [c.CodeValue for c in kept.DeidentificationMethodCodeSequence]


def test_the_leak_check_finds_a_source_value_anywhere_in_the_bytes(study):
    ds = pydicom.dcmread(study.files["ct"])
    values = identifying_values(ds)
    assert leaked(b"\x00" * 40 + b"CNRY^PATIENT000" + b"\x00", values) == ["PatientName"]
    assert leaked("王秀英".encode(), values) == ["PatientName"]
    assert leaked(STUDY_UID.encode(), values) == ["StudyInstanceUID"]
    assert leaked(b"nothing of the patient here", values) == []


def test_a_source_time_inside_a_new_uid_is_no_survivor_but_standing_alone_it_is():
    values = {b"101523": "InstanceCreationTime", b"20040119": "StudyDate"}
    new_uid = b"UI\x28\x002.25.33310152371234567890123456789012\x00"
    assert leaked(new_uid, values) == []  # six digits of a random UID, by chance
    assert leaked(b"TM\x06\x00101523", values) == ["InstanceCreationTime"]
    assert leaked(b"DA\x08\x0020040119TM", values) == ["StudyDate"]
    # a source date beginning a date-time survives
    assert leaked(b"DT\x1a\x0020040119101523.000000+0800", values) == ["StudyDate"]


def test_a_received_report_that_claims_to_be_the_boxs_keeps_no_text(study):
    """The box's own documents are named by the caller, never by an attribute a sender
    writes: a received SR with Manufacturer "clinibox" loses its free text."""
    forged = structured_report(pydicom.dcmread(study.files["ct"]))
    forged.ContentSequence[0].TextValue = "Pt CNRYFORGED Smith seen today"
    out = pydicom.dcmread(io.BytesIO(_written(Deidentifier().deidentify(forged))))
    assert b"CNRYFORGED" not in _written(out)
    assert out.ContentSequence[0].TextValue != "Pt CNRYFORGED Smith seen today"


def test_a_patient_id_written_into_the_equipment_leaves_the_file_out(tmp_path):
    """Equipment names are kept by the profile, so a patient id a sender wrote into one
    would go out: the leak check still searches ids and names there (issue 43's red team),
    while an institution named like its maker is no leak."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID = "CNRYPID77"
    ds.ManufacturerModelName = "Scanner CNRYPID77"
    values = identifying_values(ds)
    out = _written(Deidentifier().deidentify(ds))
    assert leaked(out, values) == ["PatientID"]
    maker = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    maker.InstitutionName, maker.Manufacturer = "TOSHIBA", "TOSHIBA_MEC"
    values = identifying_values(maker)
    assert leaked(_written(Deidentifier().deidentify(maker)), values) == []
