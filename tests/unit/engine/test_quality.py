"""check_quality(): each warning from a constructed image, none for normal images."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from clinibox_common.contracts.reasons import Reason, ReasonCode
from engine.imaging.decode import decode
from engine.imaging.quality import check_quality
from engine.settings import LimitsConfig

MIN_ROWS = 64


def phantom(size: int = 256, seed: int = 0) -> np.ndarray:
    """A textured phantom: dark background, a mid-grey body, brighter structures, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.full((size, size), 0.05)
    body = (x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.16
    image[body] = 0.45 + 0.2 * np.sin(12 * x[body]) * np.cos(9 * y[body])
    image[(x - 0.4) ** 2 + (y - 0.45) ** 2 < 0.004] = 0.95
    image += rng.normal(0, 0.02, image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


def codes(image: np.ndarray, rows: int | None = None, columns: int | None = None) -> set[str]:
    rows = image.shape[0] if rows is None else rows
    columns = image.shape[1] if columns is None else columns
    return {w.code for w in check_quality(image, rows, columns, MIN_ROWS)}


def test_normal_textured_image_gives_no_warning() -> None:
    assert check_quality(phantom(), 256, 256, MIN_ROWS) == []
    assert check_quality(phantom(512, seed=3), 512, 512, MIN_ROWS) == []


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_uniform_image_is_blank(value: float) -> None:
    warnings = check_quality(np.full((128, 128), value, np.float32), 128, 128, MIN_ROWS)
    assert [w.code for w in warnings] == ["blank"]
    assert warnings[0] == Reason(ReasonCode.BLANK) and warnings[0].params == {}


def test_dark_image() -> None:
    dark = phantom() * 0.2
    warnings = check_quality(dark, 256, 256, MIN_ROWS)
    assert "too_dark" in {w.code for w in warnings}
    assert Reason(ReasonCode.TOO_DARK) in warnings
    assert "blank" not in codes(dark)


def test_saturated_image() -> None:
    image = phantom()
    image[:, 40:] = 1.0  # burned out over most of the field
    warnings = check_quality(image, 256, 256, MIN_ROWS)
    assert Reason(ReasonCode.SATURATED) in warnings
    bright = 0.88 + phantom() * 0.12  # everything bright
    assert "saturated" in codes(bright)


def test_low_contrast_image() -> None:
    flat = 0.45 + phantom() * 0.12
    warnings = check_quality(flat, 256, 256, MIN_ROWS)
    assert [w.code for w in warnings] == ["low_contrast"]
    assert warnings[0] == Reason(ReasonCode.LOW_CONTRAST)


def test_too_small_image_names_its_size() -> None:
    small = phantom(40)
    warnings = check_quality(small, 40, 40, MIN_ROWS)
    assert warnings == [Reason(ReasonCode.TOO_SMALL, {"columns": 40, "rows": 40})]
    assert codes(phantom(64)) == set()  # exactly the minimum is fine
    assert "too_small" in codes(phantom(256), rows=256, columns=50)


def test_rejects_a_non_2d_array() -> None:
    with pytest.raises(ValueError, match="2-D"):
        check_quality(np.zeros((2, 8, 8), np.float32), 8, 8, MIN_ROWS)


def test_large_image_is_checked_quickly() -> None:
    image = np.tile(phantom(256), (16, 16))  # 4096 x 4096
    started = time.perf_counter()
    assert check_quality(image, 4096, 4096, MIN_ROWS) == []
    assert time.perf_counter() - started < 0.25


@pytest.mark.parametrize("name", [
    "CT_small.dcm", "MR_small.dcm", "RG1_UNCR.dcm", "RG3_UNCR.dcm", "US1_UNCR.dcm",
    "color3d_jpeg_baseline.dcm", "examples_palette.dcm", "MR2_J2KI.dcm", "JPEG2000.dcm",
    "eCT_Supplemental.dcm", "693_J2KI.dcm", "image_dfl.dcm",
])
def test_real_images_raise_no_warning(name: str) -> None:
    path = get_testdata_file(name, download=False)
    assert path is not None
    image = decode(Path(path), LimitsConfig(), 4)
    for frame in image.frames:
        assert check_quality(frame, image.rows, image.columns, MIN_ROWS) == [], name


@pytest.mark.parametrize("name", ["CT_small.dcm", "US1_UNCR.dcm", "emri_small.dcm"])
def test_the_decoder_measures_each_frame_as_the_worker_would(name: str, demo_runner) -> None:
    """The decoder sandbox runs the pixel checks and grey statistics where it decodes
    (the worker's core is the pipeline's busiest): the same warnings and figures as the
    worker's own, and the same analysis either way."""
    from dataclasses import replace

    path = get_testdata_file(name, download=False)
    assert path is not None
    image = decode(Path(path), LimitsConfig(), 4)
    assert image.frame_warnings is not None and image.frame_grey is not None
    assert len(image.frame_warnings) == len(image.frame_grey) == len(image.frames) >= 1
    for frame, warned, grey in zip(image.frames, image.frame_warnings, image.frame_grey,
                                   strict=True):
        expected = check_quality(frame, image.rows, image.columns, 0)
        assert [Reason(ReasonCode(code)) for code in warned] == expected
        assert grey == (float(np.mean(frame)), float(np.std(frame)))
    unmeasured = replace(image, frame_warnings=None, frame_grey=None)
    small = image.rows + 1  # the size check stays the worker's: min_rows is its setting
    for min_rows in (MIN_ROWS, small):
        one, other = demo_runner.analyse(image, min_rows), demo_runner.analyse(unmeasured,
                                                                               min_rows)
        assert one.warnings == other.warnings and one.intensity == other.intensity
        assert one.findings.assessment == other.findings.assessment
        assert one.findings.probability == other.findings.probability
    assert {w.code for w in demo_runner.analyse(image, small).warnings} >= {"too_small"}


def test_a_blank_frame_is_flagged_by_the_decoder(tmp_path: Path) -> None:
    from phantoms.dicom import ct_dataset, write_dicom

    path = tmp_path / "blank.dcm"
    write_dicom(ct_dataset(np.full((128, 128), 0.5, np.float32)), path)
    image = decode(path, LimitsConfig(), 1)
    assert image.frame_warnings == [["blank"]]
