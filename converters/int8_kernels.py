"""Will an INT8 ONNX artifact compute the same on every CPU it may meet?

The CPU kernels that run an INT8 convolution or matrix product differ by
instruction set, and one of them can overflow:

* x86 with AVX2 or AVX-512 but without VNNI (many AMD EPYC and older Intel
  CPUs): ONNX Runtime's u8×s8 kernel uses ``VPMADDUBSW``, which multiplies
  unsigned 8-bit activations by signed 8-bit weights and adds *adjacent pairs*
  of products into a **saturating 16-bit** sum. With activations up to 255,
  ``255·(|w₁|+|w₂|)`` passes 32767 as soon as a pair of weights passes 128 in
  magnitude, and the sum is clipped: the demo package's full-range INT8
  artifact gave one answer for every image on such a CPU.
* x86 with VNNI (``VPDPBUSD``) or AMX, and ARM (``SDOT``/``UDOT``, or widening
  multiply-accumulate without the dot-product extension) accumulate in 32 bits
  and cannot overflow for any 8-bit operands.

So an artifact is right everywhere when no weight pair can saturate
``VPMADDUBSW``: since any two weights may end up adjacent after packing, the
check is that every weight magnitude (weight minus its zero point) is at most
64 (``2·255·64 = 32640 ≤ 32767``) — what ``reduce_range`` (7-bit weights)
quantisation guarantees. The ONNX Runtime artifact's activations are u8 (the only
ones ONNX Runtime's x86 integer kernels take, see ``quantize._ort_quantize``);
the TensorRT form's S8 activations are shifted to u8 by those kernels, so the
same bound holds for them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: the largest weight magnitude whose pairs cannot saturate VPMADDUBSW with u8 activations
SAFE_WEIGHT_MAGNITUDE = 64
#: ops whose (quantised) second input is a weight multiplied in an integer kernel
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: integer ops in QOperator form: op type → index of the weight and of its zero point
INTEGER_OPS = {"QLinearConv": (3, 5), "QLinearMatMul": (3, 5), "ConvInteger": (1, 3),
               "MatMulInteger": (1, 3)}


def weight_magnitudes(path: Path) -> dict[str, int]:
    """Largest |weight − zero point| of every integer-weighted node, by node name."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    found: dict[str, int] = {}

    def magnitude(weight: str, zero_point: str | None, axis: int | None = None
                  ) -> int | None:
        q = inits.get(weight)
        if q is None or q.dtype not in (np.int8, np.uint8):
            return None
        zero = inits.get(zero_point) if zero_point else None
        centred = q.astype(np.int32)
        if zero is not None and zero.size:
            shape = [1] * centred.ndim
            if zero.size > 1:  # per channel: the node's axis (1 for ConvTranspose), else the
                # output axis (0 for Conv weights, the last for MatMul)
                if axis is None:
                    axis = 0 if zero.size == centred.shape[0] else -1
                shape[axis] = zero.size
            centred = centred - zero.astype(np.int32).reshape(shape)
        return int(np.abs(centred).max()) if centred.size else 0

    for node in graph.node:
        if node.op_type in INTEGER_OPS:
            w, z = INTEGER_OPS[node.op_type]
            value = magnitude(node.input[w], node.input[z] if len(node.input) > z else None)
        elif node.op_type in WEIGHTED_OPS and len(node.input) > 1:
            dq = producers.get(node.input[1])
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in inits:
                # a float weight behind its own Q/DQ pair (the TensorRT form): ONNX Runtime
                # folds the QuantizeLinear at load time, so quantise it the same way here
                inits[dq.input[0]] = _quantised(inits, q)
            axis = next((a.i for a in dq.attribute if a.name == "axis"), None)
            value = magnitude(dq.input[0], dq.input[2] if len(dq.input) > 2 else None, axis)
        else:
            continue
        if value is not None:
            found[node.name or node.output[0]] = value
    return found


def _quantised(inits: dict[str, np.ndarray], node) -> np.ndarray:
    """What a QuantizeLinear of a float initializer yields (per-tensor or per-axis)."""
    weight = inits[node.input[0]].astype(np.float64)
    scale = inits[node.input[1]].astype(np.float64)
    zero = inits[node.input[2]] if len(node.input) > 2 and node.input[2] in inits else \
        np.zeros((), np.uint8)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if scale.size > 1:
        shape = [1] * weight.ndim
        shape[axis] = scale.size
        scale, zero_shaped = scale.reshape(shape), zero.astype(np.int32).reshape(shape)
    else:
        zero_shaped = zero.astype(np.int32)
    info = np.iinfo(zero.dtype)
    q = np.clip(np.rint(weight / scale) + zero_shaped, info.min, info.max)
    return q.astype(zero.dtype)


def saturation_failures(path: Path) -> list[str]:
    """Why the INT8 ONNX artifact at ``path`` would be wrong on a CPU without VNNI; empty
    when it is safe on every kernel (see the module docstring)."""
    unsafe = {name: m for name, m in weight_magnitudes(path).items()
              if m > SAFE_WEIGHT_MAGNITUDE}
    if not unsafe:
        return []
    shown = ", ".join(f"{name} (±{m})" for name, m in list(unsafe.items())[:4])
    more = f" and {len(unsafe) - 4} more" if len(unsafe) > 4 else ""
    return [f"{len(unsafe)} layer(s) have INT8 weights above ±{SAFE_WEIGHT_MAGNITUDE}: {shown}"
            f"{more}; on AVX2/AVX-512 CPUs without VNNI ONNX Runtime's u8×s8 kernel "
            "(VPMADDUBSW) saturates its 16-bit pair sums and the artifact answers wrongly "
            "there (quantise weights with reduce_range, 7 bits)"]


def kernel_note(path: Path) -> dict[str, object]:
    """What the check found, for the artifact's conversion notes."""
    magnitudes = weight_magnitudes(path)
    largest = max(magnitudes.values(), default=0)
    return {"integer_layers": len(magnitudes), "largest_weight_magnitude": largest,
            "safe_without_vnni": largest <= SAFE_WEIGHT_MAGNITUDE,
            "checked": "every integer weight within ±64, so VPMADDUBSW (AVX2/AVX-512 "
                       "without VNNI) cannot saturate; VNNI, AMX and ARM kernels "
                       "accumulate in 32 bits"}
