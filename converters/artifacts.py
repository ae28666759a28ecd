"""Written artifacts, and running them through the box's own runtime backends.

Every check the converter makes on an artifact (parity, fidelity, speed) goes
through :func:`open_artifact`, i.e. through exactly the backend classes the box
uses (``engine.runtime``), so what passes here is what runs there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters.formats import KINDS, ArtifactKind
from converters.spec import ModelSpec
from engine.runtime.base import ArtifactLoadError, RuntimeBackend
from engine.runtime.registry import create_backend

#: OpenVINO properties every IR artifact is validated (and must run) with on a CPU
OPENVINO_CPU_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


@dataclass
class ArtifactRecord:
    """One written artifact: what it is, its files (relative to the package) and how made."""

    kind: str
    format: str
    precision: str
    path: str
    files: list[str]
    profiles: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    runtime_config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_kind(cls, kind: ArtifactKind, profiles: list[str] | None = None,
                 notes: dict[str, Any] | None = None) -> ArtifactRecord:
        """A record for a kind of :data:`converters.formats.KINDS` with its default paths
        and runtime configuration."""
        config = dict(OPENVINO_CPU_CONFIG) if kind.format == "openvino-ir" else {}
        return cls(kind.key, kind.format, kind.precision, kind.path, kind.files,
                   list(profiles or []), dict(notes or {}), config)

    @property
    def artifact_kind(self) -> ArtifactKind:
        """The kind's table entry (ValueError for an unknown kind)."""
        try:
            return KINDS[self.kind]
        except KeyError:
            raise ValueError(f"unknown artifact kind {self.kind!r}; known: "
                             f"{', '.join(KINDS)}") from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactRecord:
        """The record :meth:`to_dict` wrote."""
        return cls(**{**data, "files": list(data["files"]),
                      "profiles": list(data.get("profiles", []))})


def _check_files(root: Path, record: ArtifactRecord) -> None:
    for rel in record.files:
        path = root / rel
        if not path.is_file():
            raise ArtifactLoadError(f"{record.kind}: file {rel} is missing from {root}")
        if path.stat().st_size == 0:
            raise ArtifactLoadError(f"{record.kind}: file {rel} is empty (corrupted artifact)")
    if record.format == "tflite":
        with open(root / record.path, "rb") as fh:
            head = fh.read(8)
        if head[4:8] != b"TFL3":  # flatbuffer file identifier; never hand garbage to LiteRT
            raise ArtifactLoadError(f"{record.kind}: {record.path} is not a TFLite flatbuffer "
                                    "(corrupted artifact)")


def _check_runtime_config(backend: RuntimeBackend, record: ArtifactRecord) -> None:
    """Make sure the box's backend compiled the model the way the record says it must run."""
    compiled = getattr(backend, "compiled_model", None)
    if compiled is None or not record.runtime_config:
        return
    for key, want in record.runtime_config.items():
        try:
            got = compiled.get_property(key)
        except RuntimeError:  # a property this device does not report
            continue
        got = got.get_type_name() if hasattr(got, "get_type_name") else got  # ov.Type → "f32"
        if str(got).lower() != str(want).lower():
            raise ArtifactLoadError(f"{record.kind}: the box's {backend.key} backend compiled "
                                    f"with {key}={got}, the artifact was validated with {want}")


def open_artifact(root: Path, record: ArtifactRecord, spec: ModelSpec, threads: int = 0,
                  *, device: str = "CPU") -> RuntimeBackend:
    """A loaded box runtime backend for the artifact, speaking the spec's tensor names.

    ``device`` defaults to the CPU (verification on the workstation).
    ArtifactLoadError for missing, empty or unreadable files.
    """
    root = Path(root)
    _check_files(root, record)
    backend = create_backend(record.artifact_kind.backend)
    shapes = None
    if spec.output_shapes and all(n in spec.output_shapes for n in spec.output_names):
        shapes = [spec.output_shapes[n] for n in spec.output_names]
    try:
        backend.load(root / record.path, threads=threads, device=device,
                     input_names=[spec.input_name], output_names=list(spec.output_names),
                     output_shapes=shapes)
    except ArtifactLoadError as exc:
        raise ArtifactLoadError(f"{record.kind}: {exc}") from exc
    except Exception as exc:  # a runtime's own error type for a file it cannot read
        raise ArtifactLoadError(f"{record.kind}: {backend.key} cannot load {record.path}: "
                                f"{exc}") from exc
    _check_runtime_config(backend, record)
    return backend


def run_batch(backend: RuntimeBackend, spec: ModelSpec, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run float32 images [N, C, H, W] one at a time; outputs stacked as [N, ...]."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(spec.input_shape[1:]):
        raise ValueError(f"images must have shape [N, {', '.join(map(str, spec.input_shape[1:]))}]"
                         f", got {list(x.shape)}")
    results: dict[str, list[np.ndarray]] = {name: [] for name in spec.output_names}
    for i in range(len(x)):
        out = backend.infer({spec.input_name: x[i : i + 1]})
        for name in spec.output_names:
            results[name].append(np.asarray(out[name], dtype=np.float32))
    return {name: _stack(parts) for name, parts in results.items()}


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    """Per-image outputs [1, ...] → [N, ...] (outputs without a batch axis are stacked)."""
    if not parts:
        return np.empty((0,), np.float32)
    if all(p.ndim >= 1 and p.shape[0] == 1 for p in parts):
        return np.concatenate(parts, axis=0)
    return np.stack(parts, axis=0)


def zero_points(path: Path) -> dict[str, int]:
    """Largest |zero point| of every QuantizeLinear/DequantizeLinear node in an ONNX model."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    found = {}
    for node in proto.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            found[node.name] = int(np.abs(inits[node.input[2]].astype(np.int32)).max())
    return found
