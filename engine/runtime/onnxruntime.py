"""ONNX Runtime backend: runs "onnx" artifacts (fp32, fp16 and QDQ int8).

This module's name shadows the ``onnxruntime`` package only for relative
imports; ``importlib.import_module("onnxruntime")`` is absolute and always
gets the real package (a test checks it).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from clinibox_common.contracts.backends import formats_of
from engine.runtime.base import (
    ArtifactLoadError,
    RuntimeBackend,
    Shape,
    check_artifact_file,
    check_inputs,
    match_names,
)

CPU = "CPUExecutionProvider"
#: preferred in this order when the installed onnxruntime build offers them
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def runtime() -> ModuleType:
    """The real onnxruntime package (absolute import; raises ImportError if missing)."""
    return importlib.import_module("onnxruntime")


def choose_providers(available: Sequence[str], device: str = "AUTO") -> list[str]:
    """Execution providers in preference order, CPU always last.

    On a Jetson/NVIDIA box the onnxruntime-gpu build lists TensorRT and CUDA;
    they are then tried first. That path is chosen from the provider list alone
    and is untested here (this machine has no GPU). ``device = "CPU"`` keeps
    onnxruntime on the CPU.
    """
    if device.upper() == "CPU":
        return [CPU]
    return [*(p for p in GPU_PROVIDERS if p in available), CPU]


def _shape(dims: Sequence[Any]) -> Shape:
    return tuple(d if isinstance(d, int) else None for d in dims)


class OnnxRuntimeBackend(RuntimeBackend):
    """An onnxruntime InferenceSession with full graph optimisation."""

    key = "onnxruntime"
    formats = formats_of("onnxruntime")

    def __init__(self) -> None:
        self._session: Any = None
        self._inputs: dict[str, str] = {}  # manifest name → model name
        self._outputs: dict[str, str] = {}
        self._input_shapes: dict[str, Shape] = {}
        self._input_dtypes: dict[str, Any] = {}

    @classmethod
    def is_available(cls) -> bool:
        """Whether onnxruntime imports and offers the CPU provider."""
        try:
            return CPU in runtime().get_available_providers()
        except Exception:  # a broken install must not stop the box from starting
            return False

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
        """Create the session; names must match the manifest's exactly."""
        artifact = check_artifact_file(artifact, self.key)
        ort = runtime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(threads)
        # On the box the decoder sandbox decodes the next object while this session runs:
        # threads that spin between runs take its core (the worker drained 49 CT slices/s
        # with spinning, 72 without, on 2 cores; docs/decisions/0029-drain-target-left-to-
        # the-model.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = choose_providers(ort.get_available_providers(), device)
        try:
            session = ort.InferenceSession(str(artifact), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own pybind error types
            raise ArtifactLoadError(f"onnxruntime cannot load {artifact.name}: {exc}") from exc
        model_inputs = [(i.name, _shape(i.shape)) for i in session.get_inputs()]
        model_outputs = [(o.name, _shape(o.shape)) for o in session.get_outputs()]
        source = f"onnxruntime {artifact.name}"
        self._inputs = match_names("input", model_inputs, input_names, source=source)
        self._outputs = match_names(
            "output", model_outputs, output_names, output_shapes, source=source
        )
        shapes = dict(model_inputs)
        self._input_shapes = {name: shapes[native] for name, native in self._inputs.items()}
        types = {i.name: _DTYPES.get(i.type, np.float32) for i in session.get_inputs()}
        self._input_dtypes = {name: types[native] for name, native in self._inputs.items()}
        self._session = session

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One run; inputs are cast to the model's input types."""
        if self._session is None:
            raise RuntimeError("onnxruntime backend is not loaded (or was closed)")
        check_inputs(inputs, self._input_shapes, self.key)
        feed = {
            native: np.ascontiguousarray(inputs[name], dtype=self._input_dtypes[name])
            for name, native in self._inputs.items()
        }
        results = self._session.run(list(self._outputs.values()), feed)
        return dict(zip(self._outputs, results, strict=True))

    def close(self) -> None:
        """Drop the session (onnxruntime frees it when unreferenced)."""
        self._session = None



    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses."""
        return list(self._session.get_providers()) if self._session is not None else []

    def describe(self) -> str:
        """E.g. ``onnxruntime 1.31.1 (CPUExecutionProvider)``."""
        version = getattr(runtime(), "__version__", "?")
        return f"onnxruntime {version} ({', '.join(self.providers) or 'not loaded'})"
