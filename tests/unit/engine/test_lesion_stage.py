"""A package's second stage: its declaration, the lesion crop, and the box refining lesions
with it on ONNX Runtime.

The stage model here is a real ONNX graph run by ONNX Runtime, built by hand so that what it
answers is known: its mask logit is ten times the standardised crop less its mid-range (the
bright disk of the test image is the lesion) and its class logits are the crop's mean and
its negation.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from clinibox_common.contracts import signing
from clinibox_common.contracts.manifest import PackageError, sha256_file
from clinibox_common.contracts.stages import StageError, check_stage, stage_manifest
from engine.golden import GoldenCasesFailed
from engine.imaging.lesion_crop import CropSpec, crop_window, lesion_crop
from engine.inference.masks import axes
from engine.inference.postprocess import Box
from engine.inference.stage import MAX_LOOKS, LesionStage, the_lesion
from engine.model_package import load_package
from engine.model_stages import load_stage
from engine.settings import RuntimeConfig

SIZE = 64
SPEC = CropSpec((SIZE, SIZE), context=1.6, margin_px=6)


def disk_image(h: int = 300, w: int = 400, cx: float = 150.5, cy: float = 120.5,
               r: float = 21.0) -> np.ndarray:
    """A grey frame with one bright disk (the lesion) on a dim, slightly textured background."""
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    rng = np.random.default_rng(3)
    image = 0.2 + 0.02 * rng.standard_normal((h, w))
    image[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = 0.8
    return image.astype(np.float32)


def stage_onnx(path: Path) -> None:
    """crop [1,1,64,64] → crop_mask = 10 · (crop − its mid-range), crop_class = [mean, −mean]."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("ReduceMax", ["crop"], ["top"], keepdims=1),
        helper.make_node("ReduceMin", ["crop"], ["bottom"], keepdims=1),
        helper.make_node("Add", ["top", "bottom"], ["sum"]),
        helper.make_node("Mul", ["sum", "half"], ["middle"]),
        helper.make_node("Sub", ["crop", "middle"], ["centred"]),
        helper.make_node("Mul", ["centred", "ten"], ["crop_mask"]),
        helper.make_node("ReduceMean", ["crop"], ["mean4"], keepdims=1),
        helper.make_node("Reshape", ["mean4", "shape12"], ["mean"]),
        helper.make_node("Neg", ["mean"], ["negative"]),
        helper.make_node("Concat", ["mean", "negative"], ["crop_class"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "stage",
        [helper.make_tensor_value_info("crop", TensorProto.FLOAT, [1, 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("crop_mask", TensorProto.FLOAT, [1, 1, SIZE, SIZE]),
         helper.make_tensor_value_info("crop_class", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor("ten", TensorProto.FLOAT, [], [10.0]),
         helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
         helper.make_tensor("shape12", TensorProto.INT64, [2], [1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def stage_section(root: Path, golden_expected: dict | None = None) -> dict:
    folder = root / "stages" / "crop"
    folder.mkdir(parents=True, exist_ok=True)
    stage_onnx(folder / "model.onnx")
    tensor, _ = lesion_crop(disk_image(), (129, 99, 172, 142), SPEC)
    np.save(folder / "golden.npy", tensor)
    middle = (float(tensor.max()) + float(tensor.min())) / 2
    expected = golden_expected or {
        "crop_mask": round((float(tensor.ravel()[0]) - middle) * 10, 4)}
    return {
        "name": "crop", "runs_on": "lesions", "purpose": "outline on the crop",
        "crop": {"size": [SIZE, SIZE], "context": 1.6, "margin_px": 6,
                 "normalisation": "standardise"},
        "inputs": [{"name": "crop", "shape": [1, 1, SIZE, SIZE], "dtype": "float32",
                    "layout": "NCHW"}],
        "outputs": [{"name": "crop_mask", "shape": [1, 1, SIZE, SIZE]},
                    {"name": "crop_class", "shape": [1, 2]}],
        "heads": [{"kind": "segmentation", "output": "crop_mask", "activation": "sigmoid",
                   "labels": ["lesion"], "threshold": 0.5},
                  {"kind": "classification", "output": "crop_class", "activation": "softmax",
                   "labels": ["benign", "malignant"], "per": "image"}],
        "artifacts": [{"format": "onnx", "precision": "fp32", "path": "stages/crop/model.onnx",
                       "files": {"stages/crop/model.onnx": sha256_file(folder / "model.onnx")}}],
        "golden_cases": [{"input": "stages/crop/golden.npy",
                          "sha256": sha256_file(folder / "golden.npy"),
                          "expected": expected, "tolerance": 0.01}],
    }


def signed_package(root: Path, key: Path, golden_expected: dict | None = None) -> Path:
    """A signed package whose first stage is a placeholder file and whose second stage is
    the ONNX graph above."""
    root.mkdir(parents=True)
    (root / "model.onnx").write_bytes(b"first stage, hashed like a model")
    manifest = {
        "schema": "clinibox.model-package/1", "name": "staged", "version": "1.0.0",
        "task": "lesion-detection",
        "inputs": [{"name": "image", "shape": [1, 1, 64, 64], "dtype": "float32",
                    "layout": "NCHW", "normalisation": {"mean": 0.5, "std": 0.25}}],
        "outputs": [{"name": "lesion_logit"}], "labels": ["lesion"],
        "thresholds": {"finding": 0.5, "alert": 0.9, "box": 0.3},
        "preprocessing": {"name": "letterbox_grey", "params": {}},
        "postprocessing": {"name": "centre_heatmap_boxes", "params": {}},
        "artifacts": [{"format": "onnx", "precision": "fp32", "path": "model.onnx",
                       "files": {"model.onnx": sha256_file(root / "model.onnx")}}],
        "stages": [stage_section(root, golden_expected)],
    }
    signed = signing.sign_document(manifest, signing.load_private_key(key))
    (root / "manifest.json").write_text(json.dumps(signed, indent=2))
    return root


@pytest.fixture
def key(tmp_path):
    signing.generate_key_pair(tmp_path / "k.pem", tmp_path / "k.pub")
    return tmp_path / "k"


@pytest.fixture
def counted_stage(key, tmp_path):
    """The hand-built stage of a signed package on ONNX Runtime, and the list its looks
    (one entry per inference) are counted in."""
    root = signed_package(tmp_path / "models" / "staged" / "1.0.0", key.with_suffix(".pem"))
    stage = load_stage(load_package(root, [key.with_suffix(".pub")]),
                       RuntimeConfig(backend="auto"), "onnxruntime")
    looks: list[int] = []
    infer = stage.backend.infer
    stage.backend.infer = lambda inputs: (looks.append(1), infer(inputs))[1]
    yield stage, looks
    stage.close()


def test_the_crop_is_centred_on_the_lesion_and_maps_back_to_source_pixels():
    image = disk_image()
    box = (120.0, 90.0, 180.0, 150.0)  # a loose box around the disk at (150.5, 120.5)
    tensor, transform = lesion_crop(image, box, SPEC)
    assert tensor.shape == (1, 1, SIZE, SIZE) and tensor.dtype == np.float32
    assert abs(float(tensor.mean())) < 1e-3 and abs(float(tensor.std()) - 1) < 1e-2
    left, top, side = crop_window(box, SPEC)
    assert side == pytest.approx(60 * 1.6 + 6)
    assert transform.to_source(SIZE / 2, SIZE / 2) == pytest.approx((150.0, 120.0))
    assert transform.to_source(0, 0) == pytest.approx((left, top))
    assert tensor[0, 0, SIZE // 2, SIZE // 2] > 1.0  # the disk is bright in the crop
    assert tensor[0, 0, 0, 0] < 0


def test_a_crop_past_the_image_edge_repeats_the_edge():
    image = disk_image()
    tensor, transform = lesion_crop(image, (-30.0, -30.0, 10.0, 10.0), SPEC)
    assert np.isfinite(tensor).all()
    assert transform.to_source(0, 0) == (0.0, 0.0)  # clipped to the frame


def test_the_stage_outlines_the_lesion_at_source_resolution(counted_stage):
    stage, looks = counted_stage
    assert isinstance(stage, LesionStage)
    assert stage.backend.key == "onnxruntime"
    assert stage.backend_label == "onnxruntime:onnx/fp32"
    image = disk_image(r=21.0)
    # a first-stage box off-centre and too large, with a coarse class guess
    coarse = Box(118.0, 95.0, 190.0, 160.0, 0.9, "lesion",
                 class_probabilities={"benign": 0.5, "malignant": 0.5})
    refined = stage.refine(image, [coarse])[0]
    assert len(looks) == 2  # the outline moved the box far: a second look around it
    assert refined.score == 0.9 and refined.label == "lesion"
    assert refined.mask is not None and refined.contour
    size, truth = axes(refined.mask, (0.5, 0.5)), axes(image > 0.5, (0.5, 0.5))
    assert size.long_axis == pytest.approx(truth.long_axis, abs=0.75)  # 1.5 pixels of 0.5 mm
    assert size.short_axis == pytest.approx(truth.short_axis, abs=0.75)
    ys, xs = np.nonzero(image > 0.5)
    assert (refined.x0, refined.y0) == pytest.approx((xs.min(), ys.min()), abs=1.5)
    assert (refined.x1, refined.y1) == pytest.approx((xs.max() + 1, ys.max() + 1), abs=1.5)
    again = stage.refine(image, [refined])[0]  # a box already on the lesion: one look
    assert len(looks) == 3 and again.mask is not None
    assert (again.x0, again.y0, again.x1, again.y1) == pytest.approx(
        (refined.x0, refined.y0, refined.x1, refined.y1), abs=1.0)
    # the first stage's box alone would have said 36 × 32.5 mm
    assert max(coarse.x1 - coarse.x0, coarse.y1 - coarse.y0) * 0.5 > truth.long_axis + 10
    # the crop's class replaces the first stage's: mean of a standardised crop is ~0
    assert set(refined.class_probabilities) == {"benign", "malignant"}
    assert refined.class_probabilities["benign"] == pytest.approx(0.5, abs=0.01)


def test_a_large_lesion_seen_in_part_is_looked_at_until_it_is_seen_whole(counted_stage):
    stage, looks = counted_stage
    image = disk_image(cx=200.5, cy=150.5, r=60.0)
    # the first stage boxed only the disk's left part: each crop cuts the disk off until
    # one is wide enough to hold it
    partial = Box(140.0, 130.0, 170.0, 170.0, 0.8, "lesion")
    refined = stage.refine(image, [partial])[0]
    assert 3 <= len(looks) <= MAX_LOOKS  # two looks would still have cut the disk off
    assert refined.mask is not None
    size, truth = axes(refined.mask, (0.5, 0.5)), axes(image > 0.5, (0.5, 0.5))
    # within 3 %: a crop of 64 points across a 120-pixel disk samples every 3 pixels
    assert size.long_axis == pytest.approx(truth.long_axis, rel=0.03)
    assert size.short_axis == pytest.approx(truth.short_axis, rel=0.03)


def test_an_outline_that_keeps_moving_stops_after_the_most_looks(counted_stage):
    stage, looks = counted_stage
    # a bright bar across the frame: every crop cuts it off at both sides, so every
    # outline is wider than the box it was cut around
    rng = np.random.default_rng(3)
    image = (0.2 + 0.02 * rng.standard_normal((300, 400))).astype(np.float32)
    image[140:160, 5:395] = 0.8
    refined = stage.refine_one(image, Box(190.0, 140.0, 210.0, 160.0, 0.8, "lesion"))
    assert len(looks) == MAX_LOOKS
    assert 100 < refined.x1 - refined.x0 < 390  # the bar is 390 long: still cut off at the end


def test_a_stage_finding_nothing_keeps_the_first_stage_outline():
    box = Box(10, 10, 20, 20, 0.7, "lesion")
    far = replace(box, x0=100, y0=100, x1=110, y1=110, mask=np.ones((10, 10), bool),
                  mask_origin=(100, 100))
    assert the_lesion(box, [far]) is None
    under = replace(box, x0=8, y0=8, x1=22, y1=22, mask=np.ones((14, 14), bool),
                    mask_origin=(8, 8))
    assert the_lesion(box, [far, under]) is under


def test_a_tampered_stage_artifact_refuses_the_package(key, tmp_path):
    root = signed_package(tmp_path / "p", key.with_suffix(".pem"))
    victim = root / "stages" / "crop" / "model.onnx"
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(PackageError, match=r"stages/crop/model\.onnx") as caught:
        load_package(root, [key.with_suffix(".pub")])
    assert caught.value.code == "tampered"


def test_a_stage_failing_its_golden_cases_is_refused(key, tmp_path):
    root = signed_package(tmp_path / "p", key.with_suffix(".pem"),
                          golden_expected={"malignant": 0.99})
    package = load_package(root, [key.with_suffix(".pub")])
    with pytest.raises(GoldenCasesFailed, match="staged/crop"):
        load_stage(package, RuntimeConfig(backend="onnxruntime"), "onnxruntime")


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update(crop={"size": [4, 4]}), "8 to 1024"),
    (lambda s: s["crop"].update(context=0.5), "context"),
    (lambda s: s.update(runs_on="images"), "runs on"),
    (lambda s: s["inputs"][0].update(shape=[1, 1, 32, 32]), "input shape"),
    (lambda s: s["heads"].append({"kind": "heatmap", "output": "crop_mask"}), "nothing else"),
    (lambda s: s["heads"][1].update(per="lesion"), "per = 'image'"),
    (lambda s: s.update(artifacts=[]), "no artifacts"),
])
def test_stage_declarations_the_box_cannot_run_are_refused(tmp_path, edit, message):
    section = stage_section(tmp_path)
    check_stage(section)
    edit(section)
    with pytest.raises(StageError, match=message):
        check_stage(section)


def test_a_stage_looks_like_a_package_to_the_loader(tmp_path):
    section = stage_section(tmp_path)
    view = stage_manifest({"schema": "clinibox.model-package/1", "name": "staged",
                           "version": "2.1"}, section)
    assert view["name"] == "staged/crop" and view["version"] == "2.1"
    assert view["postprocessing"]["params"]["input_size"] == [SIZE, SIZE]
    assert view["stage"]["crop"]["context"] == 1.6
