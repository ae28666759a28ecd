"""torchvision in the suite, with its compiled ops replaced by pure-PyTorch ones (issue 55).

The package indexes these machines use serve torchvision only as a CUDA build: its compiled
library (``torchvision/_C.so``) needs ``libc10_cuda.so``, which the suite's CPU build of torch
does not have, so the library cannot load and ``import torchvision`` fails (its
``_meta_registrations`` register fakes for ``torchvision::nms``, an operator only the library
defines). ``make install`` therefore installs the wheel *without its dependencies* (they would
pull CUDA torch) and *outside site-packages*, in ``.venv/opt/torchvision``, where nothing but
this module finds it: no other package (monai, transformers …) ever sees a torchvision that
cannot import.

:func:`load` imports it as if its library had loaded, its operators defined here with the
schemas of torchvision's C++ registrations:

- ``nms``: a vectorised greedy NMS in PyTorch, the C++ kernel's semantics (scores sorted
  descending, a box dropped when its IoU with a kept box exceeds the threshold; checked against
  a brute-force loop in ``tests/unit/test_torchvision_cpu.py``);
- ``roi_align`` and its backward: torchvision's own pure-PyTorch ``_roi_align`` (what it runs
  itself without its library), eager rather than through the ``torch.compile`` it wraps it in,
  and, as RoI Align is linear in its input, its gradient taken
  through the same function;
- every other operator (``qnms``, ``roi_pool``, ``ps_roi_*``, ``qroi_align``,
  ``deform_conv2d``, ``box_iou_rotated`` and their backwards) raises NotImplementedError.

So torchvision's own Python model code (RetinaNet, SSD, SSDlite, FCOS, Faster R-CNN's RPN and
RoI heads) runs unchanged on the CPU, with torchvision's Python losses, anchors, box coders and
postprocessing. This is a test-environment shim, not part of the converter: a model maker's
workstation has a torchvision whose library loads (where it does, :func:`load` uses it).
timm, installed in the same folder, imports once :func:`load` has run.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

# where `make install` puts the wheel (pip install --no-deps --target)
TARGET = Path(sys.prefix) / "opt" / "torchvision"

SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align": "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
                 "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward": "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, "
                           "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, "
                           "SymInt channels, SymInt height, SymInt width, int sampling_ratio, "
                           "bool aligned) -> Tensor",
    "qroi_align": "qroi_align(Tensor input, Tensor rois, float input_scale, int input_zero_point, "
                  "float rois_scale, int rois_zero_point, float spatial_scale, "
                  "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, "
                  "bool aligned) -> Tensor",
    "ps_roi_align": "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, "
                    "SymInt pooled_height, SymInt pooled_width, int sampling_ratio) "
                    "-> (Tensor, Tensor)",
    "_ps_roi_align_backward": "_ps_roi_align_backward(Tensor grad, Tensor rois, "
                              "Tensor channel_mapping, float spatial_scale, SymInt pooled_height, "
                              "SymInt pooled_width, int sampling_ratio, SymInt batch_size, "
                              "SymInt channels, SymInt height, SymInt width) -> Tensor",
    "roi_pool": "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
                "SymInt pooled_width) -> (Tensor, Tensor)",
    "_roi_pool_backward": "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, "
                          "float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
                          "SymInt batch_size, SymInt channels, SymInt height, SymInt width) "
                          "-> Tensor",
    "ps_roi_pool": "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, "
                   "SymInt pooled_height, SymInt pooled_width) -> (Tensor, Tensor)",
    "_ps_roi_pool_backward": "_ps_roi_pool_backward(Tensor grad, Tensor rois, "
                             "Tensor channel_mapping, float spatial_scale, SymInt pooled_height, "
                             "SymInt pooled_width, SymInt batch_size, SymInt channels, "
                             "SymInt height, SymInt width) -> Tensor",
    "deform_conv2d": "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, "
                     "Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, "
                     "SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, "
                     "SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward": "_deform_conv2d_backward(Tensor grad, Tensor input, "
                               "Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
                               "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, "
                               "SymInt dilation_h, SymInt dilation_w, SymInt groups, "
                               "SymInt offset_groups, bool use_mask) "
                               "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    "box_iou_rotated": "box_iou_rotated(Tensor boxes1, Tensor boxes2) -> Tensor",
    "_cuda_version": "_cuda_version() -> int",
}

_LIBRARY: list[torch.library.Library] = []  # kept alive: a Library unregisters when collected


def nms(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices (int64) of the boxes greedy NMS keeps, best score first: as torchvision's C++
    kernel, the boxes ``[N, 4]`` (x0, y0, x1, y1) taken by descending score, each dropping
    the later ones whose IoU with it exceeds ``iou_threshold``. One vectorised IoU row per
    kept box (memory O(N))."""
    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    order = torch.argsort(scores, descending=True, stable=True)
    boxes = dets[order]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    suppressed = torch.zeros(len(boxes), dtype=torch.bool, device=dets.device)
    kept: list[int] = []
    index = 0
    while index < len(boxes):
        kept.append(index)
        box = boxes[index]
        w = (torch.minimum(box[2], boxes[:, 2]) - torch.maximum(box[0], boxes[:, 0])).clamp(min=0)
        h = (torch.minimum(box[3], boxes[:, 3]) - torch.maximum(box[1], boxes[:, 1])).clamp(min=0)
        inter = w * h
        suppressed |= inter / (area[index] + area - inter) > iou_threshold
        rest = torch.nonzero(~suppressed[index + 1:])
        if not len(rest):
            break
        index += 1 + int(rest[0])
    return order[torch.tensor(kept, dtype=torch.long, device=dets.device)]


def _roi_align(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio,
               aligned):
    from torchvision.ops.roi_align import _roi_align as compiled

    reference = compiled.__wrapped__  # torchvision's own, eager (it wraps it in torch.compile)
    return reference(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                     aligned)


def _roi_align_backward(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size,
                        channels, height, width, sampling_ratio, aligned):
    """RoI Align is linear in its input: its gradient is the same at any input, zeros here,
    taken by autograd through torchvision's own function (re-enabled inside this kernel,
    which the dispatcher runs below autograd)."""
    C = torch._C
    exclude = C._dispatch_tls_local_exclude_set() - _AUTOGRAD_KEYS
    with C._ForceDispatchKeyGuard(C._dispatch_tls_local_include_set(), exclude), \
            torch.enable_grad():
        x = grad.new_zeros((batch_size, channels, height, width), requires_grad=True)
        out = _roi_align(x, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                         aligned)
        (grad_input,) = torch.autograd.grad(out, x, grad)
    return grad_input


def _autograd_keys() -> torch._C.DispatchKeySet:
    """The dispatch keys a kernel runs without (those below-autograd dispatch excludes)."""
    with torch._C._AutoDispatchBelowAutograd():
        below = torch._C._dispatch_tls_local_exclude_set()
    return below - torch._C._dispatch_tls_local_exclude_set()


_AUTOGRAD_KEYS = _autograd_keys()


def _missing(name: str):
    def kernel(*args, **kwargs):
        raise NotImplementedError(
            f"torchvision::{name} has no pure-PyTorch version in the suite's torchvision "
            "(tests/torchvision_cpu.py); only nms and roi_align run without torchvision's "
            "compiled library")
    return kernel


def _define() -> None:
    """Define the ``torchvision::`` operators, with CPU kernels, as its library would."""
    if _LIBRARY:
        return
    lib = torch.library.Library("torchvision", "DEF")
    kernels = {"nms": nms, "roi_align": _roi_align, "_roi_align_backward": _roi_align_backward}
    for name, schema in SCHEMAS.items():
        lib.define(schema)
        if name == "_cuda_version":
            lib.impl(name, lambda: -1, "CompositeExplicitAutograd")
        else:
            lib.impl(name, kernels.get(name) or _missing(name), "CPU")
    _LIBRARY.append(lib)


@contextlib.contextmanager
def _library_stands_in(library: str) -> Iterator[None]:
    """While torchvision imports, its ``torch.ops.load_library(_C)`` succeeds (the operators
    are defined already); any other library loads as usual."""
    load = torch.ops.load_library

    def load_library(path: str) -> None:
        if Path(path).resolve() != Path(library).resolve():
            load(path)

    torch.ops.load_library = load_library
    try:
        yield
    finally:
        torch.ops.load_library = load


def load() -> ModuleType:
    """``torchvision``, imported with its compiled operators or, where they cannot load, with
    this module's; ModuleNotFoundError when it is installed nowhere."""
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    if TARGET.is_dir() and str(TARGET) not in sys.path:
        sys.path.append(str(TARGET))
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"torchvision is not installed (make install puts it in "
                                  f"{TARGET})")
    folder = Path(next(iter(spec.submodule_search_locations)))
    library = next((str(p) for p in folder.glob("_C*.so")), None)
    if library is None:
        raise ModuleNotFoundError(f"torchvision in {folder} has no compiled library _C")
    try:
        torch.ops.load_library(library)  # a torchvision built for this torch: use it
    except OSError:
        _define()
        with _library_stands_in(library):
            return importlib.import_module("torchvision")
    return importlib.import_module("torchvision")
