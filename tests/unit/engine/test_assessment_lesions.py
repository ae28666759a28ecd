"""Assessments and lesion records: sizes in mm from the image's calibration, and a box that
never calls an image it cannot judge negative."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydicom.dataset import Dataset

from clinibox.table import main
from engine.imaging.decode import decode
from engine.inference.assessment import frame_blockers
from engine.inference.lesions import lesion_from_box
from engine.inference.postprocess import Box
from firmware_app.settings.box import Config
from phantoms.dicom import ct_dataset, us_dataset, write_dicom
from phantoms.images import generate

LIMITS = Config().limits


def test_a_box_becomes_a_lesion_with_its_size_in_mm_or_plainly_in_pixels():
    box = Box(10.0, 20.0, 50.0, 30.0, 0.91, "lesion")  # 40 px wide, 10 px high
    calibrated = lesion_from_box(box, 3, (0.5, 0.7), {"benign": 0.2, "malignant": 0.8})
    assert (calibrated.long_axis_mm, calibrated.short_axis_mm) == (28.0, 5.0)
    assert calibrated.area_mm2 == pytest.approx(np.pi / 4 * 28.0 * 5.0, abs=0.05)
    assert calibrated.units == "mm" and calibrated.frame == 3
    record = calibrated.to_dict()
    assert record["class_probabilities"] == {"benign": 0.2, "malignant": 0.8}
    assert record["box"] == [10.0, 20.0, 50.0, 30.0] and record["probability"] == 0.91
    plain = lesion_from_box(box, 0, None)
    assert plain.units == "px" and plain.long_axis_mm is None and plain.area_mm2 is None
    assert (plain.long_axis_px, plain.short_axis_px) == (40.0, 10.0)


def test_quality_codes_that_block_a_verdict():
    assert frame_blockers(["low_contrast", "too_dark"]) == ["too_dark"]
    assert frame_blockers(["low_contrast"]) == []


def test_ultrasound_regions_calibrate_in_mm(tmp_path):
    ds = us_dataset(generate("us", np.random.default_rng(4), lesion=False))
    region = Dataset()
    region.PhysicalUnitsXDirection = 3
    region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = 0.02  # cm per pixel
    region.PhysicalDeltaY = 0.025
    ds.SequenceOfUltrasoundRegions = [region]
    image = decode(write_dicom(ds, tmp_path / "us.dcm"), LIMITS, 4)
    assert image.pixel_spacing == pytest.approx((0.25, 0.2))
    assert image.spacing_source == "ultrasound region"
    ct_ds = ct_dataset(generate("ct", np.random.default_rng(1), lesion=False))
    ct = decode(write_dicom(ct_ds, tmp_path / "ct.dcm"), LIMITS, 4)
    assert ct.pixel_spacing == pytest.approx(tuple(float(v) for v in ct_ds.PixelSpacing))
    assert ct.spacing_source == "Pixel Spacing"


def _infer(tmp_path, capsys, *files):
    config = tmp_path / "box.toml"
    config.write_text('[runtime]\nbackend = "onnxruntime"\nprecision = "fp32"\n')
    main(["infer", "--config", str(config), "--json", *map(str, files)])
    return {r["file"].rsplit("/", 1)[1]: r for r in json.loads(capsys.readouterr().out)}


@pytest.mark.slow
def test_a_blank_image_is_not_assessable_never_negative(tmp_path, capsys):
    blank = np.full((256, 256), 0.5, dtype=np.float32)
    dark = generate("us", np.random.default_rng(3), lesion=True).image * 0.05
    write_dicom(ct_dataset(blank), tmp_path / "blank.dcm")
    write_dicom(us_dataset(dark), tmp_path / "dark.dcm")
    reports = _infer(tmp_path, capsys, tmp_path / "blank.dcm", tmp_path / "dark.dcm")
    for name, code in (("blank.dcm", "blank"), ("dark.dcm", "too_dark")):
        report = reports[name]
        assert report["assessment"] == "not_assessable", report
        assert {"code": code, "params": {}} in report["assessment_reason"]
        assert report["finding"] is False and report["alert"] is False
        assert report["lesions"] == [] and report["findings"] == []


@pytest.mark.slow
def test_a_phantom_lesion_is_measured_in_mm_from_its_mask(tmp_path, capsys):
    """The demo model segments: the largest lesion's axes come from its mask, in mm from the
    image's Pixel Spacing, close to the phantom's truth (the demo is a phantom model)."""
    for seed in range(30):
        phantom = generate("ct", np.random.default_rng(seed), size=512, lesion=True)
        if len(phantom.lesions) == 1 and phantom.lesions[0].long_axis_mm > 25:
            break
    ds = ct_dataset(phantom)
    write_dicom(ds, tmp_path / "lesion.dcm")
    report = _infer(tmp_path, capsys, tmp_path / "lesion.dcm")["lesion.dcm"]
    assert report["assessment"] == "finding", report
    [truth] = phantom.lesions
    lesion = max(report["lesions"], key=lambda x: x["long_axis_px"])
    assert lesion["units"] == "mm" and lesion["size_from"] == "mask"
    assert lesion["frame"] == report["key_frame"] and len(lesion["contour"]) >= 8
    assert set(lesion["class_probabilities"]) == {"benign", "malignant"}
    _, column_mm = (float(v) for v in ds.PixelSpacing)
    assert lesion["long_axis_mm"] == pytest.approx(lesion["long_axis_px"] * column_mm, rel=0.05)
    assert lesion["long_axis_mm"] == pytest.approx(truth.long_axis_mm, rel=0.35)
