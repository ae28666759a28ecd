"""The one interface every runtime backend implements.

numpy in, numpy out; no torch on the box. A backend loads one artifact of a
model package, warms up, runs ``infer`` many times and is closed once. One
backend instance serves one thread at a time.

``load`` takes the manifest's input and output names (and, where the manifest
has them, output shapes) so every backend speaks the manifest's names, even
when a converter renamed the tensors (TFLite does: ``StatefulPartitionedCall:0``).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clinibox_common.errors import CliniboxError

#: a tensor's shape as a runtime reports it; None (or -1) for a dynamic dimension
Shape = tuple[int | None, ...]


class BackendUnavailable(CliniboxError, RuntimeError):
    """The backend's runtime package (or the device it needs) is missing here."""

    kind = "runtime backend unavailable"


class ArtifactLoadError(CliniboxError, RuntimeError):
    """A runtime could not read an artifact, or it does not match the manifest."""

    kind = "artifact cannot be loaded"


class RuntimeBackend(abc.ABC):
    """Run one model artifact: ``load`` → ``warm_up`` → ``infer``… → ``close``."""

    #: registry key, e.g. "onnxruntime"
    key: str = ""
    #: artifact formats this backend can load, e.g. ("onnx",)
    formats: tuple[str, ...] = ()

    @classmethod
    @abc.abstractmethod
    def is_available(cls) -> bool:
        """Whether the runtime package can be imported and used here; never raises."""

    @abc.abstractmethod
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
        """Load the artifact file; raise ArtifactLoadError on a file the runtime cannot read.

        ``threads`` 0 lets the runtime decide. ``device`` is a hint that only
        backends with a choice of device use. ``input_names``/``output_names``
        are the manifest's names: ``infer`` takes and returns them. A backend
        whose format keeps tensor names refuses an artifact whose names differ;
        TFLite maps them by shape (when ``output_shapes`` is given) or order.
        """

    @abc.abstractmethod
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model once; outputs keyed by the model's output names."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the runtime's resources."""

    #: manifest tensor name → the runtime's own handle for it; set by ``load``
    _inputs: dict[str, Any]
    _outputs: dict[str, Any]

    @property
    def input_names(self) -> list[str]:
        """The manifest's input names (empty before ``load``)."""
        return list(getattr(self, "_inputs", {}))

    @property
    def output_names(self) -> list[str]:
        """The manifest's output names (empty before ``load``)."""
        return list(getattr(self, "_outputs", {}))

    def warm_up(self, inputs: dict[str, np.ndarray], runs: int = 2) -> None:
        """Run a few inferences so the first real image pays no start-up cost."""
        for _ in range(runs):
            self.infer(inputs)

    def describe(self) -> str:
        """A one-line description for logs and status (backend and device)."""
        return self.key


# -- helpers shared by the backends -----------------------------------------
def check_artifact_file(artifact: Path, backend: str) -> Path:
    """The artifact as a Path; ArtifactLoadError when the file is missing."""
    artifact = Path(artifact)
    if not artifact.is_file():
        raise ArtifactLoadError(f"{backend}: artifact {artifact} does not exist")
    return artifact


def shapes_compatible(native: Shape, expected: Sequence[int]) -> bool:
    """Whether a runtime's (possibly dynamic) shape can be the expected shape."""
    if len(native) != len(expected):
        return False
    return all(n is None or n < 0 or n == int(e) for n, e in zip(native, expected, strict=True))


def _natural_order(names: list[str]) -> list[int] | None:
    """Indices sorting ``output_2 < output_10`` (one prefix, trailing number); else None."""
    parsed = [re.fullmatch(r"(.*?)(\d+)", name) for name in names]
    if not all(parsed) or len({m.group(1) for m in parsed if m}) != 1:
        return None
    numbers = [int(m.group(2)) for m in parsed if m]
    if len(set(numbers)) != len(numbers):
        return None
    return sorted(range(len(names)), key=lambda i: numbers[i])


def match_names(
    what: str,
    native: Sequence[tuple[str, Shape]],
    expected: Sequence[str] | None,
    expected_shapes: Sequence[Sequence[int]] | None = None,
    *,
    by_position: bool = False,
    source: str = "",
) -> dict[str, str]:
    """Map each expected (manifest) tensor name to the runtime's tensor name.

    ``native`` lists the runtime's tensors in the model's own order. Names that
    match exactly win. Otherwise, only when ``by_position`` is allowed (TFLite),
    tensors are matched by shape when every shape tells them apart, else by
    order: a shared prefix with trailing numbers (``output_0``…``output_10``,
    ``StatefulPartitionedCall:1``) sorts numerically, anything else keeps the
    model's order. Shapes, when given, must agree with the result.
    ``source`` (backend and file) starts every error message.
    """
    where = f"{source}: " if source else ""
    names = [name for name, _ in native]
    shapes = dict(native)
    if expected is None:
        return {name: name for name in names}
    expected = list(expected)
    if len(expected) != len(names):
        raise ArtifactLoadError(
            f"{where}the model has {len(names)} {what}s {names}, the manifest lists "
            f"{len(expected)}: {expected}"
        )
    if expected_shapes is not None and len(expected_shapes) != len(expected):
        raise ValueError(f"{len(expected_shapes)} {what} shapes for {len(expected)} names")
    if set(expected) == set(names):
        mapping = {name: name for name in expected}
    elif not by_position:
        raise ArtifactLoadError(
            f"{where}the model's {what}s are {names}, the manifest expects {expected}"
        )
    elif expected_shapes is not None and _unique_shape_match(native, expected_shapes):
        mapping = {
            name: next(n for n, s in native if tuple(s) == tuple(want))
            for name, want in zip(expected, expected_shapes, strict=True)
        }
    else:
        order = _natural_order(names) or list(range(len(names)))
        mapping = {name: names[i] for name, i in zip(expected, order, strict=True)}
    if expected_shapes is not None:
        for name, want in zip(expected, expected_shapes, strict=True):
            if not shapes_compatible(shapes[mapping[name]], want):
                raise ArtifactLoadError(
                    f"{where}{what} {name!r} has shape {list(shapes[mapping[name]])} in the model, "
                    f"the manifest says {list(want)}"
                )
    return mapping


def _unique_shape_match(
    native: Sequence[tuple[str, Shape]], expected_shapes: Sequence[Sequence[int]]
) -> bool:
    native_shapes = [tuple(shape) for _, shape in native]
    wanted = [tuple(int(d) for d in shape) for shape in expected_shapes]
    return len(set(native_shapes)) == len(native_shapes) and sorted(native_shapes) == sorted(wanted)


def check_inputs(given: dict[str, np.ndarray], expected: dict[str, Shape], backend: str) -> None:
    """ValueError naming the problem when inputs are missing, extra or mis-shaped."""
    missing = [name for name in expected if name not in given]
    extra = [name for name in given if name not in expected]
    if missing or extra:
        raise ValueError(
            f"{backend}: model inputs are {list(expected)}; missing {missing}, unexpected {extra}"
        )
    for name, shape in expected.items():
        if not shapes_compatible(shape, np.shape(given[name])):
            raise ValueError(
                f"{backend}: input {name!r} must have shape {list(shape)}, "
                f"got {list(np.shape(given[name]))}"
            )
