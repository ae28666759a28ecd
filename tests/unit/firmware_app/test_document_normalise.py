"""Imperfect source headers made fit for the result documents (``dicom_out/source_header.py``),
sizes that are no numbers kept out of the SR, and the v13 DICOM outbox migration.

The headers are pydicom data sets written and read back as files (what the
documents read); the migration runs on a v12 database file made with the v12
table.
"""

from __future__ import annotations

import math
import sqlite3

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from engine.imaging.dataset_values import valid_uid
from firmware_app.dicom_out import codes
from firmware_app.dicom_out.source_header import (
    MAX_LENGTH,
    HeaderReport,
    Unreferenceable,
    normalise,
)
from firmware_app.dicom_out.sr import _sizes
from firmware_app.storage import db

CONTROLS = "".join(chr(c) for c in range(32) if chr(c) not in "\t\n\f\r") + "\x7f"


def header(tmp_path, **values) -> Dataset:
    """A CT header with ``values`` set (None: removed), written to a file and read back."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID, ds.PatientSex = "CT", "DOE^JANE", "P-1", "F"
    ds.PatientBirthDate, ds.StudyDate, ds.StudyTime = "19700101", "20240102", "101010"
    ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], "2.5"
    for keyword, value in values.items():
        if value is None:
            ds.pop(keyword, None)
        else:
            setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / f"{generate_uid()}.dcm"
    ds.save_as(path, enforce_file_format=False)
    return pydicom.dcmread(path, stop_before_pixels=True, force=True)


def codes_of(fixes) -> set[str]:
    return {str(fix) for fix in fixes}


def test_a_missing_patient_sex_is_there_empty(tmp_path):
    ds = header(tmp_path, PatientSex=None, ReferringPhysicianName=None)
    fixes = normalise(ds)
    assert ds.PatientSex == "" and ds.ReferringPhysicianName == ""
    assert {"PatientSex:type2-added-empty", "AccessionNumber:type2-added-empty"} <= codes_of(
        fixes)


@pytest.mark.parametrize("birth_date", ["19700000", "00000000", "1970", "19701332", "abc"])
def test_a_birth_date_that_is_no_date_is_emptied(tmp_path, birth_date):
    ds = header(tmp_path, PatientBirthDate=birth_date)
    assert "PatientBirthDate:unparseable-date" in codes_of(normalise(ds))
    assert ds.PatientBirthDate == ""


def test_good_values_are_left_alone(tmp_path):
    ds = header(tmp_path, StudyTime="101010.123", ImageComments="line one\r\nline two",
                ReferringPhysicianName="", StudyID="1", AccessionNumber="A1")
    before = {e.keyword: e.value for e in ds if e.keyword}
    assert normalise(ds) == []
    assert {e.keyword: e.value for e in ds if e.keyword} == before


@pytest.mark.parametrize("spacing", [["nan", "nan"], ["0", "0.5"], ["-1", "1"], ["inf", "1"]])
def test_a_pixel_spacing_that_is_no_positive_number_is_removed(tmp_path, spacing):
    ds = header(tmp_path, PixelSpacing=spacing)
    assert "PixelSpacing:invalid-pixel-spacing" in codes_of(normalise(ds))
    assert "PixelSpacing" not in ds


def test_a_time_or_number_that_means_nothing_goes(tmp_path):
    ds = header(tmp_path, StudyTime="25:99", SliceThickness="nan")
    fixes = codes_of(normalise(ds))
    assert {"StudyTime:unparseable-time", "SliceThickness:unparseable-number"} <= fixes
    assert ds.StudyTime == "" and "SliceThickness" not in ds


@pytest.mark.parametrize(("keyword", "value", "code"), [
    ("SOPInstanceUID", None, "missing"),
    ("SOPInstanceUID", "1." + "2" * 5000, "invalid-uid"),
    ("SeriesInstanceUID", "../../tmp/x", "invalid-uid"),
    ("StudyInstanceUID", "1.02.3", "invalid-uid"),
    ("SOPClassUID", "", "missing"),
])
def test_an_image_without_a_valid_reference_uid_cannot_be_described(tmp_path, keyword, value,
                                                                     code):
    with pytest.raises(Unreferenceable) as raised:
        normalise(header(tmp_path, **{keyword: value}))
    assert (raised.value.keyword, raised.value.code) == (keyword, code)
    assert str(raised.value) == f"{keyword}:{code}"


def test_another_invalid_uid_is_removed(tmp_path):
    ds = header(tmp_path, FrameOfReferenceUID="1.2..3")
    assert "FrameOfReferenceUID:invalid-uid" in codes_of(normalise(ds))
    assert "FrameOfReferenceUID" not in ds


def test_strings_are_cut_to_their_vr_and_lose_control_characters(tmp_path):
    name = ("A\x01B\x07" * 13500)[:54000]
    ds = header(tmp_path, PatientName=name, PatientID="X" * 300 + "\x00",
                StudyDescription="CT\x1b chest" + "y" * 100,
                ImageComments="keep\nthis\x00" + "z" * 20000)
    fixes = codes_of(normalise(ds))
    assert {"PatientName:control-characters-removed", "PatientName:cut-to-vr-length",
            "PatientID:cut-to-vr-length", "ImageComments:cut-to-vr-length"} <= fixes
    assert str(ds.PatientName) == "AB" * 32
    assert ds.PatientID == "X" * 64 and ds.StudyDescription.startswith("CT chest")
    assert len(ds.StudyDescription) == 64
    assert ds.ImageComments.startswith("keep\nthis") and len(ds.ImageComments) == 10240
    for elem in ds:
        if elem.VR in MAX_LENGTH:
            text = str(elem.value)
            assert not set(text) & set(CONTROLS), elem.keyword
            for group in text.split("="):
                assert len(group) <= MAX_LENGTH[elem.VR], elem.keyword


def test_a_person_name_is_cut_per_component_group(tmp_path):
    ds = header(tmp_path, PatientName="A" * 70 + "=" + "B" * 70)
    normalise(ds)
    assert str(ds.PatientName) == "A" * 64 + "=" + "B" * 64


def test_strings_inside_sequences_are_fixed_too(tmp_path):
    item = Dataset()
    item.CodeMeaning = "m" * 100 + "\x02"
    item.ReferencedSOPInstanceUID = "../x"
    ds = header(tmp_path, ProcedureCodeSequence=[item])
    fixes = codes_of(normalise(ds))
    (fixed,) = ds.ProcedureCodeSequence
    assert fixed.CodeMeaning == "m" * 64 and "ReferencedSOPInstanceUID" not in fixed
    assert {"CodeMeaning:cut-to-vr-length", "ReferencedSOPInstanceUID:invalid-uid"} <= fixes


@pytest.mark.parametrize(("uid", "valid"), [
    ("1.2.840.10008.1.2.1", True), ("1.2.0.3", True), ("1." + "2" * 62, True),
    ("1." + "2" * 63, False), ("1.2.03", False), ("1..2", False), ("1.2.", False),
    ("../../tmp/x", False), ("", False), ("1.2a", False)])
def test_uids_are_checked_as_ps3_5_says(uid, valid):
    assert valid_uid(uid) is valid


def test_a_report_keeps_reasons_by_instance():
    report = HeaderReport()
    report.left_out["7"] = "SOPInstanceUID:missing"
    assert report.left_out == {"7": "SOPInstanceUID:missing"} and report.fixes == {}


def test_sizes_that_are_no_numbers_never_reach_the_sr():
    lesion = {"units": "mm", "long_axis_mm": float("nan"), "short_axis_mm": 3.0,
              "area_mm2": 9.0, "long_axis_px": 10.0, "short_axis_px": 6.0, "area_px2": 50.0}
    sizes = _sizes(lesion)
    assert [unit for _, _, unit in sizes] == [codes.PIXELS] * 3  # mm not all numbers: pixels
    assert all(math.isfinite(value) for _, value, _ in sizes)
    lesion["long_axis_mm"] = 5.0
    assert [unit for _, _, unit in _sizes(lesion)] == [codes.MILLIMETRE, codes.MILLIMETRE,
                                                     codes.SQUARE_MILLIMETRE]
    assert [unit for _, _, unit in _sizes(lesion, calibrated=False)] == [codes.PIXELS] * 3
    lesion["area_px2"] = float("nan")
    assert len(_sizes(lesion, calibrated=False)) == 2


V12_OUTBOX = """
CREATE TABLE dicom_outbox (
    id INTEGER PRIMARY KEY, destination TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('sr', 'seg', 'key_image')), study_key TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL, sop_instance_uid TEXT NOT NULL, path TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'superseded')),
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, last_error TEXT,
    created_at REAL NOT NULL, sent_at REAL, UNIQUE (destination, sop_instance_uid));
INSERT INTO dicom_outbox VALUES (7, 'pacs', 'sr', '1.2', '1.2.3', '1.2.4', '/x/1.2.4.dcm',
                                 'pending', 3, 10.0, 'refused', 1.0, NULL);
PRAGMA user_version=12;
"""


def test_v13_lets_outbox_rows_be_held_and_keeps_the_rows(tmp_path):
    path = tmp_path / "box.db"
    raw = sqlite3.connect(path)
    raw.executescript(V12_OUTBOX)
    raw.close()
    conn = db.open_database(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION >= 13
        row = dict(conn.execute("SELECT * FROM dicom_outbox").fetchone())
        assert (row["id"], row["state"], row["attempts"], row["last_error"]) == (
            7, "pending", 3, "refused")
        assert (row["refusals"], row["last_status"]) == (0, None)
        with db.transaction(conn):
            conn.execute("UPDATE dicom_outbox SET state = 'held', last_status = 43264")
        assert conn.execute("SELECT state FROM dicom_outbox").fetchone()[0] == "held"
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE dicom_outbox SET state = 'lost'")
    finally:
        conn.close()


@pytest.mark.parametrize(("written", "kept", "code"), [
    ("U", "", "not-an-enumerated-value"), ("W", "", "not-an-enumerated-value"),
    ("f", "F", "enumerated-value-normalised"), ("MALE", "M", "enumerated-value-normalised"),
    ("O", "O", None)])
def test_patient_sex_is_one_of_its_enumerated_values(tmp_path, written, kept, code):
    ds = header(tmp_path, PatientSex=written)
    fixes = codes_of(normalise(ds))
    assert ds.PatientSex == kept
    assert (f"PatientSex:{code}" in fixes) if code else not any("PatientSex" in f for f in fixes)


def test_a_geometry_with_the_wrong_number_of_values_is_removed(tmp_path):
    ds = header(tmp_path, ImageOrientationPatient=[1, 0, 0, 0, 1], SliceThickness=["1", "2"],
                ImagePositionPatient=[0, 0, 0])
    fixes = codes_of(normalise(ds))
    assert {"ImageOrientationPatient:wrong-multiplicity",
            "SliceThickness:wrong-multiplicity"} <= fixes
    assert "ImageOrientationPatient" not in ds and "SliceThickness" not in ds
    assert list(ds.ImagePositionPatient) == [0, 0, 0]
