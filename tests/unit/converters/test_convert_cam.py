"""Class-activation maps built into a classifier: finding the head, the wrapper's outputs,
and agreement with captum's Grad-CAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from converters.cam import (
    CamModel,
    find_pool_linear_head,
    grad_cam,
    grad_cam_agreement,
)
from tests.conversion.tiny_models import small_resnet, tiny_classifier


def _same(result):
    return result


class _MlpHead(nn.Module):
    """Pooling, then two linear layers: not a pooling + linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.hidden = nn.Linear(8, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(torch.relu(self.conv(x)).mean(dim=(2, 3)))))


class _MaxPooled(nn.Module):
    """Global max pooling + linear: its CAM would not be the head's maths."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).amax(dim=(2, 3)))


class _Scaled(nn.Module):
    """Something after the linear layer (a temperature)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny_classifier(1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logit": self.inner(x) / 3.0}


def _x(n: int = 3, channels: int = 1, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn((n, channels, size, size), generator=torch.Generator().manual_seed(seed))


def test_the_pooling_linear_head_of_common_shapes_is_found():
    torch.manual_seed(0)
    tiny = find_pool_linear_head(tiny_classifier(1, 1), _x(), _same).head
    assert tiny is not None
    assert (tiny.feature_path, tiny.linear_path, tiny.channels, tiny.classes) == (
        "features", "head", 32, 1)
    assert tiny.map_size == (4, 4)
    resnet = find_pool_linear_head(small_resnet(3, 3, 8), _x(channels=3, size=64), _same).head
    assert resnet is not None and (resnet.feature_path, resnet.linear_path) == ("stages", "fc")
    assert (resnet.channels, resnet.classes, resnet.map_size) == (32, 3, (4, 4))


@pytest.mark.parametrize(("model", "words"), [
    (_MlpHead(), "is not the global average of any module's feature maps"),
    (_MaxPooled(), "is not the global average"),
    (_Scaled(), "is not the output of its last linear layer"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1)), "has no linear layer"),
])
def test_other_heads_are_refused_with_the_reason(model, words):
    def score(result):
        return result["logit"] if isinstance(result, dict) else result

    search = find_pool_linear_head(model, _x(), score)
    assert search.head is None and words in search.reason


def test_the_wrapper_adds_a_map_whose_mean_is_the_logit_and_the_pooled_features():
    torch.manual_seed(1)
    model = small_resnet(1, 2, 8).eval()
    x = _x(4, size=64, seed=3)
    head = find_pool_linear_head(model, x, _same).head
    wrapper = CamModel(model, head, ("logits",)).eval()
    with torch.no_grad():
        out, logits = wrapper(x), model(x)
    assert list(out) == ["logits", "cam", "features"]
    assert torch.equal(out["logits"], logits)
    assert out["cam"].shape == (4, 2, 4, 4) and out["features"].shape == (4, 32)
    torch.testing.assert_close(out["cam"].mean(dim=(2, 3)) + model.fc.bias, logits,
                               atol=1e-5, rtol=1e-5)
    # the hook is gone after each call: the plain model is unchanged
    assert not any(m._forward_hooks for m in model.modules())


def test_a_projection_keeps_the_principal_directions_and_the_rest_as_a_norm():
    torch.manual_seed(2)
    model = tiny_classifier(1, 1).eval()
    head = find_pool_linear_head(model, _x(), _same).head
    wrapper = CamModel(model, head, ("logit",)).eval()
    x = _x(6, seed=4)
    with torch.no_grad():
        pooled = wrapper(x)["features"].numpy()
    mean = pooled.mean(0)
    basis = np.linalg.svd(pooled - mean, full_matrices=False)[2][:3].T
    wrapper.set_projection(mean, basis)
    assert wrapper.feature_size == 4
    with torch.no_grad():
        features = wrapper(x)["features"].numpy()
    centred = pooled - mean
    np.testing.assert_allclose(features[:, :3], centred @ basis, atol=1e-4)
    rest = np.linalg.norm(centred - centred @ basis @ basis.T, axis=1)
    np.testing.assert_allclose(features[:, 3], rest, atol=1e-3)


@pytest.mark.slow
def test_the_map_agrees_with_captum_grad_cam_and_a_wrong_map_does_not():
    torch.manual_seed(3)
    model = small_resnet(1, 3, 8).eval()
    x = _x(5, size=64, seed=5)
    head = find_pool_linear_head(model, x, _same).head
    with torch.no_grad():
        cam = CamModel(model, head, ("logits",))(x)["cam"].numpy()
    reference = grad_cam(model, head, x.numpy(), _same, head.classes)
    assert reference.shape == cam.shape
    agreement = grad_cam_agreement(cam, reference)
    assert agreement["maps"] == 15 and agreement["flat"] == 0
    assert agreement["min"] >= 0.9999
    # Grad-CAM (no ReLU) is the map over h·w: the same up to a positive scale
    hw = cam.shape[2] * cam.shape[3]
    np.testing.assert_allclose(reference * hw, cam, atol=1e-4)
    shuffled = np.random.default_rng(0).permutation(cam.reshape(-1)).reshape(cam.shape)
    assert grad_cam_agreement(shuffled, reference)["min"] < 0.9
    flat = grad_cam_agreement(np.ones_like(cam), reference)
    assert flat["flat"] == 15 and flat["min"] is None
