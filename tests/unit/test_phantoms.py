"""Phantoms: determinism, balance, ground truth, and the DICOM/PNG writers round-tripping."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import uid as uids

from phantoms import dicom as pd
from phantoms.images import (
    apply_window,
    dataset,
    dataset_plan,
    generate,
    generate_sweep,
)

CANARIES = {
    "PatientName": "CANARY^PNAME7731", "PatientID": "CANARY-PID-7731",
    "PatientBirthDate": "19370412", "PatientSex": "F", "AccessionNumber": "CANARYACC7731",
    "InstitutionName": "CANARY INSTITUTION 7731", "ReferringPhysicianName": "CANARY^REFDOC7731",
    "StudyDate": "19990304", "StudyTime": "101112", "StudyID": "CANSTUDY7731",
    "StudyDescription": "CANARY STUDY DESC 7731", "SeriesDescription": "CANARY SERIES 7731",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.77310001",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.77310002",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.77310003",
}


def _same(a, b) -> bool:
    return (np.array_equal(a.image, b.image) and a.boxes == b.boxes and a.lesion == b.lesion
            and a.distractors == b.distractors and a.spacing == b.spacing
            and [t.to_dict() for t in a.lesions] == [t.to_dict() for t in b.lesions]
            and all(np.array_equal(s.mask, t.mask) for s, t in zip(a.lesions, b.lesions,
                                                                   strict=True)))


@pytest.mark.parametrize("kind", ["ct", "us"])
def test_generate_is_deterministic_by_seed(kind):
    one = generate(kind, np.random.default_rng(11), 256, True)
    two = generate(kind, np.random.default_rng(11), 256, True)
    other = generate(kind, np.random.default_rng(12), 256, True)
    assert _same(one, two)
    assert not np.array_equal(one.image, other.image)


@pytest.mark.parametrize("kind", ["ct", "us"])
def test_a_rescan_is_the_same_scene_with_new_noise(kind):
    """Scanned again: the same lesions, truth and anatomy (the image moves by its noise
    only), and the scene drawn after the noise (CT's window, the spacing) is unchanged."""
    first = generate(kind, np.random.default_rng(21), 256, True)
    again = generate(kind, np.random.default_rng(21), 256, True, np.random.default_rng(1))
    other = generate(kind, np.random.default_rng(21), 256, True, np.random.default_rng(2))
    assert [t.to_dict() for t in first.lesions] == [t.to_dict() for t in again.lesions]
    assert first.boxes == again.boxes and first.spacing == again.spacing
    assert first.window == again.window
    assert not np.array_equal(first.image, again.image)
    assert not np.array_equal(again.image, other.image)
    difference = np.abs(first.image - again.image)
    assert float(np.median(difference)) < 0.25 * float(np.median(np.abs(
        first.image - generate(kind, np.random.default_rng(22), 256, True).image)) + 1e-3)


def test_dataset_is_deterministic_and_balanced():
    first = list(dataset(5, 12))
    second = list(dataset(5, 12))
    assert all(_same(a, b) for a, b in zip(first, second, strict=True))
    plan = dataset_plan(5, 12)
    assert [p.kind for p in first] == [k for k, _ in plan] == ["ct", "us"] * 6
    assert [p.lesion for p in first] == [lesion for _, lesion in plan]
    for kind in ("ct", "us"):
        assert sum(p.lesion for p in first if p.kind == kind) == 3
    big = dataset_plan(9, 400, lesion_fraction=0.25)
    assert sum(lesion for _, lesion in big) == 100


@pytest.mark.parametrize(("kind", "size"), [("ct", 256), ("ct", 512), ("us", (240, 320)),
                                            ("us", (480, 640))])
def test_images_and_boxes_are_well_formed(kind, size):
    for seed in range(4):
        p = generate(kind, np.random.default_rng(seed), size, lesion=True)
        h, w = (size, size) if isinstance(size, int) else size
        assert p.image.shape == (h, w) and p.image.dtype == np.float32
        assert p.image.min() >= 0.0 and p.image.max() <= 1.0
        assert p.lesion and 1 <= len(p.boxes) <= 2
        for x0, y0, x1, y1 in p.boxes + [b for _, b in p.distractors]:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        for x0, _, x1, _ in p.boxes:  # radius 2-15 % of the width, lobulated margins
            assert 0.025 * w <= x1 - x0 <= 0.5 * w
        assert [t.box for t in p.lesions] == p.boxes and p.spacing is not None
        normal = generate(kind, np.random.default_rng(seed), size, lesion=False)
        assert not normal.lesion and normal.boxes == [] and normal.lesions == []


def test_ct_keeps_hounsfield_units_and_window():
    p = generate("ct", np.random.default_rng(3), 256, lesion=True)
    assert p.hu.dtype == np.int16 and p.hu.min() >= -1024
    assert p.hu[:8, :8].mean() < -980  # air (plus noise) outside the body
    assert np.array_equal(p.image, apply_window(p.hu, *p.window))


def test_distractors_are_drawn():
    kinds = {what for seed in range(10)
             for what, _ in generate("ct", np.random.default_rng(seed), 256, False).distractors}
    assert kinds == {"cyst", "vessel"}


def test_us_fan_leaves_corners_black():
    p = generate("us", np.random.default_rng(4), (300, 400), lesion=False)
    assert p.image[0, 0] == 0 and p.image[-1, 0] == 0 and p.image[150, 200] > 0


def test_sweep_shows_the_lesion_mid_sweep_only():
    frames = generate_sweep(np.random.default_rng(8), frames=8, size=(240, 320), lesion=True)
    assert len(frames) == 8 and not frames[0].lesion and not frames[-1].lesion
    assert frames[3].lesion and frames[4].lesion
    assert all(f.image.shape == (240, 320) for f in frames)


def test_ct_dicom_round_trip_with_canaries(tmp_path):
    p = generate("ct", np.random.default_rng(21), 384, lesion=True)
    path = pd.write_dicom(pd.ct_dataset(p, CANARIES, rescale=(0.5, -1024.0)), tmp_path / "ct.dcm")
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == uids.CTImageStorage and ds.Modality == "CT"
    assert ds.file_meta.TransferSyntaxUID == uids.ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPInstanceUID == CANARIES["SOPInstanceUID"]
    for keyword, value in CANARIES.items():
        assert str(ds[keyword].value) == value, keyword
    stored = ds.pixel_array
    assert stored.dtype == np.int16 and ds.PixelRepresentation == 1
    hu = stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.array_equal(hu, p.hu.astype(np.float64))
    centre, width = float(ds.WindowCenter), float(ds.WindowWidth)
    assert np.abs(apply_window(hu, centre, width) - p.image).max() < 1e-3
    # the DICOM linear VOI formula (PS3.3 C.11.2.1.2) gives the same picture closely
    voi = np.clip((hu - (centre - 0.5)) / (width - 1) + 0.5, 0, 1)
    assert np.abs(voi - p.image).max() < 0.01


def test_defaults_are_fake_and_fresh():
    a, b = pd.default_identity(), pd.default_identity()
    assert "PHANTOM" in a["PatientName"] and a["StudyInstanceUID"] != b["StudyInstanceUID"]
    with pytest.raises(ValueError, match="not identifying"):
        pd.default_identity(Modality="CT")


def test_us_single_and_multiframe(tmp_path):
    p = generate("us", np.random.default_rng(2), (240, 320), lesion=True)
    ds = pydicom.dcmread(pd.write_dicom(pd.us_dataset(p, CANARIES), tmp_path / "us.dcm"))
    assert ds.SOPClassUID == uids.UltrasoundImageStorage
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsStored == 8
    assert np.abs(ds.pixel_array / 255.0 - p.image).max() <= 0.5 / 255 + 1e-6
    frames = generate_sweep(np.random.default_rng(3), frames=6)
    multi = pydicom.dcmread(pd.write_dicom(pd.us_multiframe_dataset(frames, CANARIES),
                                           tmp_path / "cine.dcm"))
    assert multi.SOPClassUID == uids.UltrasoundMultiFrameImageStorage
    assert int(multi.NumberOfFrames) == 6 and multi.pixel_array.shape == (6, 240, 320)
    assert np.abs(multi.pixel_array[2] / 255.0 - frames[2].image).max() <= 0.5 / 255 + 1e-6
    assert multi.PatientID == CANARIES["PatientID"]


def test_dx_is_monochrome1(tmp_path):
    p = generate("ct", np.random.default_rng(1), 256)
    ds = pydicom.dcmread(pd.write_dicom(pd.dx_dataset(p), tmp_path / "dx.dcm"))
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.Modality == "DX"
    assert np.abs((1 - ds.pixel_array / 4095.0) - p.image).max() < 1e-3


@pytest.mark.parametrize("syntax", ["implicit", "deflate", "rle", "j2k", "jpegls"])
def test_transfer_syntaxes_are_lossless_or_refused(tmp_path, syntax):
    ct = pd.ct_dataset(generate("ct", np.random.default_rng(6), 256), CANARIES)
    expected = ct.pixel_array.copy()
    frames = generate_sweep(np.random.default_rng(6), frames=3)
    cine = pd.us_multiframe_dataset(frames)
    cine_expected = cine.pixel_array.copy()
    if syntax not in pd.available_syntaxes():  # an encoder this machine lacks: a clear error
        with pytest.raises(ValueError, match="no encoder"):
            pd.write_dicom(ct, tmp_path / "x.dcm", syntax)
        assert syntax == "jpegls"  # pyjpegls (a highdicom dependency) encodes it where present
        return
    back = pydicom.dcmread(pd.write_dicom(ct, tmp_path / "ct.dcm", syntax))
    assert back.file_meta.TransferSyntaxUID == pd.SYNTAXES[syntax]
    assert back.file_meta.TransferSyntaxUID.is_compressed == (syntax in ("rle", "j2k", "jpegls"))
    assert np.array_equal(back.pixel_array, expected)
    assert back.PatientName == CANARIES["PatientName"]
    back_cine = pydicom.dcmread(pd.write_dicom(cine, tmp_path / "cine.dcm", syntax))
    assert np.array_equal(back_cine.pixel_array, cine_expected)


def test_png_and_jpeg_writers(tmp_path):
    p = generate("us", np.random.default_rng(5), (240, 320))
    grey = Image.open(pd.write_image(p, tmp_path / "a.png"))
    assert grey.mode == "L" and np.array_equal(np.asarray(grey), np.rint(p.image * 255))
    colour = Image.open(pd.write_image(p, tmp_path / "b.png", colour=True))
    assert colour.mode == "RGB" and colour.size == (320, 240)
    rgb = np.asarray(colour).astype(int)
    assert (rgb[..., 0] >= rgb[..., 2]).all() and (rgb[..., 0] > rgb[..., 2]).any()
    jpeg = Image.open(pd.write_image(p, tmp_path / "c.jpg"))
    assert jpeg.format == "JPEG"
    assert np.abs(np.asarray(jpeg) / 255.0 - p.image).mean() < 0.03


def test_cli_writes_dicom_and_truth(tmp_path):
    assert pd.main(["--out", str(tmp_path), "--count", "3", "--kind", "mixed", "--seed", "4",
                    "--lesion-fraction", "0.67", "--syntax", "rle"]) == 0
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert [t["file"] for t in truth] == [f"phantom-{i:05d}.dcm" for i in range(3)]
    assert sum(t["lesion"] for t in truth) == 2
    modalities = [pydicom.dcmread(tmp_path / t["file"]).Modality for t in truth]
    assert modalities == ["CT", "US", "US"]
    cine = pydicom.dcmread(tmp_path / truth[2]["file"])
    assert int(cine.NumberOfFrames) == len(truth[2]["frames"]) == 8
    assert "SequenceOfUltrasoundRegions" in cine
    ct = pydicom.dcmread(tmp_path / truth[0]["file"])
    assert [float(v) for v in ct.PixelSpacing] == pytest.approx(truth[0]["pixel_spacing_mm"])
    assert len(truth[0]["lesions"]) == len(truth[0]["boxes"])


def test_cli_writes_png(tmp_path):
    assert pd.main(["--out", str(tmp_path), "--count", "2", "--kind", "us", "--format", "png",
                    "--size", "200"]) == 0
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert len(truth) == 2
    for t in truth:
        assert Image.open(tmp_path / t["file"]).size == (200, 200)
