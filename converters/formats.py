"""The one table of target formats (artifact kinds) and deployment profiles.

An *artifact kind* is one file the converter can write (format + precision),
with the box runtime backend that verifies and benchmarks it on the
workstation. A *profile* is a kind of box (Jetson, Intel NPU, x86 CPU, ARM
CPU, plain ONNX) and the kinds it needs.

Verification backends, as measured on the workstation (x86, onnxruntime 1.31,
CPU execution provider):

* ``onnx-fp16`` runs on the box's ``onnxruntime`` backend: the CPU provider
  executes the FP16 graph (float32 I/O kept, Cast nodes at the edges) with
  max |Δ| about 1e-3 against FP32 on a small ResNet. It is slower than FP32 on
  a CPU; the format exists for TensorRT on a Jetson, not for CPU speed.
* ``onnx-int8-trt`` (symmetric QDQ, zero points all 0, per-channel weights)
  also runs on the CPU provider, so it is checked with the same backend.
* OpenVINO IR runs on the ``openvino`` backend, which compiles for the CPU
  with ``INFERENCE_PRECISION_HINT=f32`` (the CPU plugin would otherwise run
  fp32 and int8 IR in bf16 on AMX CPUs such as this one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ArtifactKind:
    """One artifact the converter can write, and how the box runs it."""

    key: str
    format: str  # manifest format: "onnx" | "openvino-ir" | "tflite"
    precision: str  # "fp32" | "fp16" | "int8"
    path: str  # relative path inside the model package
    companions: tuple[str, ...]  # further files that belong to it (OpenVINO .bin)
    backend: str  # box runtime backend that verifies/benchmarks it here
    description: str

    @property
    def files(self) -> list[str]:
        """The artifact's own path followed by its companions."""
        return [self.path, *self.companions]

    @property
    def quantized(self) -> bool:
        """Whether writing it needs calibration data (INT8)."""
        return self.precision == "int8"


@dataclass(frozen=True)
class Profile:
    """A kind of box and the artifact kinds it needs."""

    name: str
    description: str
    kinds: tuple[str, ...]
    device: str  # device hint for the box: "GPU" (Jetson), "NPU", "CPU"


KINDS: dict[str, ArtifactKind] = {
    k.key: k
    for k in (
        ArtifactKind("onnx-fp32", "onnx", "fp32", "model.fp32.onnx", (), "onnxruntime",
                     "FP32 ONNX (opset 18, static shape); every other artifact starts from it"),
        ArtifactKind("onnx-fp16", "onnx", "fp16", "model.fp16.onnx", (), "onnxruntime",
                     "FP16 ONNX with float32 inputs/outputs, for TensorRT on a Jetson"),
        ArtifactKind("openvino-fp32", "openvino-ir", "fp32", "openvino/model.fp32.xml",
                     ("openvino/model.fp32.bin",), "openvino",
                     "OpenVINO IR, FP32 weights, static input shape"),
        ArtifactKind("tflite-fp32", "tflite", "fp32", "model.fp32.tflite", (), "tflite",
                     "TFLite (LiteRT) float32, from the PyTorch module via litert-torch"),
        ArtifactKind("onnx-int8", "onnx", "int8", "model.int8.onnx", (), "onnxruntime",
                     "ONNX Runtime QDQ INT8: per-channel 7-bit int8 weights, asymmetric "
                     "uint8 activations (what its x86 integer kernels take)"),
        ArtifactKind("onnx-int8-trt", "onnx", "int8", "model.int8-trt.onnx", (), "onnxruntime",
                     "symmetric QDQ INT8 as TensorRT takes it: all zero points 0, "
                     "per-channel weights"),
        ArtifactKind("openvino-int8", "openvino-ir", "int8", "openvino/model.int8.xml",
                     ("openvino/model.int8.bin",), "openvino",
                     "OpenVINO IR quantised to INT8 by NNCF (CPU and NPU)"),
        ArtifactKind("tflite-int8", "tflite", "int8", "model.int8.tflite", (), "tflite",
                     "full-integer TFLite: int8 weights, activations, input and outputs"),
    )
}

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("jetson", "NVIDIA Jetson: ONNX Runtime with TensorRT (FP16, symmetric INT8)",
                ("onnx-fp16", "onnx-int8-trt"), "GPU"),
        Profile("intel-npu", "Intel Core Ultra with NPU: OpenVINO IR, static shapes",
                ("openvino-fp32", "openvino-int8"), "NPU"),
        Profile("x86-cpu", "any x86 PC: OpenVINO IR on the CPU",
                ("openvino-fp32", "openvino-int8"), "CPU"),
        Profile("arm-cpu", "ARM single-board computer: TFLite (LiteRT, XNNPACK)",
                ("tflite-fp32", "tflite-int8"), "CPU"),
        Profile("onnx", "plain ONNX Runtime: FP32 and per-channel QDQ INT8",
                ("onnx-fp32", "onnx-int8"), "CPU"),
    )
}


def parse_targets(text: str | Sequence[str]) -> list[str]:
    """Profile names from ``"onnx,x86-cpu"`` (or a list): validated, de-duplicated, in order.

    ValueError names the unknown entries and the known profiles.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [str(item).strip().lower() for item in items if str(item).strip()]
    unknown = [name for name in names if name not in PROFILES]
    if unknown:
        raise ValueError(f"unknown target profile(s) {unknown}; known profiles: "
                         f"{', '.join(PROFILES)}")
    if not names:
        raise ValueError(f"no target profile given; known profiles: {', '.join(PROFILES)}")
    return list(dict.fromkeys(names))


def kinds_for(targets: Sequence[str]) -> list[ArtifactKind]:
    """The artifact kinds the profiles need: onnx-fp32 first, then float kinds, then INT8.

    Within each group the order of :data:`KINDS` holds; each kind appears once.
    """
    wanted = {"onnx-fp32"}
    for name in parse_targets(targets):
        wanted.update(PROFILES[name].kinds)
    ordered = [kind for kind in KINDS.values() if kind.key in wanted]
    floats = [k for k in ordered if not k.quantized]
    floats.sort(key=lambda k: k.key != "onnx-fp32")
    return floats + [k for k in ordered if k.quantized]


def profiles_of(kind_key: str, targets: Sequence[str]) -> list[str]:
    """The requested profiles whose kinds list ``kind_key`` (may be empty: onnx-fp32 is
    always written as the source of the others, but only the onnx profile ships it)."""
    if kind_key not in KINDS:
        raise ValueError(f"unknown artifact kind {kind_key!r}; known: {', '.join(KINDS)}")
    names = parse_targets(targets)
    return [name for name in names if kind_key in PROFILES[name].kinds]
