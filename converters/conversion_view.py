"""What a conversion's step modules (``quantize_step``, ``heatmap_step``) use of a
:class:`converters.pipeline.Conversion`, as a Protocol: they take the conversion without
importing ``converters.pipeline``, which imports them (a circle, even under TYPE_CHECKING:
tests/unit/test_import_circles.py counts those imports too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from converters.artifacts import ArtifactRecord
from converters.config import ConvertConfig
from converters.data import LabelledData
from converters.formats import ArtifactKind
from converters.source import SourceModel
from converters.spec import ModelSpec
from converters.verify import Gate


class ConversionView(Protocol):
    """One conversion's working folder, model, data and measurements, as its steps see them."""

    config: ConvertConfig
    out: Path
    work: Path
    state: dict[str, Any]
    gate: Gate

    @property
    def source(self) -> SourceModel:
        """The current model."""

    @property
    def spec(self) -> ModelSpec:
        """The model's I/O contract."""

    @property
    def data(self) -> LabelledData:
        """Labelled, preprocessed images."""

    @property
    def validation(self) -> LabelledData:
        """The validation rows every artifact is verified on."""

    def claim(self, step: str) -> None:
        """Refuse to continue work made from other inputs."""

    def save_state(self) -> None:
        """Write ``state.json``."""

    def records(self) -> list[ArtifactRecord]:
        """Artifacts written so far."""

    def record_artifact(self, kind: ArtifactKind, notes: dict) -> ArtifactRecord:
        """The record of an artifact just written, added to the state."""

    def reference(self) -> dict[str, np.ndarray]:
        """The PyTorch source's outputs on the validation rows."""

    def outputs(self, record: ArtifactRecord) -> dict[str, np.ndarray]:
        """The artifact's outputs on validation through the box's backend."""

    def measure(self, record: ArtifactRecord) -> dict:
        """One artifact's outputs on validation compared with the PyTorch source's."""

    def adopt_model(self, source: SourceModel, spec: ModelSpec) -> None:
        """Take ``source`` with ``spec`` as the current model."""
