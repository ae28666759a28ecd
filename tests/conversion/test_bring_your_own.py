"""Bring your own model: MONAI networks through the real `clinibox convert`.

A clinic's network from a well-kept library (``monai.networks.nets.resnet10``,
2-D, one input channel, two classes), briefly trained, is converted to an ONNX
package. The converter finds its pooling + linear head by itself and builds a
class-activation map into the graph; the test checks that map, in the ONNX
artifact, against captum's Grad-CAM of the PyTorch model, and that the package
declares its heads, carries a validated range and loads as the box loads it.
A MONAI U-Net goes the same way with a segmentation head declared in
``convert.toml``, and the box outlines the lesion from its mask; a MONAI classifier
declared as its second stage (``[stage]``) then classifies each outlined lesion's crop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from pydicom.data import get_testdata_file

from clinibox_common.contracts.heads import head_of, parse_heads, parse_validated_range
from converters.cam import find_pool_linear_head, grad_cam, grad_cam_agreement
from converters.config import ConvertConfig
from converters.data import Preprocessing, load_folder
from engine.imaging.wrap import decode_file
from engine.model_package import load_package
from firmware_app.service.appliance import load_runner
from firmware_app.settings import box as box_config
from tests.conversion.conftest import clinibox, write_png_folder
from tests.conversion.tiny_models import (
    as_input,
    shapes_dataset,
    shapes_with_masks,
    train_quickly,
)

MODULE = '''
from monai.networks.nets import resnet10


def lesion_resnet():
    """MONAI's 2-D ResNet-10, one grey channel, normal / lesion."""
    return resnet10(spatial_dims=2, n_input_channels=1, num_classes=2, no_max_pool=True,
                    widen_factor=0.25)
'''
SIZE = 64


@contextmanager
def one_thread() -> Iterator[None]:
    """Train on one thread: on a shared 2-core machine two threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_a_monai_resnet_gets_a_heatmap_matching_grad_cam_and_a_validated_range(
        tmp_path, signing_key):
    (tmp_path / "clinic_monai.py").write_text(MODULE)
    labels = write_png_folder(tmp_path / "data", 96, SIZE, 2, seed=5)
    namespace: dict = {}
    exec(MODULE, namespace)
    torch.manual_seed(0)
    images, truth = shapes_dataset(160, SIZE, 2, seed=21)  # training images, not converted
    with one_thread():
        model = train_quickly(namespace["lesion_resnet"](), as_input(images, 1), truth,
                              epochs=10)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    out = tmp_path / "packages" / "lesion-resnet" / "1.0.0"

    run = clinibox("convert", "--model", "clinic_monai:lesion_resnet", "--weights",
                   "weights.pt", "--input-shape", f"1,{SIZE},{SIZE}", "--mean", "0.3",
                   "--std", "0.2", "--class-names", "normal,lesion", "--negative-label",
                   "normal", "--data", "data", "--labels", str(labels), "--targets", "onnx",
                   "--out", str(out), "--key", str(signing_key), cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-6000:]

    package = load_package(out, [signing_key.with_suffix(".pub")])
    manifest = package.manifest
    heads = parse_heads(manifest["heads"])
    classification, heatmap = head_of(heads, "classification"), head_of(heads, "heatmap")
    assert classification is not None and heatmap is not None
    assert classification.outputs == {"output": "logits"}
    assert classification.param("labels") == ["normal", "lesion"]
    assert classification.param("negative_label") == "normal"
    assert classification.param("per") == "image"
    assert heatmap.outputs == {"output": "cam"} and heatmap.param("activation") == "none"
    shapes = {o["name"]: o["shape"] for o in manifest["outputs"]}
    assert shapes["logits"] == [1, 2] and shapes["cam"] == [1, 2, 8, 8]
    steps = manifest["provenance"]["steps"]
    assert (steps["heatmap"]["feature_layer"], steps["heatmap"]["linear_layer"]) == (
        "layer4", "fc")
    assert steps["heatmap"]["grad_cam"]["correlation"]["onnx-fp32"]["min"] >= 0.99

    # the ONNX artifact's map against captum's Grad-CAM of the PyTorch model, here
    fp32 = next(a for a in package.artifacts if a.label == "onnx/fp32")
    session = ort.InferenceSession(str(out / fp32.path), providers=["CPUExecutionProvider"])
    assert {"logits", "cam", "features"} <= {o.name for o in session.get_outputs()}
    prep = Preprocessing("letterbox_grey", (1, 1, SIZE, SIZE), 0.3, 0.2, {})
    val = load_folder(tmp_path / "data", labels, prep, 2, ConvertConfig().split_fractions(),
                      seed=0).subset("validation")
    x = val.x[:16]
    got = [dict(zip([o.name for o in session.get_outputs()],
                    session.run(None, {"image": x[i:i + 1]}), strict=True))
           for i in range(len(x))]
    cam = np.concatenate([g["cam"] for g in got])
    logits = np.concatenate([g["logits"] for g in got])
    bias = model.fc.bias.detach().numpy()
    np.testing.assert_allclose(cam.mean(axis=(2, 3)) + bias, logits, atol=1e-3)
    model.eval()
    head = find_pool_linear_head(model, torch.from_numpy(x[:2]), lambda r: r).head
    reference = grad_cam(model, head, x, lambda r: r, 2)
    agreement = grad_cam_agreement(cam, reference)
    assert agreement["flat"] == 0 and agreement["min"] >= 0.99, agreement

    # the validated range: fitted on calibration, threshold from validation
    ood = parse_validated_range(manifest["ood"])
    assert ood.output == "features"
    # the input's own statistics (computed by the box in float), then the features output
    assert ood.image_statistics is not None and ood.image_statistics.size >= 8
    assert shapes["features"][1] < 128  # 128 pooled channels, projected
    assert len(ood.mean) == ood.image_statistics.size + shapes["features"][1]
    assert ood.held_out["images"] == len(val) and ood.held_out["flagged"] <= 0.05
    assert steps["validated_range"]["fit_rows"] > len(ood.mean)
    assert "Validated range" in (out / "report.html").read_text(encoding="utf-8")
    source = manifest["provenance"]["source_metrics"]
    assert source["auc"] >= 0.8 and source["sensitivity"] >= 0.95

    # on the box: the heatmap's hot spot lies on the disc, images like the validation ones
    # are inside the range, and real CT and MR images (pydicom's own) are outside it
    cfg = box_config.from_dict({"models": {
        "dir": str(out.parent.parent), "name": "lesion-resnet",
        "trusted_keys": [str(signing_key.with_suffix(".pub"))]}})
    runner = load_runner(cfg)
    images, truth, masks = shapes_with_masks(16, SIZE, 2, seed=35)
    for image, label, mask in zip(images, truth, masks, strict=True):
        findings, _ = runner.run(image)
        assert findings.range_score is not None and not findings.range_score.outside
        assert findings.heatmap is not None
        if label == 1:
            heat = findings.heatmap
            cell = SIZE / heat.shape[1]
            gy, gx = np.unravel_index(int(np.argmax(heat)), heat.shape)
            ys, xs = np.nonzero(mask)
            radius = (xs.max() - xs.min()) / 2
            distance = np.hypot((gx + 0.5) * cell - xs.mean(), (gy + 0.5) * cell - ys.mean())
            assert distance <= radius + cell, (distance, radius)
    for name in ("CT_small.dcm", "MR_small.dcm"):
        decoded = decode_file(Path(get_testdata_file(name)), cfg.limits, 1)
        findings, _ = runner.run(decoded.frames[0])
        assert findings.range_score.outside, (name, findings.range_score)


UNET_MODULE = '''
from monai.networks.nets import BasicUNet, resnet10


def lesion_unet():
    """MONAI's 2-D U-Net, one grey channel in, one lesion-logit mask out."""
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=1,
                     features=(8, 8, 16, 16, 32, 8), upsample="nontrainable")


def crop_classifier():
    """MONAI's 2-D ResNet-10 on a lesion's crop: benign / malignant logits."""
    return resnet10(spatial_dims=2, n_input_channels=1, num_classes=2, no_max_pool=True,
                    widen_factor=0.25)
'''
UNET_TOML = '''
outputs = ["lesion_mask"]
class_names = ["lesion"]
task = "lesion-segmentation"

[[heads]]
kind = "segmentation"
output = "lesion_mask"
activation = "sigmoid"
labels = ["lesion"]
threshold = 0.5

[stage]
name = "crop-class"
model = "clinic_unet:crop_classifier"
weights = "crop.pt"
outputs = ["crop_class"]
crop = {size = [32, 32], context = 1.5, margin_px = 4}
purpose = "classify each outlined lesion on its crop"

[[stage.heads]]
kind = "classification"
output = "crop_class"
activation = "softmax"
labels = ["benign", "malignant"]
per = "image"
'''


def _train_unet(model: torch.nn.Module, x: np.ndarray, masks: np.ndarray,
                epochs: int = 8) -> torch.nn.Module:
    """Adam on the per-pixel BCE (lesion pixels weighted 5×)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(masks[:, None].astype(np.float32))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt))
        for i in range(0, len(order), 16):
            idx = order[i:i + 16]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(xt[idx]), yt[idx], pos_weight=torch.tensor(5.0))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def test_a_monai_unet_is_converted_with_its_declared_segmentation_head(tmp_path, signing_key):
    (tmp_path / "clinic_unet.py").write_text(UNET_MODULE)
    (tmp_path / "convert.toml").write_text(UNET_TOML)
    labels = write_png_folder(tmp_path / "data", 96, SIZE, 2, seed=6)
    namespace: dict = {}
    exec(UNET_MODULE, namespace)
    torch.manual_seed(0)
    images, _, masks = shapes_with_masks(160, SIZE, 2, seed=23)
    with one_thread():
        model = _train_unet(namespace["lesion_unet"](), as_input(images, 1), masks)
    torch.save(model.state_dict(), tmp_path / "unet.pt")
    torch.manual_seed(1)
    torch.save(namespace["crop_classifier"]().state_dict(), tmp_path / "crop.pt")
    out = tmp_path / "packages" / "lesion-unet" / "1.0.0"

    run = clinibox("convert", "--config", "convert.toml", "--model", "clinic_unet:lesion_unet",
                   "--weights", "unet.pt", "--input-shape", f"1,{SIZE},{SIZE}", "--mean", "0.3",
                   "--std", "0.2", "--data", "data", "--labels", str(labels), "--targets",
                   "onnx", "--out", str(out), "--key", str(signing_key), cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-6000:]
    manifest = load_package(out, [signing_key.with_suffix(".pub")]).manifest
    assert manifest["heads"] == [{"kind": "segmentation", "output": "lesion_mask",
                                  "activation": "sigmoid", "labels": ["lesion"],
                                  "threshold": 0.5}]
    shapes = {o["name"]: o["shape"] for o in manifest["outputs"]}
    assert shapes == {"lesion_mask": [1, 1, SIZE, SIZE], "finding_logit": [1, 1]}
    assert "most probable lesion pixel" in next(
        o["meaning"] for o in manifest["outputs"] if o["name"] == "finding_logit")
    assert manifest["task"] == "lesion-segmentation"
    steps = manifest["provenance"]["steps"]
    assert "heatmap" not in steps  # not a classifier: nothing added
    # no features output, yet a validated range: the input's own statistics alone
    assert steps["validated_range"]["fitted"] is True
    ood = parse_validated_range(manifest["ood"])
    assert ood.output is None and ood.image_statistics is not None
    assert len(ood.mean) == ood.image_statistics.size and ood.held_out["flagged"] <= 0.05
    assert manifest["provenance"]["source_metrics"]["auc"] >= 0.9
    [stage] = manifest["stages"]  # the second stage, exported and checked against PyTorch
    assert stage["name"] == "crop-class" and stage["inputs"][0]["shape"] == [1, 1, 32, 32]
    assert [a["path"] for a in stage["artifacts"]] == ["stages/crop-class/model.fp32.onnx"]
    assert stage["artifacts"][0]["validation"]["max_class_probability_difference"] <= 1e-3
    assert len(stage["golden_cases"]) == 2

    # the box finds the lesion from the mask alone: the finding probability is the most
    # probable pixel's, and the lesion's outline lies on the true disc
    cfg = box_config.from_dict({"models": {
        "dir": str(out.parent.parent), "name": "lesion-unet",
        "trusted_keys": [str(signing_key.with_suffix(".pub"))]}})
    runner = load_runner(cfg)
    assert runner.stage is not None
    first, second = runner.backend_label.split(" + ")  # the stage on the first's runtime
    assert second == f"{first.split(':')[0]}:onnx/fp32"
    images, truth, masks = shapes_with_masks(12, SIZE, 2, seed=24)
    for image, label, mask in zip(images, truth, masks, strict=True):
        findings, _ = runner.run(image)
        if label == 0:
            assert findings.probability < manifest["thresholds"]["finding"]
            continue
        assert findings.probability >= manifest["thresholds"]["finding"]
        assert findings.boxes, "a disc with no lesion outlined"
        box = findings.boxes[0]
        assert box.contour, "a segmenting model outlines its lesion"
        # the stage classified the lesion's crop: the U-Net alone gives no classes
        assert set(box.class_probabilities) == {"benign", "malignant"}
        assert sum(box.class_probabilities.values()) == pytest.approx(1, abs=1e-3)
        ys, xs = np.nonzero(mask)
        centre = ((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)
        assert xs.min() - 2 <= centre[0] <= xs.max() + 2
        assert ys.min() - 2 <= centre[1] <= ys.max() + 2
        assert not findings.range_score.outside
    for name in ("CT_small.dcm", "MR_small.dcm"):  # real scans: unlike its validation images
        decoded = decode_file(Path(get_testdata_file(name)), cfg.limits, 1)
        assert runner.run(decoded.frames[0])[0].range_score.outside, name
