"""A heatmap for the classifier heads hospitals' models end in (issue 55).

Each head style of ``tests/conversion/head_models.py`` (ResNet's pooling + linear,
timm's MobileNetV3 and EfficientNet heads, torchvision's MobileNetV3 MLP head) is
trained for a second on disc phantoms. The converter's head search finds every
one; its ``cam`` is captum's Grad-CAM (correlation 1 but for rounding), exports
to ONNX and runs there as in PyTorch, and peaks on the disc far more often than
chance. Heads it cannot map are refused with a reason naming the layer. Then a
timm-MobileNetV3-style model goes through the real ``clinibox convert``.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from clinibox_common.contracts.heads import head_of, parse_heads
from converters.cam import find_pool_linear_head, grad_cam, grad_cam_agreement
from converters.head_cam import (
    GradCamModel,
    find_pooled_head,
    peak_on_lesion,
    per_position_cam,
    wrap,
)
from engine.model_package import load_package
from firmware_app.service.appliance import load_runner
from firmware_app.settings import box as box_config
from tests.conversion.conftest import clinibox, write_png_folder
from tests.conversion.head_models import STYLES, ResNetStyle, backbone
from tests.conversion.tiny_models import as_input, shapes_with_masks, train_quickly
from tests.torchvision_cpu import load as load_torchvision

SIZE = 64
#: a peak lands in the disc's box by chance on about 8 % of images (its mean area)
LEAST_ON_LESION = 0.3


def trained(style: str) -> nn.Module:
    """The head style's model, trained for a few epochs on one thread."""
    images, labels, _ = shapes_with_masks(240, SIZE, 2, seed=103)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(3)
        return train_quickly(STYLES[style](), as_input(images, 1), labels, epochs=6, seed=3)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("style", list(STYLES))
def test_each_head_style_gets_grad_cam_in_its_graph_on_the_lesion(style, tmp_path):
    model = trained(style)
    images, truth, masks = shapes_with_masks(120, SIZE, 2, seed=903)
    x = torch.from_numpy(as_input(images, 1))
    plain = find_pool_linear_head(model, x[:2], lambda r: r)
    pooled_through_layers = style in ("timm_mobilenetv3", "torchvision_mobilenetv3")
    # the plain CAM's search refuses exactly the heads with layers after the pool
    assert (plain.head is None) == pooled_through_layers, plain.reason
    if pooled_through_layers:
        assert "not the global average of any module's feature maps" in plain.reason
    head = find_pooled_head(model, x[:2], lambda r: r).head
    assert head is not None and head.map_size == (8, 8)
    wrapper = wrap(model, head, ("logits",))
    assert isinstance(wrapper, GradCamModel)
    with torch.no_grad():
        out = wrapper(x)
    torch.testing.assert_close(out["logits"], model(x))
    cam = out["cam"].numpy()
    agreement = grad_cam_agreement(cam[:24], grad_cam(model, head, x.numpy()[:24],
                                                      lambda r: r, 2))
    assert agreement["flat"] == 0 and agreement["min"] >= 0.99, agreement

    # the box has no torch: the map is part of the exported graph
    path = tmp_path / "model.onnx"
    torch.onnx.export(wrapper, (x[:1],), str(path), input_names=["image"],
                      output_names=["logits", "cam", "features"], dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(["cam"], {"image": x[i:i + 1].numpy()})[0]
                          for i in range(4)])
    np.testing.assert_allclose(got, cam[:4], rtol=1e-3, atol=1e-3 * np.abs(cam).max())

    lesions = np.nonzero(truth == 1)[0]
    on = sum(peak_on_lesion(cam[i], masks[i]) for i in lesions)
    assert on / len(lesions) >= LEAST_ON_LESION, (style, on, len(lesions))


def test_per_position_cam_is_the_plain_cam_for_a_linear_head():
    model = ResNetStyle().eval()
    x = torch.randn(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    head = find_pooled_head(model, x[:2], lambda r: r).head
    assert head is not None and head.chain == ("fc",)
    maps = model.features(x)
    with torch.no_grad():
        cam = wrap(model, head, ("logits",))(x)["cam"]
        positions = per_position_cam(model, head, maps)
    torch.testing.assert_close(positions, cam + model.fc.bias[None, :, None, None])


class SoftmaxHead(nn.Module):
    """A head that ends in a softmax: not element-wise."""

    def __init__(self) -> None:
        super().__init__()
        self.features = backbone(1, 8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(1), nn.Linear(16, 2), nn.Softmax(dim=1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(image)))


class FunctionBetween(nn.Module):
    """A head with a function call between its layers (not a module the hooks see)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = backbone(1, 8)
        self.fc1, self.fc2 = nn.Linear(16, 16), nn.Linear(16, 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.features(image).mean(dim=(2, 3)))))


@pytest.mark.parametrize(("model", "says"), [
    (SoftmaxHead, "its head after the global average pool has a Softmax ('classifier.2')"),
    (FunctionBetween, "does not give its score when replayed layer by layer"),
])
def test_a_head_it_cannot_map_is_refused_with_the_layer_named(model, says):
    x = torch.randn(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    search = find_pooled_head(model().eval(), x, lambda r: r)
    assert search.head is None and says in search.reason, search.reason


class GELU(nn.Module):
    """timm's own GELU class (``timm.layers.activations.GELU``): not ``nn.GELU``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(x)


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's batch norm with its activation inside (``timm.layers.BatchNormAct2d``)."""

    def __init__(self, channels: int, act: nn.Module) -> None:
        super().__init__(channels)
        self.drop, self.act = nn.Identity(), act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


class TimmLayersHead(nn.Module):
    """pool → ``conv_head`` → ``norm_head`` (BatchNormAct2d) → timm GELU → classifier."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.features = backbone(1, 8)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(16, 32, 1)
        self.norm_head = BatchNormAct2d(32, act)
        self.act2 = GELU()
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(32, 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.norm_head(self.conv_head(self.global_pool(self.features(image))))
        return self.classifier(self.flatten(self.act2(x)))


def test_timm_activation_classes_and_its_batch_norm_with_activation_are_mapped():
    model = TimmLayersHead(nn.Hardswish())
    train_quickly(model, torch.randn(64, 1, SIZE, SIZE).numpy(),
                  np.arange(64) % 2, epochs=1)  # running statistics that are not 0 and 1
    x = torch.randn(6, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    head = find_pooled_head(model, x[:2], lambda r: r).head
    assert head is not None, find_pooled_head(model, x[:2], lambda r: r).reason
    assert head.chain == ("conv_head", "norm_head", "act2", "flatten", "classifier")
    with torch.no_grad():
        cam = wrap(model, head, ("logits",))(x)["cam"].numpy()
    agreement = grad_cam_agreement(cam, grad_cam(model, head, x.numpy(), lambda r: r, 2))
    assert agreement["min"] >= 0.99, agreement
    refused = find_pooled_head(TimmLayersHead(nn.ELU()).eval(), x[:2], lambda r: r)
    assert refused.head is None
    assert "a batch norm whose own activation is a ELU ('norm_head')" in refused.reason


@pytest.mark.parametrize(("name", "plain", "head_says"), [
    ("mobilenet_v3_small", False, ("classifier.0", "classifier.1", "classifier.2",
                                   "classifier.3")),
    ("mobilenet_v3_large", False, ("classifier.0", "classifier.1", "classifier.2",
                                   "classifier.3")),
    ("mobilenet_v2", True, ("classifier.1",)),
    ("resnet18", True, ("fc",)),
    ("efficientnet_b0", True, ("classifier.1",)),
    ("regnet_y_400mf", True, ("fc",)),
    ("shufflenet_v2_x0_5", True, ("fc",)),
    # a 1×1 convolution to the classes, then the pool: no layer after the pool
    ("squeezenet1_0", False, "is not the global average of any module's feature maps"),
    # its ReLU after the last map is a function (in place), so no module's map is pooled
    ("densenet121", False, "is not the global average of any module's feature maps"),
    ("convnext_tiny", False, "has a LayerNorm2d ('classifier.0')"),
])
def test_torchvision_s_own_classifiers(name, plain, head_says):
    torchvision = load_torchvision()
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=2).eval()
    with torch.no_grad():  # untrained: its tiny initial class weights give flat maps
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(100.0)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(5))
    assert (find_pool_linear_head(model, x, lambda r: r).head is not None) == plain
    search = find_pooled_head(model, x, lambda r: r)
    if isinstance(head_says, str):
        assert search.head is None and head_says in search.reason, search.reason
        return
    assert search.head is not None and search.head.chain == head_says, search.reason
    if plain:  # the converter gives it the plain CAM (tests/unit/converters/test_convert_cam.py)
        return
    with torch.no_grad():
        cam = wrap(model, search.head, ("logits",))(x)["cam"].numpy()
    agreement = grad_cam_agreement(cam, grad_cam(model, search.head, x.numpy(),
                                                 lambda r: r, 2))
    # a map is flat where every hardswish of the head sits below -3 (Grad-CAM's is too)
    assert agreement["flat"] < agreement["maps"] and agreement["min"] >= 0.99, agreement


MODULE = '''
from tests.conversion.head_models import timm_mobilenetv3
'''


def test_a_timm_mobilenetv3_head_is_converted_with_its_heatmap(tmp_path, signing_key):
    (tmp_path / "clinic_timm.py").write_text(MODULE)
    labels = write_png_folder(tmp_path / "data", 96, SIZE, 2, seed=5)
    model = trained("timm_mobilenetv3")
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    out = tmp_path / "packages" / "lesion-mnv3" / "1.0.0"
    run = clinibox("convert", "--model", "clinic_timm:timm_mobilenetv3", "--weights",
                   "weights.pt", "--input-shape", f"1,{SIZE},{SIZE}", "--mean", "0.3",
                   "--std", "0.2", "--class-names", "normal,lesion", "--negative-label",
                   "normal", "--data", "data", "--labels", str(labels), "--targets", "onnx",
                   "--accept-weak-model", "--out", str(out), "--key", str(signing_key),
                   cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-6000:]
    manifest = load_package(out, [signing_key.with_suffix(".pub")]).manifest
    heatmap = head_of(parse_heads(manifest["heads"]), "heatmap")
    assert heatmap is not None and heatmap.outputs == {"output": "cam"}
    steps = manifest["provenance"]["steps"]["heatmap"]
    assert steps["added"] and steps["method"].startswith("Grad-CAM in the graph")
    assert steps["head_layers"] == ["conv_head", "act2", "flatten", "classifier"]
    assert steps["feature_layer"] == "features" and steps["map"] == [2, 8, 8]
    assert steps["grad_cam"]["correlation"]["onnx-fp32"]["min"] >= 0.99
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "Grad-CAM in the graph" in report
    assert "head <code>conv_head</code>, <code>act2</code>, <code>flatten</code>" in report

    # on the box (no torch): a finding of this model has its heatmap
    runner = load_runner(box_config.from_dict({"models": {
        "dir": str(out.parent.parent), "name": "lesion-mnv3",
        "trusted_keys": [str(signing_key.with_suffix(".pub"))]}}))
    images, truth, _ = shapes_with_masks(8, SIZE, 2, seed=35)
    for image in images[truth == 1]:
        findings, _ = runner.run(image)
        assert findings.heatmap is not None and float(findings.heatmap.max()) > 0
