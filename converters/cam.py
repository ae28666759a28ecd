"""A class-activation map built into a classifier's graph, checked against Grad-CAM.

Most image classifiers end in global average pooling of their last feature
maps ``A`` [N, C, h, w] followed by one linear layer (weights ``W`` [K, C],
bias ``b``): torchvision-style ResNets, MONAI's ``resnet*`` and DenseNets, timm
models. For such a head the class-activation map ``cam_k = W_k · A`` is a 1×1
convolution of the maps (its spatial mean plus ``b_k`` is the class logit); it
needs no gradients, so it runs in ONNX, OpenVINO and TFLite like any other
layer.

:func:`find_pool_linear_head` finds that head by running the model with
forward hooks (the last linear layer, and the module whose output it pools);
:class:`CamModel` wraps the classifier so that it also returns ``cam``
[N, K, h, w] and ``features`` (the pooled maps, optionally projected on their
principal directions, for the validated range in ``converters.ood``).
:func:`grad_cam_agreement` compares a map with captum's ``LayerGradCam``: for a
pooling + linear head Grad-CAM (before its ReLU) is ``(W_k · A) / (h w)``, so the
two agree up to a positive scale (correlation 1 but for rounding), and the
box's display of the map (its positive part over its maximum) is Grad-CAM's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

#: the outputs the wrapper adds
CAM_OUTPUT, FEATURES_OUTPUT = "cam", "features"
#: the least correlation with Grad-CAM a float artifact's map must reach
MIN_CORRELATION = 0.99


@dataclass(frozen=True)
class PoolLinearHead:
    """Where a classifier's global-average-pooling + linear head sits."""

    feature_path: str  # the module whose output [N, C, h, w] is pooled
    linear_path: str  # the final nn.Linear, [K, C]
    channels: int
    classes: int
    map_size: tuple[int, int]


@dataclass(frozen=True)
class HeadSearch:
    """The head found, or why there is none."""

    head: PoolLinearHead | None
    reason: str = ""


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    scale = max(1.0, float(b.abs().max()))
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5 * scale))


def find_pool_linear_head(model: nn.Module, example: torch.Tensor,
                          score_of: Callable[[Any], torch.Tensor]) -> HeadSearch:
    """The pooling + linear head of ``model``, found by running it on ``example``.

    ``score_of`` picks the score output from the model's result. The head is
    the last ``nn.Linear`` called, called once, whose output is the score and
    whose input [N, C] is the spatial mean of the output [N, C, h, w] of some
    module (the outermost one, when nested modules give the same tensor).
    """
    model = model.eval()
    calls: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    handles = [m.register_forward_hook(
        lambda _m, args, out, name=name: calls.append((name, args[0].detach().clone(),
                                                       out.detach().clone())))
        for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            score = score_of(model(example)).detach()
    finally:
        for handle in handles:
            handle.remove()
    if not calls:
        return HeadSearch(None, "the model has no linear layer (not a pooling + linear head)")
    name, pooled, logits = calls[-1]
    if sum(1 for c in calls if c[0] == name) > 1:
        return HeadSearch(None, f"its last linear layer {name!r} is called more than once")
    if logits.numel() != score.numel() or not _close(logits.reshape(score.shape), score):
        return HeadSearch(None, f"the score output is not the output of its last linear "
                                f"layer {name!r} (something follows it)")
    if pooled.dim() != 2:
        return HeadSearch(None, f"its last linear layer {name!r} takes a "
                                f"{pooled.dim()}-D input, not pooled features [N, C]")
    channels = pooled.shape[1]
    matches: list[tuple[str, tuple[int, int]]] = []

    def probe(_m: nn.Module, _args: Any, out: Any, name: str) -> None:
        if (isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[1] == channels
                and out.shape[2] * out.shape[3] > 1 and _close(out.mean(dim=(2, 3)), pooled)):
            matches.append((name, (int(out.shape[2]), int(out.shape[3]))))

    handles = [m.register_forward_hook(lambda m_, a_, o_, name=n: probe(m_, a_, o_, name))
               for n, m in model.named_modules() if n and n != name]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    if not matches:
        return HeadSearch(None, f"the input of its last linear layer {name!r} is not the "
                                "global average of any module's feature maps")
    feature_path, size = matches[-1]
    linear = model.get_submodule(name)
    return HeadSearch(PoolLinearHead(feature_path, name, channels, linear.out_features, size))


def named_outputs(result: Any, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """A model's result (tensor, tuple or dict) as a dict under ``names``."""
    if isinstance(result, torch.Tensor):
        return {names[0]: result}
    if isinstance(result, Mapping):
        return {n: result[n] for n in names}
    return dict(zip(names, result, strict=True))


class CamModel(nn.Module):
    """A classifier with ``cam`` [N, K, h, w] and ``features`` [N, D] beside its outputs.

    Outputs are a dict: the classifier's own outputs under ``output_names``,
    then ``cam`` (``W · A``, whose spatial mean plus the bias is the logit) and
    ``features`` (the pooled maps; with a projection, their coordinates on the
    projection's directions and the norm of the rest).
    """

    added_outputs = (CAM_OUTPUT, FEATURES_OUTPUT)

    def __init__(self, model: nn.Module, head: PoolLinearHead,
                 output_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.output_names = tuple(output_names)
        self.register_buffer("projection_mean", torch.zeros(0))
        self.register_buffer("projection_basis", torch.zeros(0, 0))

    def set_projection(self, mean: np.ndarray, basis: np.ndarray) -> None:
        """Project ``features`` on ``basis`` [C, d] around ``mean`` [C] (adds the residual
        norm, so the output is [N, d + 1])."""
        self.projection_mean = torch.as_tensor(mean, dtype=torch.float32)
        self.projection_basis = torch.as_tensor(basis, dtype=torch.float32)

    @property
    def feature_size(self) -> int:
        """D, the width of the ``features`` output."""
        basis = self.projection_basis
        return self.head.channels if basis.numel() == 0 else basis.shape[1] + 1

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image [N, C, H, W] → the classifier's outputs, ``cam`` and ``features``."""
        captured: list[torch.Tensor] = []
        layer = self.model.get_submodule(self.head.feature_path)
        handle = layer.register_forward_hook(lambda _m, _a, out: captured.append(out))
        try:
            result = self.model(image)
        finally:
            handle.remove()
        maps = captured[-1]
        pooled = maps.mean(dim=(2, 3))
        cam = self.class_maps(maps, pooled)
        if self.projection_basis.numel():
            centred = pooled - self.projection_mean
            coords = centred @ self.projection_basis
            rest = centred - coords @ self.projection_basis.T
            pooled = torch.cat([coords, torch.sqrt((rest * rest).sum(1, keepdim=True) + 1e-12)],
                               dim=1)
        outputs = named_outputs(result, self.output_names)
        return {**outputs, CAM_OUTPUT: cam, FEATURES_OUTPUT: pooled}

    def class_maps(self, maps: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """``cam`` [N, K, h, w] of the maps [N, C, h, w] (whose spatial mean is ``pooled``):
        the linear layer's weights as a 1×1 convolution."""
        linear = self.model.get_submodule(self.head.linear_path)
        return F.conv2d(maps, linear.weight[:, :, None, None])


def grad_cam(model: nn.Module, head: PoolLinearHead, x: np.ndarray,
             score_of: Callable[[Any], torch.Tensor], classes: int) -> np.ndarray:
    """captum's Grad-CAM (``LayerGradCam`` on the pooled module, no ReLU) [N, K, h, w]."""
    from captum.attr import LayerGradCam

    model = model.eval()
    layer = model.get_submodule(head.feature_path)
    method = LayerGradCam(lambda t: score_of(model(t)).reshape(len(t), -1), layer)
    inputs = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    maps = [method.attribute(inputs, target=k).detach().numpy()[:, 0] for k in range(classes)]
    return np.stack(maps, axis=1)


def grad_cam_agreement(cam: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Pearson correlation of each image's and class's map with the reference map.

    Maps that are flat in either (no spatial signal) are counted, not scored.
    Returns ``{"maps", "flat", "min", "median"}`` (None when none could be scored).
    """
    a = np.asarray(cam, np.float64).reshape(-1, int(np.prod(cam.shape[2:])))
    b = np.asarray(reference, np.float64).reshape(a.shape)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    scale_a = 1e-6 * max(1.0, float(np.abs(cam).max()))
    scale_b = 1e-6 * max(1e-12, float(np.abs(reference).max()))
    ok = (na > scale_a * np.sqrt(a.shape[1])) & (nb > scale_b * np.sqrt(a.shape[1]))
    r = (a[ok] * b[ok]).sum(1) / (na[ok] * nb[ok])
    return {"maps": len(a), "flat": int((~ok).sum()),
            "min": round(float(r.min()), 6) if r.size else None,
            "median": round(float(np.median(r)), 6) if r.size else None}
