"""OpenVINO backend: runs "openvino-ir" (.xml + .bin) and "onnx" artifacts.

OpenVINO reads ONNX directly, QDQ int8 models included, so one ONNX artifact
can run on either ONNX Runtime or OpenVINO. ``importlib.import_module`` is
absolute, so this module never imports itself in place of the package.
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
    BackendUnavailable,
    RuntimeBackend,
    Shape,
    check_artifact_file,
    check_inputs,
    match_names,
)

DEVICES = ("AUTO", "CPU", "GPU", "NPU")


def runtime() -> ModuleType:
    """The real openvino package (absolute import; raises ImportError if missing)."""
    return importlib.import_module("openvino")


def choose_device(requested: str, available: Sequence[str]) -> str:
    """The OpenVINO device to compile for, from the config value and ``available_devices``.

    ``AUTO`` takes the NPU when the machine has one (Intel Core Ultra), else
    the CPU. The NPU path cannot be tested on this machine (it has none); the
    choice itself is tested with injected device lists. An explicit device must
    be present (``GPU`` matches ``GPU.0``); otherwise BackendUnavailable says
    which devices there are.
    """
    wanted = (requested or "AUTO").upper()
    present = {d.split(".")[0].upper() for d in available}
    if wanted == "AUTO":
        return "NPU" if "NPU" in present else "CPU"
    if wanted not in DEVICES:
        raise ValueError(f"unknown OpenVINO device {requested!r}; use one of {', '.join(DEVICES)}")
    if wanted not in present:
        raise BackendUnavailable(
            f"OpenVINO device {wanted} is not present on this machine (it has "
            f'{", ".join(available) or "no devices"}); set [runtime] device = "AUTO" '
            f"or one of those"
        )
    return wanted


def compile_config(device: str, threads: int) -> dict[str, Any]:
    """Properties for ``compile_model``: latency first, threads and f32 on the CPU.

    On the CPU an artifact runs at its own precision: without the f32 hint
    OpenVINO silently computes fp32 models in bf16 on AMX CPUs, numerics the
    package was not validated at.
    """
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if device == "CPU":
        config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def _shape(port: Any) -> Shape:
    partial = port.get_partial_shape()
    return tuple(d.get_length() if d.is_static else None for d in partial)


def _port_name(port: Any, wanted: set[str]) -> str:
    """The port's name that the manifest uses, else its first name."""
    names = port.get_names()
    return next((n for n in names if n in wanted), port.get_any_name())


class OpenVinoBackend(RuntimeBackend):
    """An OpenVINO compiled model and one infer request."""

    key = "openvino"
    formats = formats_of("openvino")

    def __init__(self, core: Any = None) -> None:
        self._core = core
        self._compiled: Any = None
        self._request: Any = None
        self._device = ""
        self._inputs: dict[str, Any] = {}  # manifest name → input port
        self._outputs: dict[str, Any] = {}  # manifest name → output port
        self._input_shapes: dict[str, Shape] = {}
        self._input_dtypes: dict[str, Any] = {}

    @classmethod
    def is_available(cls) -> bool:
        """Whether openvino imports and its Core has a usable device."""
        try:
            return bool(runtime().Core().available_devices)
        except Exception:  # a broken install must not stop the box from starting
            return False

    @property
    def core(self) -> Any:
        """The OpenVINO Core (created on first use)."""
        if self._core is None:
            self._core = runtime().Core()
        return self._core

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
        """Read and compile the artifact for the chosen device."""
        artifact = check_artifact_file(artifact, self.key)
        if artifact.suffix == ".xml" and not artifact.with_suffix(".bin").is_file():
            raise ArtifactLoadError(
                f"openvino: IR {artifact.name} needs its weights "
                f"{artifact.with_suffix('.bin').name} next to it"
            )
        target = choose_device(device, self.core.available_devices)
        try:
            model = self.core.read_model(str(artifact))
            compiled = self.core.compile_model(model, target, compile_config(target, threads))
        except RuntimeError as exc:
            raise ArtifactLoadError(f"openvino cannot load {artifact.name}: {exc}") from exc
        in_ports = {_port_name(p, set(input_names or ())): p for p in compiled.inputs}
        out_ports = {_port_name(p, set(output_names or ())): p for p in compiled.outputs}
        source = f"openvino {artifact.name}"
        inputs = match_names(
            "input", [(n, _shape(p)) for n, p in in_ports.items()], input_names, source=source
        )
        outputs = match_names(
            "output",
            [(n, _shape(p)) for n, p in out_ports.items()],
            output_names,
            output_shapes,
            source=source,
        )
        self._inputs = {name: in_ports[native] for name, native in inputs.items()}
        self._outputs = {name: out_ports[native] for name, native in outputs.items()}
        self._input_shapes = {name: _shape(port) for name, port in self._inputs.items()}
        self._input_dtypes = {
            name: port.get_element_type().to_dtype() for name, port in self._inputs.items()
        }
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._device = target

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One synchronous run; outputs are copies the next run cannot overwrite."""
        if self._request is None:
            raise RuntimeError("openvino backend is not loaded (or was closed)")
        check_inputs(inputs, self._input_shapes, self.key)
        feed = {
            port: np.ascontiguousarray(inputs[name], dtype=self._input_dtypes[name])
            for name, port in self._inputs.items()
        }
        results = self._request.infer(feed, share_outputs=False)
        return {name: np.asarray(results[port]) for name, port in self._outputs.items()}

    def close(self) -> None:
        """Drop the infer request and the compiled model."""
        self._request = None
        self._compiled = None



    @property
    def device(self) -> str:
        """The device the model was compiled for ("" before ``load``)."""
        return self._device

    @property
    def compiled_model(self) -> Any:
        """The OpenVINO CompiledModel (for status and tests)."""
        return self._compiled

    def describe(self) -> str:
        """E.g. ``openvino 2026.4.1 (CPU)``."""
        version = runtime().get_version().split("-")[0]
        return f"openvino {version} ({self._device or 'not loaded'})"
