"""A heatmap for classifiers whose head after the global average pool is not one linear layer.

Common heads put more after the pool than one linear layer: timm's MobileNetV3
(``global_pool`` → ``conv_head``, a 1×1 convolution of the pooled 1×1 map →
hardswish → flatten → ``classifier``) and torchvision's MobileNetV3 (avgpool →
flatten → ``classifier`` = Linear, Hardswish, Dropout, Linear). For them no exact
class-activation map exists (the nonlinearity sits between the pool and the class
weights), and the box has no gradients (it runs ONNX, OpenVINO or TFLite).

But Grad-CAM needs only the gradient of the score with respect to the pooled
features ``p`` (the same at every position), and for a head that is a chain of
affine layers (linear, 1×1 convolution, batch norm) and element-wise activations
that gradient is a product of matrices and the activations' derivatives at
``p``: ``∇_p y_k = W_1ᵀ σ'(z_1) … W_Lᵀ[k]``. :class:`GradCamModel` computes it in
the graph, with ordinary operations, and ``cam_k = (∇_p y_k) · A`` at every
position of the last feature maps ``A`` [N, C, h, w] — Grad-CAM before its ReLU,
times ``h w`` (for a pooling + linear head it is the plain class-activation map).
The converter checks it against captum's Grad-CAM like any ``cam``.

:func:`find_pooled_head` finds such a head by running the model with hooks: the
shortest run of module calls that ends in the score and starts on the spatial
mean of some module's 4-D output; the head is accepted only when replaying those
layers on the pooled features reproduces the score. :func:`per_position_cam` is
the alternative measured against it (the whole head applied at each position).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from converters.cam import CamModel, HeadSearch, PoolLinearHead
from engine.imaging.annotate import HEATMAP_FLOOR, shown_heatmap

#: module types the head may contain, by how they act on a pooled vector [N, C]
AFFINE = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)
PASS = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Flatten)
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.Hardsigmoid, nn.SiLU,
               nn.GELU, nn.Sigmoid, nn.Tanh)
#: activation classes of other libraries (timm's own ``GELU``, ``Sigmoid``, ``Tanh``, ``Swish``,
#: ``HardSwish``, ``HardSigmoid``) taken as the torch one of that name; the replay of the head
#: (:func:`find_pooled_head`) checks that they compute the same
NAMED_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "GELU": nn.GELU, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh, "Swish": nn.SiLU,
    "SiLU": nn.SiLU, "HardSwish": nn.Hardswish, "Hardswish": nn.Hardswish,
    "HardSigmoid": nn.Hardsigmoid, "Hardsigmoid": nn.Hardsigmoid, "ReLU": nn.ReLU}
#: the head structures that get a heatmap, in words (the docs and the report say the same)
SUPPORTED = ("after the global average pool, a chain of linear layers, 1×1 convolutions and "
             "batch norms with element-wise activations (ReLU, ReLU6, LeakyReLU, Hardswish, "
             "Hardsigmoid, SiLU, GELU, Sigmoid, Tanh; a batch norm may apply one itself), dropout "
             "and flatten between them")


@dataclass(frozen=True)
class PooledHead(PoolLinearHead):
    """A pooled head: the module calls after the pool (``chain``), last the final layer."""

    chain: tuple[str, ...] = ()


def as_activation(module: nn.Module) -> nn.Module | None:
    """``module`` as one of ``ACTIVATIONS`` (another library's class by its name), or None."""
    if isinstance(module, ACTIVATIONS):
        return module
    make = NAMED_ACTIVATIONS.get(type(module).__name__)
    return make() if make is not None and not any(module.children()) else None


def _norm_activation(module: nn.Module) -> nn.Module | None:
    """The activation a batch norm applies after itself (timm's ``BatchNormAct2d``)."""
    act = getattr(module, "act", None)
    return as_activation(act) if isinstance(act, nn.Module) else None


def _unit(module: nn.Module) -> bool:
    return (isinstance(module, AFFINE + PASS) or as_activation(module) is not None
            or not any(module.children()))


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.numel() != b.numel():
        return False
    a, b = a.reshape(b.shape), b
    scale = max(1.0, float(b.abs().max()))
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5 * scale))


def _unsupported(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d) and (
            module.kernel_size != (1, 1) or module.stride != (1, 1) or module.groups != 1
            or module.padding not in ((0, 0), "valid")):
        return "a convolution that is not 1×1 (stride 1, no padding, one group)"
    if isinstance(module, nn.GELU) and module.approximate != "none":
        return "GELU with the tanh approximation"
    if isinstance(module, AFFINE) and isinstance(getattr(module, "act", None), nn.Module) and (
            _norm_activation(module) is None and not isinstance(module.act, nn.Identity)):
        return f"a batch norm whose own activation is a {type(module.act).__name__}"
    if isinstance(module, AFFINE + PASS) or as_activation(module) is not None:
        return ""
    return f"a {type(module).__name__}"


def affine(module: nn.Module) -> tuple[str, torch.Tensor, torch.Tensor | None]:
    """An affine layer on pooled vectors: ("matrix", W [out, in], b [out] or None), or for a
    batch norm (in eval) ("scale", s [C], shift [C])."""
    if isinstance(module, nn.Linear):
        return "matrix", module.weight, module.bias
    if isinstance(module, nn.Conv2d):
        return "matrix", module.weight.flatten(1), module.bias
    assert isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d)
    assert module.running_var is not None and module.running_mean is not None
    scale = torch.rsqrt(module.running_var + module.eps)
    if module.weight is not None:
        scale = scale * module.weight
    shift = -module.running_mean * scale
    if module.bias is not None:
        shift = shift + module.bias
    return "scale", scale, shift


def activation(module: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An element-wise activation of ``z`` and its derivative there, in exportable ops."""
    one, zero = torch.ones_like(z), torch.zeros_like(z)
    if isinstance(module, nn.ReLU):
        return torch.relu(z), torch.where(z > 0, one, zero)
    if isinstance(module, nn.ReLU6):
        return torch.clamp(z, 0.0, 6.0), torch.where((z > 0) & (z < 6), one, zero)
    if isinstance(module, nn.LeakyReLU):
        slope = module.negative_slope
        return torch.where(z > 0, z, slope * z), torch.where(z > 0, one, one * slope)
    if isinstance(module, nn.Hardswish):
        gate = torch.clamp(z + 3.0, 0.0, 6.0) / 6.0
        middle = z / 3.0 + 0.5
        return z * gate, torch.where(z < -3.0, zero, torch.where(z > 3.0, one, middle))
    if isinstance(module, nn.Hardsigmoid):
        inside = (z > -3.0) & (z < 3.0)
        return torch.clamp(z + 3.0, 0.0, 6.0) / 6.0, torch.where(inside, one / 6.0, zero)
    if isinstance(module, nn.SiLU):
        s = torch.sigmoid(z)
        return z * s, s * (1.0 + z * (1.0 - s))
    if isinstance(module, nn.GELU):
        cdf = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
        pdf = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        return z * cdf, cdf + z * pdf
    if isinstance(module, nn.Sigmoid):
        s = torch.sigmoid(z)
        return s, s * (1.0 - s)
    assert isinstance(module, nn.Tanh)
    t = torch.tanh(z)
    return t, 1.0 - t * t


def run_head(modules: list[nn.Module], pooled: torch.Tensor
             ) -> tuple[torch.Tensor, list[tuple[str, Any]]]:
    """The head on pooled vectors [M, C] → scores [M, K], with each step for the gradient:
    ("matrix", W), ("scale", s) or ("activation", σ'(z))."""
    x, steps = pooled, []
    for module in modules:
        if isinstance(module, AFFINE):
            kind, weight, bias = affine(module)
            x = x @ weight.T if kind == "matrix" else x * weight
            if bias is not None:
                x = x + bias
            steps.append((kind, weight))
            then = _norm_activation(module)
            if then is not None:
                x, slope = activation(then, x)
                steps.append(("activation", slope))
        elif (act := as_activation(module)) is not None:
            x, slope = activation(act, x)
            steps.append(("activation", slope))
    return x, steps


def score_gradient(steps: list[tuple[str, Any]], classes: int) -> torch.Tensor:
    """∇ of each score with respect to the pooled features: [N, K, C]."""
    grad: torch.Tensor | None = None
    for kind, value in reversed(steps):
        if kind == "matrix":
            grad = value[None] if grad is None else grad @ value
        elif kind == "scale" and grad is not None:
            grad = grad * value
        elif kind == "scale":
            grad = torch.diag(value)[None]
        else:
            slope = value[:, None, :]
            grad = (torch.eye(classes, dtype=slope.dtype)[None] * slope if grad is None
                    else grad * slope)
    assert grad is not None
    return grad


def find_pooled_head(model: nn.Module, example: torch.Tensor,
                     score_of: Callable[[Any], torch.Tensor]) -> HeadSearch:
    """The pooled head of ``model`` (see the module's docstring), or why there is none."""
    model = model.eval()
    calls: list[tuple[str, nn.Module, torch.Tensor | None, torch.Tensor | None]] = []
    maps: list[tuple[str, torch.Tensor, tuple[int, int]]] = []  # name, spatial mean, size
    units = {name for name, m in model.named_modules() if name and _unit(m)}

    def kept(t: Any) -> torch.Tensor | None:
        """A copy of a tensor of one value per channel (what a head sees), else None (a later
        in-place ReLU would change it; maps are not kept, only their means)."""
        small = isinstance(t, torch.Tensor) and (
            t.dim() <= 3 or (t.dim() == 4 and t.shape[2] * t.shape[3] == 1))
        return t.detach().clone() if small else None

    def hook(module: nn.Module, args: Any, out: Any, name: str) -> None:
        if not isinstance(out, torch.Tensor):
            return
        if out.dim() == 4 and out.shape[2] * out.shape[3] > 1:
            maps.append((name, out.detach().mean(dim=(2, 3)),
                         (int(out.shape[2]), int(out.shape[3]))))
        if name in units and args:
            calls.append((name, module, kept(args[0]), kept(out)))

    handles = [m.register_forward_hook(lambda m_, a_, o_, n=n: hook(m_, a_, o_, n))
               for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            score = score_of(model(example)).detach()
    finally:
        for handle in handles:
            handle.remove()
    called = {c[0] for c in calls}
    calls = [c for c in calls  # a unit inside another (a batch norm's own activation) goes
             if not any(".".join(c[0].split(".")[:i]) in called  # with its container
                        for i in range(1, c[0].count(".") + 1))]
    ends = [i for i, c in enumerate(calls) if c[3] is not None and _close(c[3], score)]
    if not ends:
        return HeadSearch(None, "its score output is not the output of any of its layers "
                                "(something follows its last layer)")
    calls = calls[: ends[-1] + 1]
    found: list[tuple[str, torch.Tensor, tuple[int, int]]] = []
    for start in range(len(calls) - 1, -1, -1):
        first_input = calls[start][2]
        if first_input is None:
            continue
        pooled = first_input.reshape(len(first_input), -1)
        found = [m for m in maps if m[1].shape[1] == pooled.shape[1] and _close(m[1], pooled)]
        if found:
            break
    else:
        return HeadSearch(None, "the input of its head is not the global average of any "
                                "module's feature maps")
    chain = calls[start:]
    names = [c[0] for c in chain]
    if len(set(names)) < len(names):
        return HeadSearch(None, "a layer of its head is called more than once")
    for name, module, _, _ in chain:
        why = _unsupported(module)
        if why:
            return HeadSearch(None, f"its head after the global average pool has {why} "
                                    f"({name!r}); a heatmap needs {SUPPORTED}")
    feature_path, mean, size = found[-1]
    with torch.no_grad():
        replayed, _ = run_head([c[1] for c in chain], mean)
    if not _close(replayed, score):
        return HeadSearch(None, f"its head after the global average pool ({', '.join(names)}) "
                                "does not give its score when replayed layer by layer "
                                "(a function call between the layers?)")
    classes = int(score.reshape(len(score), -1).shape[1])
    return HeadSearch(PooledHead(feature_path, names[-1], int(pooled.shape[1]), classes,
                                 size, tuple(names)))


class GradCamModel(CamModel):
    """:class:`~converters.cam.CamModel` whose ``cam`` is Grad-CAM computed in the graph
    (before its ReLU, times h·w) for a :class:`PooledHead`."""

    head: PooledHead

    def class_maps(self, maps: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """``cam`` [N, K, h, w]: the score's gradient at the pooled features · the maps."""
        modules = [self.model.get_submodule(name) for name in self.head.chain]
        _, steps = run_head(modules, pooled)
        grad = score_gradient(steps, self.head.classes)
        n, channels, h, w = maps.shape
        return (grad @ maps.reshape(n, channels, h * w)).reshape(n, -1, h, w)


def per_position_cam(model: nn.Module, head: PooledHead, maps: torch.Tensor) -> torch.Tensor:
    """The alternative: the whole head applied at each position of ``maps`` [N, C, h, w]
    (each position's feature vector as if it were the pooled one) → [N, K, h, w]."""
    modules = [model.get_submodule(name) for name in head.chain]
    n, channels, h, w = maps.shape
    vectors = maps.permute(0, 2, 3, 1).reshape(-1, channels)
    scores, _ = run_head(modules, vectors)
    return scores.reshape(n, h, w, -1).permute(0, 3, 1, 2)


def wrap(model: nn.Module, head: PoolLinearHead, output_names: tuple[str, ...]) -> CamModel:
    """The wrapper of ``head``: the plain class-activation map for pooling + one linear layer,
    else Grad-CAM in the graph."""
    if isinstance(head, PooledHead):
        return GradCamModel(model, head, output_names).eval()
    return CamModel(model, head, output_names).eval()



def peak_on_lesion(cam: np.ndarray, mask: np.ndarray, channel: int = -1) -> bool:
    """Whether a classifier's heatmap, drawn as the box draws it (the finding class's map
    ``cam[channel]`` [h, w], its positive part over its maximum, upsampled bilinearly over
    the image), has its hottest point drawn (at least the overlay's floor) and inside the
    bounding box of the lesion ``mask`` [H, W] (the image's size)."""
    grid = np.maximum(np.asarray(cam, np.float32)[channel], 0.0)
    top = float(grid.max())
    heat = shown_heatmap(grid / top if top > 0 else grid, mask.shape[1], mask.shape[0])
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    ys, xs = np.nonzero(mask)
    inside = ys.min() <= y <= ys.max() and xs.min() <= x <= xs.max()
    return bool(heat[y, x] >= HEATMAP_FLOOR and inside)
