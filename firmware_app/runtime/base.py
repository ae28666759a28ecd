"""The one interface every runtime backend implements.

numpy in, numpy out; no torch on the box. A backend loads one artifact of a
model package, warms up, runs ``infer`` many times and is closed once.
"""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np


class BackendUnavailable(RuntimeError):
    """The backend's runtime package (or the device it needs) is missing here."""


class RuntimeBackend(abc.ABC):
    """Run one model artifact: ``load`` → ``warm_up`` → ``infer``… → ``close``."""

    #: registry key, e.g. "onnxruntime"
    key: str = ""
    #: artifact formats this backend can load, e.g. ("onnx",)
    formats: tuple[str, ...] = ()

    @classmethod
    @abc.abstractmethod
    def is_available(cls) -> bool:
        """Whether the runtime package can be imported and used on this machine."""

    @abc.abstractmethod
    def load(self, artifact: Path, *, threads: int = 0, device: str = "AUTO") -> None:
        """Load the artifact file; raise on a file the runtime cannot read."""

    @abc.abstractmethod
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model once; outputs keyed by the model's output names."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the runtime's resources."""

    @property
    @abc.abstractmethod
    def input_names(self) -> list[str]:
        """The model's input names."""

    @property
    @abc.abstractmethod
    def output_names(self) -> list[str]:
        """The model's output names."""

    def warm_up(self, inputs: dict[str, np.ndarray], runs: int = 2) -> None:
        """Run a few inferences so the first real image pays no start-up cost."""
        for _ in range(runs):
            self.infer(inputs)

    def describe(self) -> str:
        """A one-line description for logs and status (backend and device)."""
        return self.key
