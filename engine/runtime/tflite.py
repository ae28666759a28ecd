"""TFLite backend (LiteRT): runs "tflite" artifacts, float and full-integer.

Callers always pass and receive float32. A full-integer model's int8/uint8
inputs are quantised with the tensor's own scale and zero point, and its
outputs dequantised. TFLite converters rename tensors (``args_0``,
``output_0``, ``StatefulPartitionedCall:0``), so the manifest's names are
mapped onto the model's by shape or order (see ``base.match_names``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clinibox_common.contracts.backends import formats_of
from engine.runtime.base import (
    ArtifactLoadError,
    RuntimeBackend,
    check_artifact_file,
    check_inputs,
    match_names,
)


def interpreter_class() -> Any:
    """LiteRT's Interpreter, else tflite_runtime's (raises ImportError if neither)."""
    try:
        return importlib.import_module("ai_edge_litert.interpreter").Interpreter
    except ImportError:
        return importlib.import_module("tflite_runtime.interpreter").Interpreter


def default_threads() -> int:
    """The CPUs this process may use (TFLite's own default is one thread)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype: Any) -> np.ndarray:
    """float → integer tensor: ``round(x / scale) + zero_point``, clipped to the dtype."""
    info = np.iinfo(dtype)
    scaled = np.round(np.asarray(values, dtype=np.float32) / np.float32(scale)) + zero_point
    return np.clip(scaled, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """integer tensor → float32: ``(q - zero_point) * scale``."""
    return (values.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output as the interpreter describes it."""

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: Any
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        """An integer tensor carrying a real-valued quantity (scale set)."""
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)


def _tensor_infos(details: list[dict[str, Any]], keys: dict[int, str]) -> list[TensorInfo]:
    infos = []
    for item in details:
        params = item.get("quantization_parameters", {})
        if len(params.get("scales", ())) > 1:
            raise ArtifactLoadError(
                f"tflite: tensor {item['name']} is quantised per channel; "
                "model inputs and outputs must be quantised per tensor"
            )
        scale, zero_point = item["quantization"]
        infos.append(
            TensorInfo(
                name=keys.get(item["index"], item["name"]),
                index=int(item["index"]),
                shape=tuple(int(d) for d in item["shape"]),
                dtype=item["dtype"],
                scale=float(scale),
                zero_point=int(zero_point),
            )
        )
    return infos


def _signature_keys(interpreter: Any) -> tuple[dict[int, str], dict[int, str]]:
    """Tensor index → signature name for inputs and outputs (the only signature)."""
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        return {}, {}
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    inputs = {d["index"]: key for key, d in runner.get_input_details().items()}
    outputs = {d["index"]: key for key, d in runner.get_output_details().items()}
    return inputs, outputs


class TfliteBackend(RuntimeBackend):
    """A LiteRT interpreter (XNNPACK on the CPU) behind float32 inputs and outputs."""

    key = "tflite"
    formats = formats_of("tflite")

    def __init__(self) -> None:
        self._interpreter: Any = None
        self._inputs: dict[str, TensorInfo] = {}
        self._outputs: dict[str, TensorInfo] = {}
        self._threads = 0

    @classmethod
    def is_available(cls) -> bool:
        """Whether ai-edge-litert (or tflite-runtime) imports."""
        try:
            interpreter_class()
        except Exception:  # a broken install must not stop the box from starting
            return False
        return True

    def load(
        self,
        artifact: Path,
        *,
        threads: int = 0,
        device: str = "AUTO",
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        output_shapes: Sequence[Sequence[int]] | None = None,
    ) -> None:
        """Load the flatbuffer and map the manifest's names onto the model's tensors."""
        artifact = check_artifact_file(artifact, self.key)
        interpreter_type = interpreter_class()
        self._threads = int(threads) or default_threads()
        try:
            interpreter = interpreter_type(model_path=str(artifact), num_threads=self._threads)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ArtifactLoadError(f"tflite cannot load {artifact.name}: {exc}") from exc
        input_keys, output_keys = _signature_keys(interpreter)
        ins = _tensor_infos(interpreter.get_input_details(), input_keys)
        outs = _tensor_infos(interpreter.get_output_details(), output_keys)
        in_map = match_names(
            "input",
            [(t.name, t.shape) for t in ins],
            input_names,
            by_position=True,
            source=f"tflite {artifact.name}",
        )
        out_map = match_names(
            "output",
            [(t.name, t.shape) for t in outs],
            output_names,
            output_shapes,
            by_position=True,
            source=f"tflite {artifact.name}",
        )
        in_by_name = {t.name: t for t in ins}
        out_by_name = {t.name: t for t in outs}
        self._inputs = {name: in_by_name[native] for name, native in in_map.items()}
        self._outputs = {name: out_by_name[native] for name, native in out_map.items()}
        self._interpreter = interpreter

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One run: float32 in, float32 out, whatever the model's tensor types."""
        if self._interpreter is None:
            raise RuntimeError("tflite backend is not loaded (or was closed)")
        check_inputs(inputs, {n: t.shape for n, t in self._inputs.items()}, self.key)
        for name, tensor in self._inputs.items():
            value = inputs[name]
            if tensor.quantized:
                value = quantize(value, tensor.scale, tensor.zero_point, tensor.dtype)
            self._interpreter.set_tensor(tensor.index, np.ascontiguousarray(value, tensor.dtype))
        self._interpreter.invoke()
        results = {}
        for name, tensor in self._outputs.items():
            value = self._interpreter.get_tensor(tensor.index)
            if tensor.quantized:
                value = dequantize(value, tensor.scale, tensor.zero_point)
            results[name] = value
        return results

    def close(self) -> None:
        """Drop the interpreter."""
        self._interpreter = None



    @property
    def tensor_names(self) -> dict[str, str]:
        """Manifest name → the model's own tensor or signature name."""
        return {name: t.name for name, t in {**self._inputs, **self._outputs}.items()}

    @property
    def quantized_io(self) -> bool:
        """Whether the model takes or returns integer (quantised) tensors."""
        return any(t.quantized for t in [*self._inputs.values(), *self._outputs.values()])

    def describe(self) -> str:
        """E.g. ``tflite (2 threads, quantised I/O)``."""
        io = "quantised I/O" if self.quantized_io else "float I/O"
        return f"tflite ({self._threads} threads, {io})"
