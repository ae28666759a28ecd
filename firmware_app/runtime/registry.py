"""Backend keys → backend classes, imported lazily, and what each can run.

Only the backend that is asked for is imported, so a box without OpenVINO or
LiteRT starts normally; asking for a missing one raises BackendUnavailable
with the pip extra that installs it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from firmware_app.runtime.base import BackendUnavailable, RuntimeBackend


@dataclass(frozen=True)
class BackendInfo:
    """Where a backend lives, what it runs and how to install it."""

    key: str
    module: str
    class_name: str
    formats: tuple[str, ...]
    install: str

    @property
    def summary(self) -> str:
        """E.g. ``openvino (openvino-ir, onnx)``."""
        return f"{self.key} ({', '.join(self.formats)})"


BACKENDS: dict[str, BackendInfo] = {
    info.key: info
    for info in (
        BackendInfo(
            "onnxruntime",
            "firmware_app.runtime.onnxruntime",
            "OnnxRuntimeBackend",
            ("onnx",),
            "pip install clinibox (onnxruntime is a core dependency; on a Jetson "
            "install NVIDIA's onnxruntime-gpu wheel)",
        ),
        BackendInfo(
            "openvino",
            "firmware_app.runtime.openvino",
            "OpenVinoBackend",
            ("openvino-ir", "onnx"),
            "pip install 'clinibox[openvino]'",
        ),
        BackendInfo(
            "tflite",
            "firmware_app.runtime.tflite",
            "TfliteBackend",
            ("tflite",),
            "pip install 'clinibox[tflite]'",
        ),
    )
}

#: which artifact formats each backend can run
FORMATS: dict[str, tuple[str, ...]] = {key: info.formats for key, info in BACKENDS.items()}


def backend_keys() -> list[str]:
    """Every known backend key, in preference order for ties."""
    return list(BACKENDS)


def backends_for_format(artifact_format: str) -> list[str]:
    """The backends that can run an artifact of this format."""
    return [key for key, formats in FORMATS.items() if artifact_format in formats]


def _info(key: str) -> BackendInfo:
    try:
        return BACKENDS[key]
    except KeyError:
        raise ValueError(f"unknown runtime backend {key!r}; known: {', '.join(BACKENDS)}") from None


def install_hint(key: str) -> str:
    """How to install a backend's runtime package."""
    return _info(key).install


def backend_class(key: str) -> type[RuntimeBackend]:
    """The backend class for ``key``; BackendUnavailable (naming the extra) if missing."""
    info = _info(key)
    try:
        module = importlib.import_module(info.module)
        cls: type[RuntimeBackend] = getattr(module, info.class_name)
        available = cls.is_available()
    except ImportError as exc:
        raise BackendUnavailable(
            f"runtime backend {key!r} cannot be imported ({exc}); install it: {info.install}"
        ) from exc
    if not available:
        raise BackendUnavailable(
            f"runtime backend {key!r} is not installed or not usable here; "
            f"install it: {info.install}"
        )
    return cls


def create_backend(key: str) -> RuntimeBackend:
    """A new, unloaded backend instance for ``key``."""
    return backend_class(key)()


def available_backends() -> list[str]:
    """The backends usable on this machine (their packages import)."""
    available = []
    for key in BACKENDS:
        try:
            backend_class(key)
        except BackendUnavailable:
            continue
        available.append(key)
    return available
