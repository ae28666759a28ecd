"""centre_heatmap_boxes: peaks -> boxes in source pixels through a real letterbox Transform."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.imaging.preprocess import letterbox, letterbox_grey
from engine.inference.heads import get_postprocessor
from engine.inference.postprocess import Box, FrameFindings, local_peaks, nms

PARAMS = {"stride": 8, "input_size": [256, 256], "max_boxes": 5, "nms_iou": 0.3, "pool": 3,
          "label": "lesion", "display": "cam"}


@pytest.fixture
def transform():
    """A 300 x 400 (h x w) source letterboxed to 256: scale 0.64, 32 px bars top and bottom."""
    _, t = letterbox(np.zeros((300, 400), np.float32), 256, 256)
    assert (t.scale, t.offset_x, t.offset_y) == (0.64, 0.0, 32.0)
    return t


def outputs(peaks, logit=2.0, cam=None):
    """Model outputs with the given {(row, col): (score, w_frac, h_frac)} peaks."""
    heat = np.zeros((1, 1, 32, 32), np.float32)
    size = np.zeros((1, 2, 32, 32), np.float32)
    for (r, c), (score, w, h) in peaks.items():
        heat[0, 0, r, c] = score
        size[0, :, r, c] = (w, h)
    out = {"lesion_logit": np.array([[logit]], np.float32), "centre_heatmap": heat,
           "box_size": size}
    if cam is not None:
        out["cam"] = cam
    return out


def decode(out, transform, box=0.5, **params):
    return get_postprocessor("centre_heatmap_boxes")(out, {**PARAMS, **params}, {
        "finding": 0.5, "alert": 0.8, "box": box}, transform)


def test_peak_maps_to_source_pixels(transform):
    found = decode(outputs({(10, 12): (0.9, 0.1, 0.2)}), transform)
    assert isinstance(found, FrameFindings)
    assert found.probability == pytest.approx(1 / (1 + math.exp(-2.0)))
    [b] = found.boxes
    # centre (100, 84) in input px, 25.6 x 51.2 px; source = (input - offset) / 0.64
    assert (b.x0, b.y0, b.x1, b.y1) == pytest.approx((136.25, 41.25, 176.25, 121.25))
    assert b.score == pytest.approx(0.9) and b.label == "lesion"


def test_boxes_are_clipped_to_the_source_image(transform):
    [b] = decode(outputs({(4, 0): (0.9, 0.2, 0.2)}), transform).boxes
    assert b.x0 == 0.0 and b.y0 == 0.0 and b.x1 > 0 and b.y1 > 0


def test_box_threshold_filters(transform):
    out = outputs({(10, 12): (0.9, 0.1, 0.1), (20, 25): (0.6, 0.1, 0.1)})
    assert len(decode(out, transform, box=0.5).boxes) == 2
    [only] = decode(out, transform, box=0.7).boxes
    assert only.score == pytest.approx(0.9)
    assert decode(out, transform, box=0.95).boxes == []


def test_nms_suppresses_overlaps_and_max_boxes_limits(transform):
    out = outputs({(10, 10): (0.9, 0.3, 0.3), (10, 12): (0.8, 0.3, 0.3)})
    [kept] = decode(out, transform).boxes
    assert kept.score == pytest.approx(0.9)
    assert len(decode(out, transform, nms_iou=0.95).boxes) == 2
    many = outputs({(4 + 4 * i, 4 + 4 * i): (0.6 + 0.05 * i, 0.05, 0.05) for i in range(6)})
    best = decode(many, transform, max_boxes=3).boxes
    assert [round(b.score, 2) for b in best] == [0.85, 0.8, 0.75]


def test_only_local_maxima_are_peaks():
    heat = np.zeros((8, 8), np.float32)
    heat[3, 3], heat[3, 4], heat[6, 6] = 0.9, 0.7, 0.5
    assert set(zip(*np.nonzero(local_peaks(heat) & (heat > 0)), strict=True)) == {(3, 3), (6, 6)}
    a = Box(0, 0, 10, 10, 0.9, "lesion")
    b = Box(1, 1, 11, 11, 0.8, "lesion")
    c = Box(50, 50, 60, 60, 0.7, "lesion")
    assert nms([c, b, a], 0.3, 5) == [a, c]


#: a CAM measured on lesions with truth (issue 42: one never measured is not shown)
ON_LESION = {"lesions": 100, "inside": 98}


def test_heatmap_covers_exactly_the_source_extent(transform):
    cam = np.full((1, 1, 32, 32), -10.0, np.float32)
    cam[0, 0, :4] = cam[0, 0, 28:] = 10.0  # hot letterbox bars must be cropped away
    found = decode(outputs({}, cam=cam), transform, on_lesion=ON_LESION)
    assert found.heatmap.shape == (24, 32)  # 192 x 256 input px of source at stride 8
    assert found.heatmap.dtype == np.float32 and found.heatmap.max() < 0.01
    cam[0, 0, 4 + 6, 20] = 10.0  # a hot cell inside the source region
    hot = decode(outputs({}, cam=cam), transform, on_lesion=ON_LESION).heatmap
    assert np.unravel_index(np.argmax(hot), hot.shape) == (6, 20) and hot.max() > 0.99


def test_an_unmeasured_cam_gives_way_to_the_centre_heatmap(transform):
    cam = np.full((1, 1, 32, 32), -10.0, np.float32)
    cam[0, 0, 4 + 9, 3] = 10.0  # hot far from the lesion
    found = decode(outputs({(10, 12): (0.9, 0.1, 0.1)}, cam=cam), transform)
    assert found.heatmap[6, 12] == pytest.approx(0.9) and found.heatmap[9, 3] == 0.0


def test_missing_cam_falls_back_to_centre_heatmap(transform):
    found = decode(outputs({(10, 12): (0.9, 0.1, 0.1)}), transform)
    assert found.heatmap.shape == (24, 32)
    assert found.heatmap[6, 12] == pytest.approx(0.9)
    assert found.heatmap.min() >= 0.0 and found.heatmap.max() <= 1.0


def test_square_source_without_padding():
    _, t = letterbox(np.zeros((512, 512), np.float32), 256, 256)
    found = decode(outputs({(0, 31): (0.8, 0.25, 0.25)}), t, box=0.3)
    assert found.heatmap.shape == (32, 32)
    [b] = found.boxes
    assert b.x1 == 512.0 and b.y0 == 0.0 and b.x0 == pytest.approx((252 - 32) * 2)



def test_the_model_input_of_a_frame_is_clipped_to_0_1_whether_or_not_it_needs_it():
    rng = np.random.default_rng(3)
    frame = rng.random((90, 60), dtype=np.float32)
    kept = frame.copy()
    tensor, _ = letterbox_grey(frame, (1, 1, 64, 64), 0.5, 0.25, {})
    np.testing.assert_array_equal(frame, kept)  # the decoded frame is not changed
    expected, _ = letterbox(np.clip(frame, 0.0, 1.0), 64, 64)
    np.testing.assert_array_equal(tensor[0, 0], (expected - np.float32(0.5)) / np.float32(0.25))
    wild = frame * 3 - 1  # values beyond [0, 1] are clipped before the resize
    tensor, _ = letterbox_grey(wild, (1, 1, 64, 64), 0.5, 0.25, {})
    expected, _ = letterbox(np.clip(wild, 0.0, 1.0), 64, 64)
    np.testing.assert_array_equal(tensor[0, 0], (expected - np.float32(0.5)) / np.float32(0.25))
    assert tensor.min() >= (0 - 0.5) / 0.25 - 1e-6 and tensor.max() <= (1 - 0.5) / 0.25 + 1e-6

def test_missing_output_and_unknown_decoder_are_clear_errors(transform):
    out = outputs({})
    del out["box_size"]
    with pytest.raises(ValueError, match="box_size"):
        decode(out, transform)
    with pytest.raises(ValueError, match="centre_heatmap_boxes"):
        get_postprocessor("yolo_v99")


def _regions_by_search(mask):
    """8-connected regions by breadth-first search: the reference for ``components``."""
    from collections import deque

    seen, out = np.zeros(mask.shape, bool), []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        region, queue = np.zeros(mask.shape, bool), deque([start])
        seen[start] = True
        while queue:
            y, x = queue.popleft()
            region[y, x] = True
            for ny in range(max(0, y - 1), min(mask.shape[0], y + 2)):
                for nx in range(max(0, x - 1), min(mask.shape[1], x + 2)):
                    if mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        out.append(region)
    return sorted(out, key=lambda r: -int(r.sum()))


@pytest.mark.parametrize("density", [0.05, 0.3, 0.45, 0.6, 0.9])
def test_components_are_the_8_connected_regions_largest_first(density):
    from engine.inference.masks import components

    rng = np.random.default_rng(int(density * 100))
    for shape in ((64, 64), (17, 40), (1, 9)):
        mask = rng.random(shape) < density
        got, want = components(mask), _regions_by_search(mask)
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
    spiral = np.zeros((9, 9), bool)  # one long winding region: many rounds of labels
    spiral[0, :] = spiral[:, 8] = spiral[8, :] = spiral[2:, 0] = spiral[2, :7] = True
    assert len(components(spiral)) == 1 and components(np.zeros((4, 4), bool)) == []
