"""The heatmap on the lesion (issue 42): a model-input peak lands inside its box through the
real letterbox transform, in the viewer's PNG layer and in the printed key image; a package
whose heatmap failed its on-lesion check shows none; the converter's measurement."""

from __future__ import annotations

import io
import math
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from clinibox_common.contracts.heads import (
    HeadsError,
    OnLesion,
    on_lesion_failures,
    parse_heads,
    parse_on_lesion,
)
from converters.heatmap_check import (
    candidate_heads,
    choose_heatmap,
    detected,
    figures,
    hottest_near,
    image_rows,
    peak_inside,
    with_heatmap,
)
from engine.imaging.annotate import shown_heatmap
from engine.imaging.decode import DecodedImage
from engine.imaging.preprocess import Transform, letterbox
from engine.imaging.preview_file import FramePreview, Window
from engine.inference.heads import (
    SHOW_DECLARED,
    SHOW_LESION_MAP,
    SHOW_NONE,
    HeadsDecoder,
    decoder_for,
)
from engine.inference.postprocess import Box
from web.render import heatmap_png, key_image_png

PARAMS = {"input_size": [256, 256]}
THRESHOLDS = {"finding": 0.5, "alert": 0.9, "box": 0.3}
DETECTION = {"kind": "detection", "score_output": "lesion_logit",
             "heatmap_output": "centre_heatmap", "size_output": "box_size", "label": "lesion"}
SEGMENTATION = {"kind": "segmentation", "output": "lesion_mask", "activation": "sigmoid",
                "labels": ["lesion"], "threshold": 0.5}
PASSED = {"lesions": 200, "inside": 196,
          "by_modality": {"CT": {"lesions": 100, "inside": 98},
                          "US": {"lesions": 100, "inside": 98}}}
FAILED = {"lesions": 525, "inside": 164,
          "by_modality": {"CT": {"lesions": 235, "inside": 97},
                          "US": {"lesions": 290, "inside": 67}}}


def cam_head(on_lesion: dict | None = None) -> dict:
    """The demo's heatmap head, with an on-lesion measurement when given."""
    return {"kind": "heatmap", "output": "cam", "activation": "sigmoid",
            **({"on_lesion": on_lesion} if on_lesion is not None else {})}


def outputs(cell: tuple[int, int], cam_cell: tuple[int, int] | None = None,
            size: tuple[float, float] = (24.0, 24.0)) -> dict[str, np.ndarray]:
    """A detector's outputs for one lesion at grid ``cell`` (row, column of the 32 × 32,
    8-pixel grid) of ``size`` model-input pixels (w, h); its CAM peaks at ``cam_cell``
    (default: the lesion's cell) and its mask covers the box."""
    gy, gx = cell
    heat = np.zeros((1, 1, 32, 32), np.float32)
    heat[0, 0, gy, gx] = 0.9
    sizes = np.zeros((1, 2, 32, 32), np.float32)
    sizes[0, :, gy, gx] = (size[0] / 256, size[1] / 256)
    cy, cx = cam_cell or cell
    yy, xx = np.mgrid[0:32, 0:32]
    cam = (6.0 - 1.5 * np.hypot(yy - cy, xx - cx) ** 2 - 2.0).astype(np.float32)
    my, mx = np.mgrid[0:64, 0:64] + 0.5  # the mask's 4-pixel cells, model-input centres / 4
    inside = (np.abs(mx * 4 - (gx + 0.5) * 8) <= size[0] / 2 - 2) & (
        np.abs(my * 4 - (gy + 0.5) * 8) <= size[1] / 2 - 2)
    return {"lesion_logit": np.array([[3.0]], np.float32), "centre_heatmap": heat,
            "box_size": sizes, "cam": cam[None, None],
            "lesion_mask": np.where(inside, 6.0, -6.0).astype(np.float32)[None, None]}


def decoder(*heads: dict) -> HeadsDecoder:
    return HeadsDecoder(parse_heads(list(heads)), PARAMS, THRESHOLDS)


def hottest(heat: np.ndarray) -> tuple[float, float]:
    """(x, y) pixel centre of the hottest point of a picture-sized map (ties: their mean)."""
    ys, xs = np.nonzero(heat >= heat.max())
    return float(xs.mean() + 0.5), float(ys.mean() + 0.5)


def inside(point: tuple[float, float], box: Box, scale_x: float = 1.0,
           scale_y: float = 1.0) -> bool:
    x, y = point
    return (box.x0 * scale_x <= x <= box.x1 * scale_x
            and box.y0 * scale_y <= y <= box.y1 * scale_y)


def centred(point: tuple[float, float], box: Box, transform: Transform,
            scale_x: float = 1.0, scale_y: float = 1.0) -> bool:
    """Whether ``point`` (picture pixels) lies within a quarter of a grid cell of the box's
    centre: the map and the box agree to better than the half-cell offsets a transform
    slip makes."""
    x, y = point
    cell = 8 / transform.scale  # one 8-pixel grid cell in source pixels
    return (abs(x / scale_x - (box.x0 + box.x1) / 2) <= cell / 4
            and abs(y / scale_y - (box.y0 + box.y1) / 2) <= cell / 4)


# source (rows, columns) → a letterbox with padding above and below, beside, none, and a
# source smaller than the model input; the lesion's cell lies in the image, off centre
SOURCES = [((240, 320), (12, 9)), ((320, 240), (20, 11)), ((512, 512), (21, 7)),
           ((300, 400), (9, 22)), ((200, 200), (13, 19))]


@pytest.mark.parametrize("source, cell", SOURCES)
def test_a_peak_decodes_inside_its_box_through_the_letterbox(source, cell):
    """The map's hot spot lands on the box over the source image, whichever map is shown
    (a drift of the transform by half a cell or more fails here)."""
    _, transform = letterbox(np.zeros(source, np.float32), 256, 256)
    for heads in ((DETECTION, cam_head(PASSED)), (DETECTION, SEGMENTATION), (DETECTION,)):
        found = decoder(*heads).decode(outputs(cell), transform)
        [box] = found.boxes
        heat = shown_heatmap(found.heatmap, source[1], source[0])
        spot = hottest(heat)
        assert inside(spot, box), (heads[-1]["kind"], spot, box)
        assert centred(spot, box, transform), (heads[-1]["kind"], spot, box)


@pytest.mark.parametrize("source, cell", SOURCES[:3])
def test_the_viewers_heatmap_png_is_hottest_inside_the_drawn_box(source, cell):
    """The PNG laid over the frame (at the viewer's display size, here half the source) has
    its most opaque pixel where the SVG draws the box (source pixels scaled alike)."""
    _, transform = letterbox(np.zeros(source, np.float32), 256, 256)
    found = decoder(DETECTION, cam_head(PASSED)).decode(outputs(cell), transform)
    [box] = found.boxes
    width, height = source[1] // 2, source[0] // 2
    layer = np.asarray(Image.open(io.BytesIO(heatmap_png(found.heatmap, width, height))))
    assert layer.shape == (height, width, 4)
    spot, scale = hottest(layer[..., 3].astype(float)), (width / source[1], height / source[0])
    assert inside(spot, box, *scale) and centred(spot, box, transform, *scale), (spot, box)


@pytest.mark.parametrize("source, cell", SOURCES[:3])
def test_the_printed_key_image_is_hottest_inside_its_drawn_box(source, cell):
    """The key image (viewer report, PDF, PACS) blends the heatmap where it draws the box."""
    _, transform = letterbox(np.zeros(source, np.float32), 256, 256)
    found = decoder(DETECTION, cam_head(PASSED)).decode(outputs(cell), transform)
    [box] = found.boxes
    frame = FramePreview(values=np.full(source, 40.0, np.float32), colour=False, invert=False,
                         default_window=Window(40.0, 400.0), value_range=(40.0, 40.0),
                         frame=0, total_frames=1, rows=source[0], columns=source[1],
                         modality="CT")
    boxes = [box.to_dict()]

    def picture(heatmap: np.ndarray | None) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(key_image_png(frame, None, boxes, heatmap))),
                          np.float32)

    plain, blended = picture(None), picture(found.heatmap)
    scale = (plain.shape[1] / source[1], plain.shape[0] / source[0])
    spot = hottest(np.abs(blended - plain).sum(axis=2))
    assert inside(spot, box, *scale) and centred(spot, box, transform, *scale), (spot, box)


def test_a_failed_check_shows_no_heatmap_and_a_passed_one_the_declared_map():
    """The CAM peaking three cells below the lesion, as the demo model's does."""
    _, transform = letterbox(np.zeros((512, 512), np.float32), 256, 256)
    below = outputs((12, 16), cam_cell=(15, 15))
    failed = decoder(DETECTION, SEGMENTATION, cam_head(FAILED))
    assert failed.heatmap_shown == SHOW_NONE and "164 of 525" in failed.heatmap_reason
    found = failed.decode(below, transform)
    assert found.heatmap is None and len(found.boxes) == 1  # the lesion itself stays
    passed = decoder(DETECTION, SEGMENTATION, cam_head(PASSED))
    assert passed.heatmap_shown == SHOW_DECLARED
    found = passed.decode(below, transform)
    assert not inside(hottest(shown_heatmap(found.heatmap, 512, 512)), found.boxes[0])


def test_an_unmeasured_heatmap_beside_boxes_gives_way_to_the_lesions_own_map():
    _, transform = letterbox(np.zeros((240, 320), np.float32), 256, 256)
    below = outputs((12, 16), cam_cell=(15, 15))
    for heads in ((DETECTION, SEGMENTATION, cam_head()), (DETECTION, cam_head())):
        unmeasured = decoder(*heads)
        assert unmeasured.heatmap_shown == SHOW_LESION_MAP
        assert "never measured" in unmeasured.heatmap_reason
        found = unmeasured.decode(below, transform)
        assert inside(hottest(shown_heatmap(found.heatmap, 320, 240)), found.boxes[0])
        # what the converter and the bench measure is still the declared CAM
        cam = unmeasured.unchecked_heatmap(below, transform)
        assert not inside(hottest(shown_heatmap(cam, 320, 240)), found.boxes[0])


def test_a_classifiers_heatmap_needs_no_on_lesion_check():
    classifier = decoder({"kind": "classification", "output": "scores", "labels": ["lesion"]},
                         cam_head())
    assert classifier.heatmap_shown == SHOW_DECLARED


def test_the_shipped_demo_package_does_not_show_its_cam():
    """Its manifest (signed before the check) declares ``cam`` with no measurement: the box
    shows the segmentation's lesion probability instead (bench/heatmap_on_lesion.py)."""
    import json
    from pathlib import Path

    manifest = json.loads((Path(__file__).resolve().parents[3] / "models" /
                           "clinibox-demo-lesion" / "1.0.0" / "manifest.json").read_text())
    assert decoder_for(manifest).heatmap_shown == SHOW_LESION_MAP


@pytest.mark.parametrize("on_lesion, message", [
    ({"lesions": 10}, "needs 'inside'"),
    ({"lesions": 10, "inside": 11}, "inside <= lesions"),
    ({"lesions": 10, "inside": 9.5}, "counts"),
    ({"lesions": 10, "inside": 9, "by_modality": [1]}, "by_modality"),
    ({"lesions": 10, "inside": 9, "by_modality": {"US": {"lesions": 3}}}, "for US"),
])
def test_a_malformed_on_lesion_refuses_the_heads(on_lesion, message):
    with pytest.raises(HeadsError, match=message):
        parse_heads([DETECTION, cam_head(on_lesion)])


def test_on_lesion_needs_the_target_overall_in_every_modality_and_enough_lesions():
    assert on_lesion_failures(parse_on_lesion(PASSED)) == []
    assert on_lesion_failures(OnLesion(40, 40)) == [
        "measured on 40 lesions, fewer than 50"]
    [us] = on_lesion_failures(OnLesion(96, 100, {"CT": (50, 50), "US": (46, 50)}))
    assert us.endswith("in US (92.0 %, below 95 %)")
    assert len(on_lesion_failures(parse_on_lesion(FAILED))) == 3


# -- the converter's measurement (converters/heatmap_check.py) ---------------------------------


def test_the_hot_spot_near_a_box_is_its_own_not_its_neighbours():
    heat = np.zeros((100, 200), np.float32)
    heat[50, 40] = 0.5  # this box's
    heat[50, 75] = 1.0  # hotter, but nearer the other box
    mine, other = Box(30, 40, 50, 60, 1.0, "l"), Box(70, 40, 90, 60, 1.0, "l")
    x, y, value = hottest_near(heat, mine, [mine, other])
    assert (x, y, value) == (40.5, 50.5, 0.5)
    assert peak_inside(heat, mine, [mine, other])
    assert not peak_inside(heat, mine, [mine, other], floor=0.6)  # too faint to be drawn
    heat[50, 40] = 0.0
    heat[70, 40] = 0.9  # below the box: the demo model's CAM
    assert not peak_inside(heat, mine, [mine, other])


def test_only_boxes_on_a_truth_lesion_count():
    shown = [Box(0, 0, 10, 10, 0.9, "l"), Box(50, 50, 60, 60, 0.8, "l")]
    assert detected(shown, [(1, 1, 11, 11)]) == [shown[0]]
    heat = np.zeros((8, 8), np.float32)
    assert image_rows(None, shown, [(1, 1, 11, 11)], (80, 80), "CT") == [
        {"modality": "CT", "inside": False, "shown": False}]
    assert image_rows(heat, shown, [], (80, 80), "CT") == []


def test_figures_and_the_candidate_maps():
    rows = [{"modality": m, "inside": i, "shown": True, "dx": 0.0, "dy": 0.1}
            for m, i in [("CT", True)] * 60 + [("US", True)] * 38 + [("US", False)] * 2]
    f = figures(rows)
    assert (f["inside"], f["lesions"], f["passed"]) == (98, 100, True)
    assert f["by_modality"]["US"]["share"] == 0.95
    assert not figures([*rows, {**rows[-1]}])["passed"]  # US 38 of 41
    heads = [DETECTION, SEGMENTATION, cam_head(FAILED)]
    candidates = candidate_heads(heads)
    assert set(candidates) == {"cam", "lesion_mask"}
    assert candidates["lesion_mask"][-1] == {"kind": "heatmap", "output": "lesion_mask",
                                             "activation": "sigmoid"}
    assert "on_lesion" not in candidates["cam"][-1]
    declared = with_heatmap(heads, "lesion_mask", {"lesions": 60, "inside": 60})
    assert [h["kind"] for h in declared] == ["detection", "segmentation", "heatmap"]
    assert decoder(*declared).heatmap_shown == SHOW_DECLARED


def _split(count: int, cam_shift: int) -> tuple[dict, SimpleNamespace]:
    """``count`` 512 × 512 phantoms, CT and US alternating, one lesion each, and the model's
    batched outputs with its CAM ``cam_shift`` cells below the lesion."""
    _, transform = letterbox(np.zeros((512, 512), np.float32), 256, 256)
    rng = np.random.default_rng(7)
    per_image, truths = [], []
    for _ in range(count):
        cell = (int(rng.integers(6, 22)), int(rng.integers(6, 26)))
        per_image.append(outputs(cell, (cell[0] + cam_shift, cell[1])))
        cx, cy = (cell[1] + 0.5) * 16, (cell[0] + 0.5) * 16
        truths.append([(cx - 24, cy - 24, cx + 24, cy + 24)])
    batched = {k: np.concatenate([o[k] for o in per_image]) for k in per_image[0]}
    split = SimpleNamespace(transforms=[transform] * count, source_boxes=truths,
                            kinds=["ct", "us"] * (count // 2))
    return batched, split


@pytest.mark.parametrize("cam_shift, chosen", [(0, "cam"), (3, "lesion_mask")])
def test_the_converter_declares_the_map_that_lies_on_the_lesions(cam_shift, chosen):
    outs, split = _split(60, cam_shift)
    heads, report = choose_heatmap([DETECTION, SEGMENTATION, cam_head()], PARAMS, THRESHOLDS,
                                   (outs, split, None), (outs, split, None), "synthetic")
    assert report["chosen"] == chosen and report["selection"]["cam"]["passed"] is (
        cam_shift == 0)
    [heatmap] = [h for h in heads if h["kind"] == "heatmap"]
    assert heatmap["output"] == chosen
    assert heatmap["on_lesion"]["lesions"] == 60 and heatmap["on_lesion"]["inside"] == 60
    assert decoder(*heads).heatmap_shown == SHOW_DECLARED


def _decoded(phantom) -> DecodedImage:
    """A phantom as the decoder gives a received single-frame image."""
    rows, columns = phantom.image.shape
    return DecodedImage(frames=phantom.image[None].astype(np.float32), frame_indices=[0],
                        total_frames=1, rows=rows, columns=columns,
                        modality="CT" if phantom.kind == "ct" else "US", sop_class_uid="",
                        sop_instance_uid="", study_instance_uid="", series_instance_uid="",
                        photometric="MONOCHROME2", transfer_syntax="",
                        pixel_spacing=phantom.spacing)


@pytest.mark.slow
def test_the_demo_models_shown_heatmap_lies_on_its_lesions(demo_runner):
    """The bundled model on held-out phantoms, analysed as the box does: the heatmap it
    shows peaks inside the boxes (bench/heatmap_on_lesion.py measures 500 phantoms)."""
    from demo.model import SEEDS
    from phantoms.images import dataset_plan, dataset_sample

    plan = dataset_plan(SEEDS["test"], 60)
    rows = []
    for i in (i for i, (_, lesion) in enumerate(plan) if lesion):
        phantom = dataset_sample(SEEDS["test"], i, plan)
        image = _decoded(phantom)
        found = demo_runner.analyse(image, 64).findings
        rows += image_rows(found.heatmap, found.boxes, phantom.boxes, phantom.image.shape,
                           image.modality)
    measured = figures(rows)
    assert measured["lesions"] >= 20
    assert measured["inside"] >= math.ceil(0.9 * measured["lesions"]), measured


def test_the_transform_maps_model_pixels_back_to_the_source():
    """The transform every heatmap and box goes through (a guard on its sign convention)."""
    t = Transform(0.8, 0.0, 32.0, 320, 240)
    assert t.to_source(128.0, 128.0) == (160.0, 120.0)


def test_the_model_card_says_whether_the_heatmap_lies_on_the_lesion():
    from demo.card import heatmap_section

    rows = [{"modality": m, "inside": i, "shown": True, "dx": -0.3, "dy": 0.6}
            for m, i in [("CT", True)] * 40 + [("CT", False)] * 60 + [("US", False)] * 100]
    cam = figures(rows)
    mask = figures([{**r, "inside": True, "dx": 0.0, "dy": 0.0} for r in rows])
    manifest = {"heads": [DETECTION, SEGMENTATION, cam_head()]}
    built = heatmap_section(manifest, {"selection": {"cam": cam, "lesion_mask": mask},
                                       "chosen": "lesion_mask", "held_out": mask}, None)
    assert "`cam` 20.0 %, `lesion_mask` 100.0 %" in built
    assert "Declared as the heatmap: `lesion_mask`" in built and "the box shows it" in built
    measured = {"figures": {"candidate:cam": cam, "shown": mask}, "heatmap_shown": "lesion map",
                "phantoms": "200 phantoms", "backend": "onnxruntime:onnx/fp32",
                "machine": {"cpu": "AMD EPYC", "cpu_features": "avx2"}}
    after = heatmap_section(manifest, None, measured)
    assert "`cam` has its hot spot inside the box for 40 of 200 (20.0 %; CT 40/100, US 0/100)" \
        in after and "0.60 box heights below and 0.30 box widths left" in after
    assert "the box shows the map the lesions come from instead" in after
    assert "200 of 200 (100.0 %" in after
