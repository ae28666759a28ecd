"""The DICOM objects a live session keeps: valid (dciodvfy), read by the box's own decoder,
carrying the session's patient as given and nothing identifying invented."""

from __future__ import annotations

import datetime
import io
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom import uid as uids

from engine.imaging.live_capture import (
    CaptureContext,
    CaptureError,
    clip,
    key_frame,
)
from engine.imaging.wrap import decode_file
from engine.settings import LimitsConfig

STARTED = datetime.datetime(2025, 3, 4, 9, 30, 5, 250000)
ACQUIRED = datetime.datetime(2025, 3, 4, 9, 41, 17, 500000)
CANARY_NAME, CANARY_ID = "CANARY^LIVE^张三", "CANARY-ID-4711"
#: modality -> (key frame SOP class, clip SOP class, clip photometric interpretation) of a
#: coloured picture (colour kept as colour) and of a grey one
KINDS = {
    "US": (uids.UltrasoundImageStorage, uids.UltrasoundMultiFrameImageStorage, "YBR_FULL_422"),
    "ES": (uids.VLEndoscopicImageStorage,
           uids.MultiFrameTrueColorSecondaryCaptureImageStorage, "YBR_FULL_422"),
    "XC": (uids.SecondaryCaptureImageStorage,
           uids.MultiFrameTrueColorSecondaryCaptureImageStorage, "YBR_FULL_422"),
}
GREY_KINDS = {
    "US": (uids.UltrasoundImageStorage, uids.UltrasoundMultiFrameImageStorage, "MONOCHROME2"),
    "ES": KINDS["ES"],
    "XC": (uids.SecondaryCaptureImageStorage,
           uids.MultiFrameGrayscaleByteSecondaryCaptureImageStorage, "MONOCHROME2"),
}
#: identifying attributes the context does not give: absent or empty in every object
NOT_GIVEN = ("InstitutionName", "InstitutionAddress", "ReferringPhysicianName",
             "AccessionNumber", "StudyID", "OtherPatientIDs", "OtherPatientNames",
             "PatientAge", "PatientAddress", "PatientWeight", "PerformingPhysicianName",
             "OperatorsName", "StudyDescription", "IssuerOfPatientID", "DeviceSerialNumber")


def _context(modality: str, mm_per_pixel: float = 0.25, **changes) -> CaptureContext:
    values = dict(study_uid="2.25.1111", series_uid="2.25.2222", modality=modality,
                  patient_name=CANARY_NAME, patient_id=CANARY_ID, birth_date="19800101",
                  sex="F", station="clinibox-7", source_label="Ultrasound, room 1",
                  started=STARTED, mm_per_pixel=mm_per_pixel, burned_in=False)
    values.update(changes)
    return CaptureContext(**values)


def _picture(height: int = 72, width: int = 96) -> np.ndarray:
    """A smooth RGB picture (JPEG keeps it close) with a bright square."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1)
    rgb[20:40, 30:60] = (230, 200, 40)
    return rgb.astype(np.uint8)


def _grey_picture(height: int = 72, width: int = 96) -> np.ndarray:
    """A grey picture as a video gives it: RGB, its samples a level or two apart."""
    grey = np.rint(_picture(height, width).astype(np.float64) @ [0.299, 0.587, 0.114])
    wobble = np.random.default_rng(3).integers(-2, 3, (height, width, 3))
    return np.clip(grey[..., None] + wobble, 0, 255).astype(np.uint8)


def _doppler(height: int = 72, width: int = 96) -> np.ndarray:
    """A grey ultrasound picture with a colour Doppler box: red flow over blue."""
    rgb = np.repeat(_picture(height, width)[..., :1], 3, axis=2)
    rgb[10:30, 20:50] = (200, 30, 30)
    rgb[30:45, 20:50] = (30, 40, 210)
    return rgb


def _make(modality: str, kind: str, picture=None, **changes) -> tuple[str, bytes]:
    ctx = _context(modality, **changes)
    picture = _picture() if picture is None else picture
    if kind == "key":
        return key_frame(picture, ctx, 3, ACQUIRED)
    frames = [np.roll(picture, shift, axis=1) for shift in range(5)]
    return clip(frames, ctx, 4, ACQUIRED, frame_time_ms=66.7)


def _dataset(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


@pytest.mark.parametrize("colour", [True, False], ids=["colour", "grey"])
@pytest.mark.parametrize("kind", ["key", "clip"])
@pytest.mark.parametrize("modality", sorted(KINDS))
def test_every_kind_is_valid_dicom_and_the_box_reads_it(tmp_path, modality, kind, colour):
    uid, data = _make(modality, kind, None if colour else _grey_picture())
    path = tmp_path / f"{modality}-{kind}.dcm"
    path.write_bytes(data)
    checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True,
                             check=False)
    report = checked.stdout + checked.stderr
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert errors == [], report
    ds = _dataset(data)
    key_class, clip_class, clip_photometric = (KINDS if colour else GREY_KINDS)[modality]
    assert ds.SOPClassUID == (key_class if kind == "key" else clip_class)
    assert ds.SOPInstanceUID == uid == ds.file_meta.MediaStorageSOPInstanceUID
    image = decode_file(path, LimitsConfig(), 8)
    assert image.modality == modality
    assert image.total_frames == (1 if kind == "key" else 5)
    assert (image.study_instance_uid, image.series_instance_uid) == ("2.25.1111", "2.25.2222")
    assert image.sop_instance_uid == uid
    if kind == "clip":
        assert ds.file_meta.TransferSyntaxUID == uids.JPEGBaseline8Bit
        assert ds.PhotometricInterpretation == clip_photometric
    else:
        assert ds.file_meta.TransferSyntaxUID == uids.ExplicitVRLittleEndian
        assert ds.PhotometricInterpretation == ("MONOCHROME2" if clip_photometric
                                                == "MONOCHROME2" else "RGB")
    if ds.PhotometricInterpretation == "MONOCHROME2":  # the box sees stored / 255
        stored = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)[image.frame_indices]
        assert np.abs(image.frames - stored / 255.0).max() < 1e-6
    if modality == "US":
        assert image.pixel_spacing == pytest.approx((0.25, 0.25))
        assert image.spacing_source == "ultrasound region"
    else:
        assert image.pixel_spacing is None


def test_an_uncalibrated_ultrasound_source_gets_no_region(tmp_path):
    _, data = _make("US", "key", mm_per_pixel=0.0)
    path = tmp_path / "us.dcm"
    path.write_bytes(data)
    assert "SequenceOfUltrasoundRegions" not in _dataset(data)
    assert decode_file(path, LimitsConfig(), 1).pixel_spacing is None


def test_grey_ultrasound_key_frames_are_lossless_grey_by_itu_601():
    picture = _grey_picture()
    ds = _dataset(key_frame(picture, _context("US"), 1, ACQUIRED)[1])
    luma = np.rint(picture.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsStored == 8
    assert np.array_equal(ds.pixel_array, luma)
    assert "LossyImageCompression" not in ds


@pytest.mark.parametrize("modality", ["US", "XC"])
def test_a_colour_doppler_picture_stays_colour_in_key_frames_and_clips(tmp_path, modality):
    picture = _doppler()
    for kind in ("key", "clip"):
        data = _make(modality, kind, picture)[1]
        path = tmp_path / f"{modality}-{kind}.dcm"
        path.write_bytes(data)
        checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True,
                                 check=False)
        report = checked.stdout + checked.stderr
        assert [line for line in report.splitlines() if line.startswith("Error")] == [], report
        ds = _dataset(data)
        assert ds.SamplesPerPixel == 3 and ds.PlanarConfiguration == 0
        assert ds.PhotometricInterpretation == ("RGB" if kind == "key" else "YBR_FULL_422")
        pixels = ds.pixel_array.astype(np.int16)
        first = pixels if kind == "key" else pixels[0]
        red, blue = first[14:26, 26:46].mean(axis=(0, 1)), first[34:42, 26:46].mean(axis=(0, 1))
        assert red[0] - red[2] > 100 and blue[2] - blue[0] > 100  # the flow's colours, read back
        grey = first[50:70, 60:90]
        assert np.abs(grey[..., 0] - grey[..., 1]).mean() < 4  # the grey picture stays grey


def test_endoscopic_key_frames_are_rgb_even_from_grey():
    grey = _picture()[..., 0]
    ds = _dataset(key_frame(grey, _context("ES"), 1, ACQUIRED)[1])
    assert ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3
    assert np.array_equal(ds.pixel_array, np.repeat(grey[:, :, None], 3, axis=2))
    assert ds.AcquisitionContextSequence == []


def test_other_modalities_are_digitised_video_secondary_captures():
    ds = _dataset(key_frame(_picture(), _context("XC"), 1, ACQUIRED)[1])
    assert ds.ConversionType == "DV"
    assert np.array_equal(ds.pixel_array, _picture())
    assert _dataset(key_frame(_picture(), _context(""), 1, ACQUIRED)[1]).Modality == "OT"


@pytest.mark.parametrize("modality", sorted(KINDS))
def test_clips_are_jpeg_cines_close_to_their_frames(modality):
    ds = _dataset(_make(modality, "clip")[1])
    assert ds.NumberOfFrames == 5
    assert float(ds.FrameTime) == pytest.approx(66.7)
    assert ds.CineRate == 15
    assert ds.FrameIncrementPointer == 0x00181063
    assert ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionMethod == "ISO_10918_1"
    assert float(ds.LossyImageCompressionRatio) > 1.0
    decoded = ds.pixel_array.astype(np.float64)
    expected = _picture().astype(np.float64)  # in colour: colour is kept
    assert decoded.shape == (5, *expected.shape)
    assert np.abs(decoded[0] - expected).mean() < 4.0


@pytest.mark.parametrize("kind", ["key", "clip"])
def test_common_attributes(kind):
    ds = _dataset(_make("US", kind)[1])
    assert ds.StudyDate == "20250304" and ds.StudyTime.startswith("093005")
    assert ds.ContentDate == "20250304" and ds.ContentTime.startswith("094117")
    assert ds.AcquisitionDateTime.startswith("20250304094117")
    assert ds.InstanceNumber == (3 if kind == "key" else 4)
    assert ds.SeriesNumber == 901
    # one series per session: its key frames and clips share one description
    assert ds.SeriesDescription == "Live session"
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert ds.BurnedInAnnotation == "NO"
    assert ds.Manufacturer == "clinibox" and ds.StationName == "clinibox-7"
    assert "live capture" in ds.DerivationDescription
    assert "Ultrasound, room 1" in ds.DerivationDescription


def test_burned_in_text_and_a_nameless_box_are_said_so():
    ds = _dataset(_make("ES", "key", burned_in=True, station="")[1])
    assert ds.BurnedInAnnotation == "YES"
    assert "StationName" not in ds


@pytest.mark.parametrize("kind", ["key", "clip"])
@pytest.mark.parametrize("modality", sorted(KINDS))
def test_the_patient_is_as_given_and_nothing_identifying_is_invented(modality, kind):
    data = _make(modality, kind)[1]
    ds = _dataset(data)
    assert str(ds.PatientName) == CANARY_NAME and ds.PatientID == CANARY_ID
    assert (ds.PatientBirthDate, ds.PatientSex) == ("19800101", "F")
    assert CANARY_ID.encode() in data and CANARY_NAME.encode("utf-8") in data
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    for keyword in NOT_GIVEN:
        assert not ds.get(keyword), keyword
    carriers = [element.keyword for element in ds.iterall()
                if isinstance(element.value, (str, pydicom.valuerep.PersonName))
                and ("CANARY" in str(element.value))]
    assert sorted(carriers) == ["PatientID", "PatientName"]


def test_an_empty_patient_stays_empty_and_odd_entries_are_made_valid_or_left_empty():
    ds = _dataset(_make("US", "key", patient_name="", patient_id="", birth_date="",
                        sex="")[1])
    assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.PatientSex) == \
        ("", "", "", "")
    browser = _dataset(_make("US", "key", birth_date="1980-01-31", sex="female")[1])
    assert (browser.PatientBirthDate, browser.PatientSex) == ("19800131", "F")
    odd = _dataset(_make("US", "key", birth_date="31/01/1980", sex="unknown")[1])
    assert (odd.PatientBirthDate, odd.PatientSex) == ("", "")


@pytest.mark.parametrize("call", [
    lambda: key_frame(np.zeros((8, 8), np.float32), _context("US"), 1, ACQUIRED),
    lambda: key_frame(np.zeros((8, 8, 4), np.uint8), _context("US"), 1, ACQUIRED),
    lambda: clip([], _context("US"), 1, ACQUIRED, 40.0),
    lambda: clip([np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8)], _context("US"),
                 1, ACQUIRED, 40.0),
    lambda: clip([np.zeros((8, 8), np.uint8)], _context("US"), 1, ACQUIRED, 0.0),
], ids=["float", "four-samples", "no-frames", "mixed-sizes", "no-frame-time"])
def test_pixels_it_cannot_keep_are_refused_clearly(call):
    with pytest.raises(CaptureError):
        call()


def test_each_object_gets_its_own_instance_uid():
    first, _ = _make("US", "key")
    second, _ = _make("US", "key")
    assert first != second and first.startswith("2.25.")
