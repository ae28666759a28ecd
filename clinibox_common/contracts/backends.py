"""The one table of runtime backends and the artifact formats they run.

The box, the converter and the settings all read this table: adding a backend
means writing its module under ``engine/runtime/`` and adding one row
here. Nothing in this module imports a runtime; ``runtime/registry.py``
imports the backend's module lazily from ``module`` and ``class_name``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendInfo:
    """Where a backend lives, what it runs and how to install it."""

    key: str
    module: str
    class_name: str
    formats: tuple[str, ...]
    install: str
    #: MB the runtime adds to the service once loaded with the demo model (RSS, measured
    #: in bench/memory.py on x86): near-ties in speed go to the lighter runtime
    resident_mb: int = 0

    @property
    def summary(self) -> str:
        """E.g. ``openvino (openvino-ir, onnx)``."""
        return f"{self.key} ({', '.join(self.formats)})"


#: every runtime backend, in preference order for ties
BACKENDS: dict[str, BackendInfo] = {
    info.key: info
    for info in (
        BackendInfo(
            "onnxruntime",
            "engine.runtime.onnxruntime",
            "OnnxRuntimeBackend",
            ("onnx",),
            "pip install clinibox (onnxruntime is a core dependency; on a Jetson "
            "install NVIDIA's onnxruntime-gpu wheel)",
            resident_mb=39,
        ),
        BackendInfo(
            "openvino",
            "engine.runtime.openvino",
            "OpenVinoBackend",
            ("openvino-ir", "onnx"),
            "pip install 'clinibox[openvino]'",
            resident_mb=86,
        ),
        BackendInfo(
            "tflite",
            "engine.runtime.tflite",
            "TfliteBackend",
            ("tflite",),
            "pip install 'clinibox[tflite]'",
            resident_mb=23,
        ),
    )
}

#: the ``backend`` setting: a backend key, or ``auto`` (measure and pick)
BACKEND_CHOICES: tuple[str, ...] = ("auto", *BACKENDS)

#: artifact formats a model package may carry: exactly those some backend runs
ARTIFACT_FORMATS: tuple[str, ...] = tuple(
    dict.fromkeys(fmt for info in BACKENDS.values() for fmt in info.formats)
)

#: numeric precisions of an artifact
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")


def formats_of(key: str) -> tuple[str, ...]:
    """The artifact formats backend ``key`` runs (ValueError for an unknown key)."""
    try:
        return BACKENDS[key].formats
    except KeyError:
        raise ValueError(f"unknown runtime backend {key!r}; known: {', '.join(BACKENDS)}") from None
