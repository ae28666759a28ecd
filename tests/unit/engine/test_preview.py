"""Display previews: exact and compact values, the file, and what a damaged one gives."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from engine.imaging import preview_file
from engine.imaging.decode import DecodeError, decode
from engine.imaging.preview import decode_with_previews
from engine.imaging.preview_file import FrameNotPreviewed
from engine.settings import LimitsConfig
from tests.corpus import data_file, image_dataset, write

LIMITS = asdict(LimitsConfig())


def _ct(tmp_path: Path, stored: np.ndarray, name: str, **attrs) -> Path:
    ds = image_dataset(name, rows=stored.shape[0], columns=stored.shape[1])
    ds.PixelData = stored.astype("<u2").tobytes()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return write(ds, tmp_path, name)


def test_the_preview_comes_from_the_models_own_decode(tmp_path):
    path = tmp_path / "mr.dcm"
    path.write_bytes(data_file("emri_small.dcm").read_bytes())
    target = tmp_path / "mr.preview.npz"
    image = decode_with_previews(str(path), LIMITS, 3, str(target))
    plain = decode(path, LimitsConfig(), 3)
    np.testing.assert_array_equal(image.frames, plain.frames)
    assert [preview_file.load(target, i).frame for i in image.frame_indices] == [0, 5, 9]
    assert preview_file.load(target, 5).previewed == (0, 5, 9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mr.dcm", "mr.preview.npz"]  # no .part


def test_whole_hounsfield_units_are_kept_exactly_as_int16(tmp_path):
    stored = np.arange(0, 4096, 1, dtype=np.int32).reshape(64, 64)
    target = tmp_path / "ct.preview.npz"
    decode_with_previews(str(_ct(tmp_path, stored, "ct.dcm")), LIMITS, 1, str(target))
    shown = preview_file.load(target, 0)
    assert shown.values.dtype == np.int16
    np.testing.assert_array_equal(shown.values, stored - 1024)
    assert target.stat().st_size < stored.size * 2 + 2048  # two bytes a pixel, plus the index


def test_a_shrunk_preview_keeps_whole_units_within_half_a_unit(tmp_path):
    stored = (np.arange(128 * 128, dtype=np.int32).reshape(128, 128) * 7) % 4001
    target = tmp_path / "big.preview.npz"
    path = _ct(tmp_path, stored, "big.dcm")
    decode_with_previews(str(path), LIMITS, 1, str(target), max_side=64)
    shown = preview_file.load(target, 0)
    assert shown.values.dtype == np.int16 and shown.values.shape == (64, 64)
    means = (stored - 1024).reshape(64, 2, 64, 2).mean(axis=(1, 3))
    assert np.abs(shown.values - means).max() <= 0.5 + 1e-3


def test_fractional_values_are_kept_as_float32(tmp_path):
    stored = np.arange(0, 4096, 1, dtype=np.int32).reshape(64, 64)
    target = tmp_path / "pt.preview.npz"
    path = _ct(tmp_path, stored, "pt.dcm", RescaleSlope="0.25", RescaleIntercept="0")
    decode_with_previews(str(path), LIMITS, 1, str(target))
    shown = preview_file.load(target, 0)
    assert shown.values.dtype == np.float32
    np.testing.assert_allclose(shown.values, stored * 0.25)


def test_colour_is_kept_as_8_bit_rgb(tmp_path):
    path = tmp_path / "rgb.dcm"
    path.write_bytes(data_file("SC_rgb.dcm").read_bytes())
    target = tmp_path / "rgb.preview.npz"
    decode_with_previews(str(path), LIMITS, 1, str(target))
    shown = preview_file.load(target, 0)
    assert shown.colour and shown.values.dtype == np.uint8 and shown.values.shape[2] == 3


def test_another_format_or_frame_is_refused(tmp_path):
    target = tmp_path / "ct.preview.npz"
    stored = np.zeros((8, 8), np.int32)
    decode_with_previews(str(_ct(tmp_path, stored, "ct.dcm")), LIMITS, 1, str(target))
    with pytest.raises(FrameNotPreviewed):
        preview_file.load(target, 1)
    with np.load(target) as kept:
        arrays = {name: kept[name] for name in kept.files}
    arrays["meta"] = np.array(str(arrays["meta"]).replace('"format": 1', '"format": 99'))
    np.savez(target, **arrays)
    with pytest.raises(DecodeError, match="preview format 99"):
        preview_file.load(target, 0)
    with pytest.raises(FileNotFoundError):
        preview_file.load(tmp_path / "none.preview.npz", 0)
