"""The public training transform (converters/box_input.py) is what the box feeds the model."""

from __future__ import annotations

import numpy as np
import pytest

from converters.box_input import BoxFeed, box_input
from engine.imaging.sandbox import DecodeSandbox
from firmware_app.service.appliance import load_runner
from firmware_app.settings import box as box_config
from phantoms.dicom import ct_dataset, write_dicom
from phantoms.images import generate


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory):
    """A CT phantom of 200 × 300 (so the box letterboxes it) written as DICOM, and its truth."""
    phantom = generate("ct", np.random.default_rng(3), (200, 300), True)
    path = tmp_path_factory.mktemp("ct") / "ct.dcm"
    write_dicom(ct_dataset(phantom), path)
    return path, phantom


@pytest.mark.slow
def test_box_input_is_the_tensor_the_box_s_runner_feeds_the_model(ct_file):
    path, _ = ct_file
    config = box_config.from_dict({"runtime": {"backend": "onnxruntime"}})
    runner = load_runner(config)
    fed: list[np.ndarray] = []
    infer = runner.backend.infer
    runner.backend.infer = lambda inputs: (fed.append(next(iter(inputs.values()))),
                                           infer(inputs))[1]
    sandbox = DecodeSandbox(config.limits)  # the worker's decode, in its child process
    try:
        decoded = sandbox.decode(path, config.worker.max_frames_per_instance)
    finally:
        sandbox.close()
    runner.analyse(decoded, config.limits.min_rows)
    runner.close()
    feed = BoxFeed.from_manifest(runner.package.manifest)
    item = box_input(path, feed)
    assert fed and fed[0].shape == item.x.shape == feed.shape and item.x.dtype == np.float32
    np.testing.assert_array_equal(item.x, fed[0])
    # a frame already decoded gives the same tensor
    np.testing.assert_array_equal(box_input(decoded.frames[0], feed).x, fed[0])


def test_truth_boxes_and_masks_land_where_the_box_reads_them(ct_file):
    path, phantom = ct_file
    feed = BoxFeed((1, 3, 96, 96), 0.3, 0.2)
    item = box_input(path, feed)
    assert item.x.shape == (1, 3, 96, 96)
    np.testing.assert_array_equal(item.x[0, 0], item.x[0, 2])  # grey repeated for RGB models
    # 300 wide → 96: scale 0.32, the 64 rows of the image centred (16 rows of padding)
    t = item.transform
    assert (t.scale, t.offset_x, t.offset_y) == (pytest.approx(0.32), 0.0, 16.0)
    [truth] = phantom.boxes[:1]
    inside = item.boxes([truth])
    np.testing.assert_allclose(inside, [[truth[0] * 0.32, truth[1] * 0.32 + 16,
                                         truth[2] * 0.32, truth[3] * 0.32 + 16]])
    np.testing.assert_allclose(item.boxes_to_source(inside), [truth])
    mask = item.mask(phantom.truth_mask())
    assert mask.dtype == bool and mask.shape == (96, 96)
    assert not mask[:16].any() and not mask[-16:].any()  # the padding is background
    ys, xs = np.nonzero(mask)
    every = item.boxes(phantom.boxes)  # each mask pixel lies in one of the lesions' boxes
    assert len(xs) and all(((every[:, 0] - 1 <= x) & (x <= every[:, 2] + 1) & (every[:, 1] - 1 <= y)
                            & (y <= every[:, 3] + 1)).any() for x, y in zip(xs, ys, strict=True))
    classes = item.mask(phantom.truth_mask().astype(np.int64) * 2, classes=3)
    assert classes.dtype == np.int64 and set(np.unique(classes)) == {0, 2}
    np.testing.assert_array_equal(classes == 2, mask)


def test_the_feed_is_read_from_convert_toml(tmp_path):
    (tmp_path / "convert.toml").write_text('input_shape = [3, 128, 128]\nmean = 0.3\nstd = 0.2\n')
    assert BoxFeed.from_convert_toml(tmp_path / "convert.toml") == BoxFeed(
        (1, 3, 128, 128), 0.3, 0.2, "letterbox_grey", {})
    (tmp_path / "bare.toml").write_text('mean = 0.3\n')
    with pytest.raises(ValueError, match="input_shape"):
        BoxFeed.from_convert_toml(tmp_path / "bare.toml")
