"""Labelled data for the converter: DICOM and PNG through the box's decoder, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from converters.config import ConvertConfigError, build
from converters.data import DataError, Preprocessing, assign_splits, load_data, load_folder
from engine.imaging.preprocess import letterbox_grey
from phantoms.dicom import us_dataset, write_dicom
from phantoms.images import generate

PREP = Preprocessing("letterbox_grey", (1, 3, 64, 64), 0.5, 0.25, {})
SPLITS = {"calibration": 0.5, "validation": 0.5}


def _folder(tmp_path, rows: str):
    rng = np.random.default_rng(0)
    phantom = generate("us", rng, size=(120, 160), lesion=True)
    write_dicom(us_dataset(phantom), tmp_path / "a.dcm")
    Image.fromarray(np.round(phantom.image * 255).astype(np.uint8)).save(tmp_path / "b.png")
    (tmp_path / "labels.csv").write_text(rows)
    return phantom


def test_dicom_and_png_become_the_same_model_input_as_on_the_box(tmp_path):
    phantom = _folder(tmp_path, "file,label\na.dcm,1\nb.png,0\n")
    data = load_folder(tmp_path, tmp_path / "labels.csv", PREP, 2, SPLITS)
    assert data.x.shape == (2, 3, 64, 64) and data.x.dtype == np.float32
    assert data.labels.tolist() == [1, 0] and data.files == ["a.dcm", "b.png"]
    expected, _ = letterbox_grey(np.round(phantom.image * 255) / 255, (1, 3, 64, 64), 0.5, 0.25,
                                 {})
    np.testing.assert_allclose(data.x[0], expected[0], atol=1e-3)
    np.testing.assert_allclose(data.x[1], expected[0], atol=1e-3)
    assert sorted(data.split.tolist()) == ["calibration", "validation"]


@pytest.mark.parametrize(("rows", "message"), [
    ("file,label\nmissing.dcm,1\n", "missing.dcm does not exist"),
    ("file,label\na.dcm,two\n", "label 'two' is not an integer"),
    ("file,label\na.dcm,5\n", "label 5 is outside 0..1"),
    ("file,label\n../a.dcm,1\n", "is outside"),
    ("name,class\na.dcm,1\n", "columns file,label"),
    ("file,label,split\na.dcm,1,train\nb.png,0,\n", "for every row or for none"),
    ("file,label,split\na.dcm,1,test\n", "split 'test' is not one of"),
])
def test_bad_labels_csv_names_the_row(tmp_path, rows, message):
    _folder(tmp_path, rows)
    with pytest.raises(DataError, match=message):
        load_folder(tmp_path, tmp_path / "labels.csv", PREP, 2, SPLITS)


def test_undecodable_file_is_named(tmp_path):
    _folder(tmp_path, "file,label\nbroken.dcm,1\n")
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    with pytest.raises(DataError, match=r"broken\.dcm: cannot be decoded"):
        load_folder(tmp_path, tmp_path / "labels.csv", PREP, 2, SPLITS)


@pytest.mark.slow
def test_phantoms_source_and_splits():
    data = load_data("phantoms:24", None, PREP, 2, {"train": 0.5, "calibration": 0.25,
                                                     "validation": 0.25})
    assert len(data) == 24 and set(data.labels.tolist()) == {0, 1}
    assert {s: int((data.split == s).sum()) for s in ("train", "calibration", "validation")} \
        == {"train": 12, "calibration": 6, "validation": 6}
    with pytest.raises(DataError, match="phantoms:N"):
        load_data("phantoms:many", None, PREP, 2, SPLITS)
    with pytest.raises(DataError, match="needs --labels"):
        load_data(".", None, PREP, 2, SPLITS)
    names = assign_splits(10, {"calibration": 1, "validation": 1}, seed=3)
    assert names.tolist() == assign_splits(10, {"calibration": 1, "validation": 1}, 3).tolist()


def test_config_values_are_checked():
    config = build({"input_shape": "3,224,224", "targets": "onnx,jetson"}, {"prune": "0.5"})
    assert config.input_shape == (3, 224, 224) and config.targets == ["onnx", "jetson"]
    assert config.prune == 0.5
    for bad, message in (({"input_shape": "224,224"}, "three positive numbers"),
                         ({"targets": "raspberry"}, "unknown target profile"),
                         ({"prune": 1.5}, "ratio in")):
        with pytest.raises(ConvertConfigError, match=message):
            build(bad, {})
