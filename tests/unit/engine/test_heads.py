"""Declared heads → findings: segmentation masks, contours, RECIST axes, per-lesion classes,
heatmaps of classifiers, tracking across frames and the validated range."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clinibox_common.contracts.heads import HeadsError, parse_heads, parse_validated_range
from clinibox_common.contracts.manifest import PackageError, check_schema
from engine.imaging.preprocess import letterbox
from engine.inference.heads import HeadsDecoder, decoder_for, manifest_heads
from engine.inference.lesions import lesion_from_box
from engine.inference.masks import Axes, axes, axes_at, components, trace_contour
from engine.inference.postprocess import Box, FrameFindings
from engine.inference.tracking import study_summary, track_lesions
from engine.inference.validated_range import RangeGuard

HEADS = [
    {"kind": "detection", "score_output": "lesion_logit", "heatmap_output": "centre_heatmap",
     "size_output": "box_size", "label": "lesion"},
    {"kind": "classification", "output": "lesion_class", "activation": "softmax",
     "labels": ["benign", "malignant"], "per": "lesion"},
    {"kind": "segmentation", "output": "lesion_mask", "activation": "sigmoid",
     "labels": ["lesion"], "threshold": 0.5},
    {"kind": "heatmap", "output": "cam", "activation": "sigmoid"},
]
PARAMS = {"input_size": [256, 256]}
THRESHOLDS = {"finding": 0.5, "alert": 0.9, "box": 0.3}


def _ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def _outputs(centre=(96.0, 128.0), radii=(24.0, 40.0), malignant=0.8) -> dict:
    """Model outputs for one elliptic lesion at ``centre`` (model-input px, y, x)."""
    cy, cx = centre
    ry, rx = radii
    heat = np.zeros((1, 1, 32, 32), np.float32)
    size = np.zeros((1, 2, 32, 32), np.float32)
    heat[0, 0, int(cy // 8), int(cx // 8)] = 0.9
    size[0, :, int(cy // 8), int(cx // 8)] = (2 * rx / 256, 2 * ry / 256)
    inside = _ellipse((64, 64), cy / 4, cx / 4, ry / 4, rx / 4)
    mask = np.where(inside, 6.0, -6.0).astype(np.float32)[None, None]
    logits = np.zeros((1, 2, 32, 32), np.float32)
    logits[0, 1] = math.log(malignant / (1 - malignant))
    return {"lesion_logit": np.array([[3.0]], np.float32), "centre_heatmap": heat,
            "box_size": size, "lesion_class": logits, "lesion_mask": mask,
            "cam": np.where(_ellipse((32, 32), cy / 8, cx / 8, ry / 8, rx / 8), 4.0, -4.0
                            ).astype(np.float32)[None, None]}


@pytest.fixture
def transform():
    """A 512 x 512 source letterboxed to 256 (scale 0.5, no padding)."""
    return letterbox(np.zeros((512, 512), np.float32), 256, 256)[1]


def test_segmentation_gives_contour_and_recist_axes_in_source_pixels(transform):
    decoder = HeadsDecoder(parse_heads(HEADS), PARAMS, THRESHOLDS)
    found = decoder.decode(_outputs(), transform)
    [box] = found.boxes
    assert found.probability == pytest.approx(1 / (1 + math.exp(-3)))
    # the mask is an ellipse of radii 48 x 80 source px around (192, 256)
    assert (box.x0, box.y0, box.x1, box.y1) == pytest.approx((176, 144, 336, 240), abs=4)
    assert len(box.contour) >= 16
    xs, ys = zip(*box.contour, strict=True)
    assert min(xs) == pytest.approx(176, abs=4) and max(ys) == pytest.approx(240, abs=4)
    lesion = lesion_from_box(box, 0, (0.5, 0.5))
    assert lesion.size_from == "mask" and lesion.units == "mm"
    assert lesion.long_axis_mm == pytest.approx(80, rel=0.05)  # 160 px x 0.5 mm
    assert lesion.short_axis_mm == pytest.approx(48, abs=4.5)  # within one mask cell (8 px)
    assert lesion.area_mm2 == pytest.approx(math.pi * 40 * 24, rel=0.05)
    assert lesion.class_probabilities["malignant"] == pytest.approx(0.8, abs=1e-3)
    assert found.heatmap is not None and found.heatmap.max() > 0.9


def test_pixel_spacing_that_is_not_square_is_measured_in_mm(transform):
    [box] = HeadsDecoder(parse_heads(HEADS), PARAMS, THRESHOLDS).decode(
        _outputs(radii=(32.0, 32.0)), transform).boxes
    round_in_px = lesion_from_box(box, 0, None)
    assert round_in_px.units == "px" and round_in_px.long_axis_mm is None
    assert round_in_px.long_axis_px == pytest.approx(round_in_px.short_axis_px, rel=0.05)
    stretched = lesion_from_box(box, 0, (1.0, 0.5))  # rows 1 mm, columns 0.5 mm
    assert stretched.long_axis_mm == pytest.approx(2 * stretched.short_axis_mm, rel=0.08)


def test_a_segmentation_without_detection_makes_one_lesion_per_region(transform):
    out = _outputs()
    second = _ellipse((64, 64), 48, 16, 4, 4)
    out["lesion_mask"][0, 0][second] = 6.0
    heads = [HEADS[2]]
    found = HeadsDecoder(parse_heads(heads), PARAMS, THRESHOLDS).decode(out, transform)
    assert len(found.boxes) == 2 and found.probability > 0.99
    big, small = found.boxes
    assert big.x1 - big.x0 > small.x1 - small.x0
    assert small.x0 == pytest.approx(96, abs=6) and small.y0 == pytest.approx(352, abs=6)


def test_image_classifier_heatmap_shows_the_finding_class_cam(transform):
    manifest = {"heads": [
        {"kind": "classification", "output": "scores", "activation": "softmax",
         "labels": ["normal", "lesion"], "negative_label": "normal"},
        {"kind": "heatmap", "output": "cam", "activation": "none"}],
        "postprocessing": {"name": "heads", "params": {"input_size": [256, 256]}},
        "thresholds": THRESHOLDS}
    cam = np.zeros((1, 2, 8, 8), np.float32)
    cam[0, 0, 0, 0] = 9.0  # the normal class's map must not be shown
    cam[0, 1, 6, 1] = 5.0
    found = decoder_for(manifest).decode({"scores": np.array([[0.0, 2.0]], np.float32),
                                          "cam": cam}, transform)
    assert found.probability == pytest.approx(1 / (1 + math.exp(-2)))
    assert set(found.classes) == {"normal", "lesion"} and found.boxes == []
    hot = np.unravel_index(int(np.argmax(found.heatmap)), found.heatmap.shape)
    assert hot[0] > found.heatmap.shape[0] * 0.7 and hot[1] < found.heatmap.shape[1] * 0.3
    assert found.heatmap.min() >= 0 and found.heatmap.max() == pytest.approx(1.0)


def test_legacy_postprocessors_read_as_heads():
    heads, _ = manifest_heads({"postprocessing": {"name": "centre_heatmap_boxes",
                                                  "params": {"display": "cam"}}})
    assert [h.kind for h in heads] == ["detection", "heatmap"]
    heads, _ = manifest_heads({"postprocessing": {"name": "classification", "params": {}}})
    assert [h.kind for h in heads] == ["classification"]
    with pytest.raises(ValueError, match="heads, centre_heatmap_boxes"):
        manifest_heads({"postprocessing": {"name": "yolo", "params": {}}})


@pytest.mark.parametrize("heads, message", [
    ([], "non-empty"),
    ([{"kind": "mask"}], "kind among"),
    ([{"kind": "segmentation"}], "needs output"),
    ([{"kind": "detection", "heatmap_output": "h"}], "size_output"),
    ([{"kind": "heatmap", "output": "c"}, {"kind": "heatmap", "output": "d"}], "two heatmap"),
    ([{"kind": "classification", "output": "s", "activation": "tanh"}], "activation"),
    ([{"kind": "classification", "output": "s", "per": "pixel"}], "per 'image'"),
])
def test_a_manifest_with_heads_the_box_cannot_read_is_refused(heads, message):
    with pytest.raises(HeadsError, match=message):
        parse_heads(heads)
    manifest = {"schema": "clinibox.model-package/1", "name": "m", "version": "1", "task": "t",
                "inputs": [{"shape": [1, 1, 8, 8]}], "outputs": [], "heads": heads,
                "preprocessing": {"name": "p"}, "postprocessing": {"name": "heads"},
                "artifacts": [{"format": "onnx", "precision": "fp32", "path": "m.onnx",
                               "files": {"m.onnx": "0"}}]}
    with pytest.raises(PackageError, match=message):
        check_schema(manifest)


def test_masks_components_contour_and_axes():
    grid = np.zeros((10, 10), bool)
    grid[1:3, 1:3] = True
    grid[6:9, 5:9] = True
    big, small = components(grid)
    assert big.sum() == 12 and small.sum() == 4
    outline = trace_contour(big)
    assert set(outline) == {(y, x) for y in range(6, 9) for x in range(5, 9)} - {(7, 6), (7, 7)}
    square = axes(np.ones((3, 4), bool), (2.0, 1.0))  # 6 mm tall, 4 mm wide
    assert square.long_axis == pytest.approx(math.hypot(6, 4))
    assert square.area == pytest.approx(24)
    assert axes(np.zeros((3, 3), bool)).long_axis == 0



def _axes_by_brute_force(mask, spacing):
    """RECIST axes from every corner of every pixel: the largest distance between two, and
    the extent across each direction that reaches it (ties give several)."""
    ys, xs = np.nonzero(mask)
    corners = np.array([(y + dy, x + dx) for y, x in zip(ys, xs, strict=True)
                        for dy in (0, 1) for dx in (0, 1)], float) * np.array(spacing)
    distance = np.linalg.norm(corners[:, None] - corners[None], axis=-1)
    longest = distance.max()
    shorts = set()
    for i, j in zip(*np.nonzero(distance >= longest - 1e-9), strict=True):
        direction = (corners[j] - corners[i]) / longest
        across = corners @ np.array([-direction[1], direction[0]])
        shorts.add(float(across.max() - across.min()))
    return longest, shorts


def test_axes_in_pixels_and_millimetres_are_the_masks_recist_axes():
    rng = np.random.default_rng(7)
    for _ in range(150):
        mask = rng.random(tuple(rng.integers(1, 14, 2))) < rng.uniform(0.2, 0.9)
        if not mask.any():
            continue
        spacing = tuple(float(v) for v in rng.choice([0.25, 0.5, 0.703125, 0.977, 1.1], 2))
        for measured, scale in zip(axes_at(mask, [(1.0, 1.0), spacing]), [(1.0, 1.0), spacing],
                                   strict=True):
            longest, shorts = _axes_by_brute_force(mask, scale)
            assert measured.long_axis == pytest.approx(longest, rel=1e-12)
            assert any(abs(measured.short_axis - short) < 1e-9 for short in shorts)
            assert measured.area == pytest.approx(mask.sum() * scale[0] * scale[1])
    assert axes_at(np.zeros((2, 2), bool), [(1.0, 1.0), (0.5, 0.5)]) == [Axes(0, 0, 0)] * 2

def _frame(*boxes: tuple[float, float, float, float, float]) -> FrameFindings:
    return FrameFindings(max((b[4] for b in boxes), default=0.0),
                         [Box(*b, "lesion") for b in boxes], None)


def test_one_lesion_seen_in_several_cine_frames_is_one_lesion_at_its_best_frame():
    frames = [(0, _frame()),
              (4, _frame((100, 100, 140, 130, 0.5))),
              (8, _frame((102, 101, 146, 134, 0.9), (10, 10, 20, 20, 0.4))),
              (12, _frame((104, 100, 142, 132, 0.6))),
              (16, _frame()),
              (20, _frame((300, 300, 320, 320, 0.7)))]
    lesions = track_lesions(frames, key_frame=8, spacing=(0.5, 0.5))
    assert [(x.frame, x.frames) for x in lesions] == [(8, (4, 8, 12)), (8, (8,)), (20, (20,))]
    assert lesions[0].probability == 0.9 and lesions[0].long_axis_mm == pytest.approx(22)
    summary = study_summary([x.to_dict() for x in lesions])
    assert summary == {"lesions": 3, "largest_diameter": 22.0, "units": "mm",
                       "highest_class_probabilities": {}}
    mixed = study_summary([{"long_axis_mm": None, "long_axis_px": 40.0,
                            "class_probabilities": {"malignant": 0.3}},
                           {"long_axis_mm": 5.0, "long_axis_px": 10.0,
                            "class_probabilities": {"malignant": 0.6, "benign": 0.4}}])
    assert mixed["units"] == "px" and mixed["largest_diameter"] == 40.0
    assert mixed["highest_class_probabilities"] == {"malignant": 0.6, "benign": 0.4}


def test_the_validated_range_scores_frames_by_mahalanobis_distance():
    section = {"method": "mahalanobis", "output": "features", "mean": [0.0, 0.0],
               "inverse_covariance": [[1.0, 0.0], [0.0, 4.0]], "threshold": 9.0}
    guard = RangeGuard(parse_validated_range(section))
    near = guard.score({"features": np.array([[1.0, 1.0]], np.float32)})
    assert near.distance == pytest.approx(5.0) and not near.outside
    far = guard.score({"features": np.array([[0.0, 2.0]], np.float32)})
    assert far.outside and far.ratio == pytest.approx(16 / 9)
    nan = guard.score({"features": np.array([[np.nan, 0.0]], np.float32)})
    assert nan.outside
    with pytest.raises(ValueError, match="features"):
        guard.score({"other": np.zeros(2)})
    with pytest.raises(HeadsError, match="2×2"):
        parse_validated_range({**section, "inverse_covariance": [[1.0]]})


def test_the_range_measures_the_inputs_own_statistics_in_float_before_the_features():
    from clinibox_common.contracts.heads import ImageStatistics
    from engine.inference.validated_range import image_statistics

    statistics = ImageStatistics(levels=(0.25, 0.75), scales=(1, 2))
    grey = np.zeros((4, 6), np.float32)
    grey[:, 3:] = 1.0  # left half black, right half white: one vertical edge
    values = image_statistics(grey, statistics)
    # shares above 0.25 and 0.75; texture down, across at 1 px; down, across at 2 px
    np.testing.assert_allclose(values, [0.5, 0.5, 0.0, 1 / 5, 0.0, 0.5])
    assert image_statistics(np.stack([grey, grey]), statistics) == pytest.approx(values)
    section = {"method": "mahalanobis", "output": "features",
               "image_statistics": {"levels": [0.25, 0.75], "scales": [1, 2]},
               "mean": [0.5, 0.5, 0.0, 0.2, 0.0, 0.5, 0.0], "threshold": 9.0,
               "inverse_covariance": np.diag([100.0] * 6 + [1.0]).tolist()}
    guard = RangeGuard(parse_validated_range(section), input_mean=0.5, input_std=0.5)
    model_input = ((grey - 0.5) / 0.5)[None, None]  # what preprocessing hands the model
    near = guard.score({"features": np.array([[1.0]])}, model_input)
    assert near.distance == pytest.approx(1.0, abs=1e-5)
    # an INT8 artifact's features cannot hide an input unlike the validation images
    unlike = guard.score({"features": np.array([[0.0]])}, np.full((1, 1, 4, 6), -1.0))
    assert unlike.outside
    with pytest.raises(ValueError, match="measures the model's input"):
        guard.score({"features": np.array([[0.0]])})
    alone = parse_validated_range({**section, "output": None, "mean": section["mean"][:6],
                                   "inverse_covariance": np.eye(6).tolist()})
    assert alone.output is None and alone.image_statistics == statistics
    with pytest.raises(HeadsError, match="one value per image statistic"):
        parse_validated_range({**section, "output": None})
    with pytest.raises(HeadsError, match="levels"):
        parse_validated_range({**section, "image_statistics": {"levels": [0.9, 0.1],
                                                               "scales": [1]}})
    with pytest.raises(HeadsError, match="scales"):
        parse_validated_range({**section, "image_statistics": {"levels": [0.5],
                                                               "scales": [0.5]}})


def _us_with_text() -> tuple[np.ndarray, tuple[int, int]]:
    """An ultrasound phantom with a burned-in label drawn at its top left (rows 8-20)."""
    from PIL import Image, ImageDraw

    from phantoms.images import generate

    image = generate("us", np.random.default_rng(5), size=(240, 320), lesion=False).image
    picture = Image.fromarray((image * 255).astype(np.uint8))
    ImageDraw.Draw(picture).text((6, 8), "L12-5 38Hz 4.0cm", fill=255)
    return np.asarray(picture, np.float32) / 255, (14, 30)


def test_a_heatmap_hot_on_burned_in_text_is_flagged_and_on_tissue_is_not():
    from engine.inference.hotspot import hot_spot_on_annotation

    image, (ty, tx) = _us_with_text()
    heat = np.zeros((30, 40), np.float32)
    heat[ty * 30 // 240, tx * 40 // 320] = 0.9
    assert hot_spot_on_annotation(image, heat, "US")
    assert not hot_spot_on_annotation(image, heat, "CT")  # CT carries no burned-in text
    assert not hot_spot_on_annotation(image, heat * 0.4, "US")  # no hot spot
    on_tissue = np.zeros((30, 40), np.float32)
    on_tissue[18, 20] = 0.9  # mid-fan: speckle, no strokes
    assert not hot_spot_on_annotation(image, on_tissue, "US")


def test_an_instance_is_outside_when_at_least_half_its_frames_are():
    from engine.inference.validated_range import RangeScore, instance_outside

    inside, outside = RangeScore(1.0, 9.0), RangeScore(20.0, 9.0)
    assert not instance_outside([])
    assert not instance_outside([inside, inside, outside])
    assert instance_outside([inside, outside])
    assert instance_outside([outside] * 5 + [inside] * 3)  # a real MR cine: 5 of 8 frames


def _discs_logits(channels: int, discs: dict[int, tuple[float, float, float]],
                  low: float = -6.0, high: float = 6.0) -> np.ndarray:
    """Logits [1, K, 64, 64]: channel 0 high everywhere but inside each ``discs[k]``
    (cy, cx, r on the 64-cell grid), where channel k is high instead."""
    logits = np.full((1, channels, 64, 64), low, np.float32)
    logits[0, 0] = high
    for k, (cy, cx, r) in discs.items():
        inside = _ellipse((64, 64), cy, cx, r, r)
        logits[0, k][inside] = high
        logits[0, 0][inside] = low
    return logits


def test_a_softmax_segmenter_with_a_background_names_each_lesion_by_its_class(transform):
    """torchvision-style: softmax over [background, lesion, cyst]; the background, which
    wins over most of the image, is never a lesion, and each region is named by its class
    and scored by that class's probability."""
    head = {"kind": "segmentation", "output": "out", "activation": "softmax",
            "labels": ["background", "lesion", "cyst"], "background": "background"}
    logits = _discs_logits(3, {1: (20.0, 20.0, 8.0), 2: (44.0, 44.0, 5.0)})
    found = HeadsDecoder(parse_heads([head]), PARAMS, THRESHOLDS).decode({"out": logits},
                                                                         transform)
    assert [b.label for b in found.boxes] == ["lesion", "cyst"]  # largest first
    lesion, cyst = found.boxes
    expected = math.exp(6) / (math.exp(6) + 2 * math.exp(-6))
    assert lesion.score == pytest.approx(expected, abs=1e-4)
    # the lesion's disc: centre (20, 20) cells of 4 input px = source (160, 160), radius 64
    assert (lesion.x0 + lesion.x1) / 2 == pytest.approx(160, abs=4)
    assert lesion.x1 - lesion.x0 == pytest.approx(128, abs=8)
    assert (cyst.x0 + cyst.x1) / 2 == pytest.approx(352, abs=4)
    assert cyst.contour and cyst.mask is not None
    assert found.probability == pytest.approx(expected, abs=1e-4)


def test_a_softmax_segmenter_without_lesions_finds_none(transform):
    head = {"kind": "segmentation", "output": "out", "activation": "softmax",
            "labels": ["background", "lesion", "cyst"], "background": "background"}
    found = HeadsDecoder(parse_heads([head]), PARAMS, THRESHOLDS).decode(
        {"out": _discs_logits(3, {})}, transform)
    assert found.boxes == [] and found.probability < 1e-4


def test_a_softmax_class_below_its_declared_threshold_is_no_lesion(transform):
    """With ``threshold``, the most probable class must also reach it."""
    head = {"kind": "segmentation", "output": "out", "activation": "softmax",
            "labels": ["background", "lesion", "cyst"], "background": "background",
            "threshold": 0.6}
    logits = _discs_logits(3, {1: (20.0, 20.0, 8.0)}, low=0.0, high=0.5)  # p(lesion) ≈ 0.45
    found = HeadsDecoder(parse_heads([head]), PARAMS, THRESHOLDS).decode({"out": logits},
                                                                         transform)
    assert found.boxes == []
    del head["threshold"]
    found = HeadsDecoder(parse_heads([head]), PARAMS, THRESHOLDS).decode({"out": logits},
                                                                         transform)
    assert [b.label for b in found.boxes] == ["lesion"]


def test_a_sigmoid_segmenter_reads_each_channel_as_its_own_mask(transform):
    """Multi-label: overlapping masks of two classes are two lesions; a channel declared
    as the background is never one."""
    head = {"kind": "segmentation", "output": "masks", "activation": "sigmoid",
            "labels": ["tissue", "lesion", "cyst"], "background": "tissue"}
    logits = np.full((1, 3, 64, 64), -6.0, np.float32)
    logits[0, 0] = 6.0  # "tissue" everywhere: the background, no lesion
    logits[0, 1][_ellipse((64, 64), 30, 30, 10, 10)] = 6.0
    logits[0, 2][_ellipse((64, 64), 32, 32, 4, 4)] = 6.0
    found = HeadsDecoder(parse_heads([head]), PARAMS, THRESHOLDS).decode({"masks": logits},
                                                                         transform)
    assert [b.label for b in found.boxes] == ["lesion", "cyst"]
    assert all(b.score == pytest.approx(1 / (1 + math.exp(-6)), abs=1e-4)
               for b in found.boxes)


def test_an_old_single_channel_mask_reads_as_before(transform):
    """No background, no activation: one sigmoid channel named by ``labels[0]`` (or
    "lesion" without labels)."""
    mask = np.where(_ellipse((64, 64), 30, 30, 8, 8), 6.0, -6.0).astype(np.float32)[None, None]
    for head, name in (({"kind": "segmentation", "output": "m", "labels": ["nodule"]},
                        "nodule"), ({"kind": "segmentation", "output": "m"}, "lesion")):
        [box] = HeadsDecoder(parse_heads([head]), PARAMS, THRESHOLDS).decode({"m": mask},
                                                                             transform).boxes
        assert box.label == name and box.contour


def test_a_softmax_head_labelled_background_without_declaring_it_skips_it(transform):
    """Before ``background`` was declared, a channel labelled "background" was skipped:
    it still is."""
    head = {"kind": "segmentation", "output": "out", "activation": "softmax",
            "labels": ["background", "lesion"]}
    found = HeadsDecoder(parse_heads([head]), PARAMS, THRESHOLDS).decode(
        {"out": _discs_logits(2, {1: (20.0, 20.0, 8.0)})}, transform)
    assert [b.label for b in found.boxes] == ["lesion"]


@pytest.mark.parametrize("head, message", [
    ({"background": "normal", "labels": ["background", "lesion"]}, "background 'normal'"),
    ({"background": "background", "labels": ["background"]}, "at least one lesion class"),
    ({"activation": "softmax", "labels": ["lesion"]}, "single-channel mask is sigmoid"),
    ({"threshold": 1.5}, "not a probability"),
])
def test_a_segmentation_head_the_box_cannot_read_is_refused(head, message):
    with pytest.raises(HeadsError, match=message):
        parse_heads([{"kind": "segmentation", "output": "out", **head}])
