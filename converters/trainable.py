"""Make a package's model trainable on a box: expose the final feature maps its score is
pooled from, and read the head that pools them (decision 0056).

A model qualifies when its image-level logit is the log-sum-exp pool of a 1×1 convolution
(a class-activation map) over its final feature maps: the demo model's ``cam`` and
``lesion_logit`` are. :func:`trainable_model` finds that convolution in the ONNX graph
(the node whose output is the ``cam`` output), adds its input as a graph output named
``trainable_maps`` and returns the head's weights; :func:`fit_sharpness` recovers the pool's
sharpness from the model's own logits, and refuses a model whose logit is not that pool.
The box then computes each labelled case's maps once with its runtime and trains only the
head (``engine/learning/cam_head.py``); the backbone never moves and PyTorch never comes
onto the box.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from clinibox_common.errors import CliniboxError
from engine.learning.cam_head import CamHead

#: the graph output the maps are exposed as
MAPS_OUTPUT = "trainable_maps"
#: the sharpness values tried, and how close the pooled logit must come to the model's
SHARPNESS_GRID = tuple(float(r) for r in np.arange(0.5, 32.01, 0.5))
SHARPNESS_TOLERANCE = 1e-3


class NotTrainable(CliniboxError, ValueError):
    """The model's score is not a log-sum-exp pool of a 1×1 convolution over its maps."""


@dataclass(frozen=True)
class TrainableModel:
    """The ONNX model with its maps exposed, and the head over them (sharpness unset)."""

    model: onnx.ModelProto
    head: CamHead
    maps_tensor: str


def trainable_model(path: Path, cam_output: str = "cam") -> TrainableModel:
    """The model at ``path`` with the input of its ``cam_output`` 1×1 convolution exposed."""
    model = onnx.load(str(path))
    [conv] = [n for n in model.graph.node if cam_output in n.output] or [None]
    if conv is None or conv.op_type != "Conv":
        raise NotTrainable(f"{path}: no convolution produces the output {cam_output!r}")
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    if len(conv.input) < 3 or conv.input[1] not in weights or conv.input[2] not in weights:
        raise NotTrainable(f"{path}: the {cam_output!r} convolution's weights and bias are not "
                           "constants of the graph")
    w, b = weights[conv.input[1]], weights[conv.input[2]]
    if w.ndim != 4 or w.shape[0] != 1 or w.shape[2:] != (1, 1) or b.size != 1:
        raise NotTrainable(f"{path}: {cam_output!r} is not one 1×1 convolution (weights "
                           f"{list(w.shape)})")
    maps = conv.input[0]
    graph_outputs = [o.name for o in model.graph.output]
    if MAPS_OUTPUT not in graph_outputs:
        model.graph.node.append(helper.make_node("Identity", [maps], [MAPS_OUTPUT]))
        model.graph.output.append(
            helper.make_tensor_value_info(MAPS_OUTPUT, TensorProto.FLOAT, None))
    head = CamHead(w.reshape(-1).astype(np.float64), float(b.reshape(-1)[0]))
    return TrainableModel(model, head, maps)


def fit_sharpness(head: CamHead, maps: np.ndarray, logits: np.ndarray) -> CamHead:
    """``head`` with the sharpness that reproduces the model's ``logits`` [N] from ``maps``
    [N, C, ...]; NotTrainable when none of :data:`SHARPNESS_GRID` does."""
    logits = np.asarray(logits, np.float64).reshape(-1)
    best, error = None, np.inf
    for r in SHARPNESS_GRID:
        candidate = CamHead(head.weights, head.bias, r)
        e = float(np.max(np.abs(candidate.logits(maps) - logits)))
        if e < error:
            best, error = candidate, e
    if best is None or error > SHARPNESS_TOLERANCE:
        raise NotTrainable(f"the model's logit is not a log-sum-exp pool of its maps (closest "
                           f"sharpness {best.sharpness if best else '-'} is {error:.3g} off)")
    return best
