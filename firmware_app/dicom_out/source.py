"""What the result documents are made from: the model, the analysed images and their UIDs.

``ModelIdentity`` and ``AnalysedInstance`` are the inputs of
``study_documents`` (re-exported there); ``ResultIds`` makes every UID of one
study's documents from (device id, study key, model id, version, kind), so a
completion re-run after a crash writes the very same UIDs and the PACS keeps
one copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from clinibox_common.bundled import DEMO_KEY_ID

#: the manufacturer named in every result document and its device observer
MANUFACTURER = "clinibox"


@dataclass(frozen=True)
class ModelIdentity:
    """The model whose results a document carries.

    ``demo`` is true for a demonstration package (trained on synthetic
    phantoms, not for clinical use): the documents say so.
    """

    model_id: str  # name@version
    name: str
    version: str
    finding_threshold: float
    demo: bool

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> ModelIdentity:
        """The identity of a loaded package from its manifest.

        A package is a demonstration when its manifest is signed with the
        DEMO-ONLY key (``signature.key_id``, the key every demo box trusts and
        whose private half is public) or its ``intended_use`` begins
        "DEMONSTRATION ONLY" (what ``demo/train.py`` writes).
        """
        name, version = str(manifest["name"]), str(manifest["version"])
        signed_with = (manifest.get("signature") or {}).get("key_id")
        intended = str(manifest.get("intended_use") or "").strip().upper()
        return cls(model_id=f"{name}@{version}", name=name, version=version,
                   finding_threshold=float((manifest.get("thresholds") or {}).get("finding", 0.5)),
                   demo=signed_with == DEMO_KEY_ID or intended.startswith("DEMONSTRATION ONLY"))


@dataclass(frozen=True)
class AnalysedInstance:
    """One received image and its result (an entry of ``ResultStore.instances()``).

    ``heatmap`` (optional, the stored heatmap of its key frame) is blended into
    the key image as in the viewer.
    """

    path: Path
    result: dict[str, Any]
    heatmap: np.ndarray | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """How the image is named in the study's records: its id in the box, else its
        file."""
        return str(self.result.get("id") or self.path.name)


@dataclass(frozen=True)
class Source:
    """An analysed image with its DICOM header (pixels not read, made fit by
    ``source_header.normalise``)."""

    instance: AnalysedInstance
    dataset: Dataset
    #: its Pixel Spacing was no finite positive pair and was removed: no sizes in mm
    uncalibrated: bool = False

    @property
    def result(self) -> dict[str, Any]:
        """The image's result (``ResultStore.instances()`` entry)."""
        return self.instance.result

    @property
    def frames(self) -> int:
        """The image's number of frames (1 for a single-frame image)."""
        return int(self.dataset.get("NumberOfFrames") or 1)

    def frame_numbers(self, frame: int) -> list[int] | None:
        """DICOM's 1-based Referenced Frame Number of 0-based ``frame`` (None: single-frame)."""
        return [int(frame) + 1] if "NumberOfFrames" in self.dataset else None


@dataclass(frozen=True)
class ResultIds:
    """Deterministic UIDs of one study's result documents, by kind and version."""

    device_id: str
    study_key: str
    model_id: str
    version: int

    def document(self, kind: str, *more: str) -> str:
        """The SOP Instance UID of this version's ``kind`` document (``more``: which one)."""
        return self._uid(str(self.version), kind, *more)

    def series(self, kind: str) -> str:
        """The Series Instance UID of ``kind`` documents: one series for every version."""
        return self._uid("series", kind)

    def item(self, kind: str, *more: str) -> str:
        """A UID inside a document (tracking identifiers), stable across versions."""
        return self._uid("item", kind, *more)

    def previous(self, kind: str) -> str:
        """The SOP Instance UID the previous version's ``kind`` document was given."""
        return self._uid(str(self.version - 1), kind)

    def _uid(self, *parts: str) -> str:
        return str(generate_uid(entropy_srcs=[self.device_id, self.study_key, self.model_id,
                                              *parts]))


@dataclass(frozen=True)
class StudyInput:
    """What every writer of a DICOM output is given: one version of one study's results.

    ``sources`` are its analysed images with their headers made fit (those that cannot be
    referred to already left out), in the order the SR lists them; ``ids`` makes every UID
    of its documents; ``predecessor`` is the previous version's SR when the caller holds
    it (a writer may also make its reference from ``ids``).
    """

    sources: list[Source]
    model: ModelIdentity
    ids: ResultIds
    predecessor: Dataset | None = None
    #: the images the SEG writer left out of every SEG, by name (``AnalysedInstance.name``),
    #: with the reason code (filled by the writer; the others are still segmented)
    seg_left_out: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def instances(self) -> list[AnalysedInstance]:
        """The analysed images, in order."""
        return [source.instance for source in self.sources]
