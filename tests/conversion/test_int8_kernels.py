"""INT8 artifacts that hold on every CPU: the kernel check and the bound behind it.

This machine may well have VNNI, where nothing saturates; the AVX2 kernel's
arithmetic is therefore reproduced in numpy (``vpmaddubsw_dot``, the
instruction's documented semantics) to show that the ±64 bound is exactly
what keeps it right, and the check is run on real ONNX Runtime quantisations
with and without ``reduce_range``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters.int8_kernels import (
    SAFE_WEIGHT_MAGNITUDE,
    kernel_note,
    saturation_failures,
    weight_magnitudes,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "runtime" / "tiny_lesion.onnx"
DEMO = Path(__file__).resolve().parents[2] / "models" / "clinibox-demo-lesion" / "1.0.0"


def vpmaddubsw_dot(activations: np.ndarray, weights: np.ndarray) -> int:
    """A u8·s8 dot product as x86's VPMADDUBSW path computes it: adjacent products summed
    in pairs into a saturating int16, then the pairs summed in int32 (VPMADDWD)."""
    a = activations.astype(np.int32).reshape(-1, 2)
    w = weights.astype(np.int32).reshape(-1, 2)
    pairs = np.clip((a * w).sum(axis=1), -32768, 32767)
    return int(pairs.sum())


def test_the_bound_is_what_keeps_the_avx2_kernel_exact():
    rng = np.random.default_rng(0)
    worst = np.full(64, 255, np.uint8)
    for _ in range(200):
        safe = rng.integers(-SAFE_WEIGHT_MAGNITUDE, SAFE_WEIGHT_MAGNITUDE + 1, 64)
        activations = rng.integers(0, 256, 64)
        for a in (worst, activations):
            assert vpmaddubsw_dot(a, safe) == int(a.astype(np.int64) @ safe)
    full = np.full(64, 127)  # full-range weights: every pair passes 32767 and is clipped
    assert vpmaddubsw_dot(worst, full) != int(worst.astype(np.int64) @ full)
    just_over = np.full(64, SAFE_WEIGHT_MAGNITUDE + 1)
    assert vpmaddubsw_dot(worst, just_over) != int(worst.astype(np.int64) @ just_over)


def _quantise(tmp_path: Path, reduce_range: bool, symmetric: bool = False) -> Path:
    import onnxruntime.quantization as oq

    rng = np.random.default_rng(1)

    class Reader(oq.CalibrationDataReader):
        items = iter([{"image": rng.standard_normal((1, 1, 128, 128)).astype(np.float32)}
                      for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    out = tmp_path / f"q-{reduce_range}-{symmetric}.onnx"
    oq.quantize_static(str(FIXTURE), str(out), Reader(), quant_format=oq.QuantFormat.QDQ,
                       per_channel=True, activation_type=oq.QuantType.QInt8,
                       weight_type=oq.QuantType.QInt8, reduce_range=reduce_range,
                       extra_options={"WeightSymmetric": True, "ActivationSymmetric": symmetric,
                                      "AddQDQPairToWeight": symmetric})
    return out


@pytest.mark.parametrize("symmetric", [False, True], ids=["qdq", "tensorrt-form"])
def test_full_range_weights_are_refused_and_reduce_range_passes(tmp_path, symmetric):
    unsafe = _quantise(tmp_path, reduce_range=False, symmetric=symmetric)
    failures = saturation_failures(unsafe)
    assert len(failures) == 1 and "VPMADDUBSW" in failures[0] and "reduce_range" in failures[0]
    assert max(weight_magnitudes(unsafe).values()) == 127
    safe = _quantise(tmp_path, reduce_range=True, symmetric=symmetric)
    magnitudes = weight_magnitudes(safe)
    assert len(magnitudes) == 5  # four convolutions and the Gemm
    assert max(magnitudes.values()) <= SAFE_WEIGHT_MAGNITUDE
    assert saturation_failures(safe) == []
    assert kernel_note(safe)["safe_without_vnni"] is True


@pytest.mark.parametrize("name", ["model.int8.onnx", "model.int8-trt.onnx"])
def test_the_shipped_demo_int8_artifacts_hold_without_vnni(name):
    assert saturation_failures(DEMO / name) == []
    assert weight_magnitudes(DEMO / name)
