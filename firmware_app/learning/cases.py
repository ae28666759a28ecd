"""A box's labelled cases as its training sees them: the frozen model's final feature maps
of each image, and the label a person gave it.

The file is a numpy archive (``.npz``) the box writes beside its state: ``maps``
[N, C, h, w] float32 (the runtime's output named by the package's trainable section) and
``labels`` [N] (1: lesion confirmed, 0: no lesion). Nothing else is in it: no identifier,
no pixel, no date; it never leaves the box, and only the head's update trained on it does.
A file that is not such an archive is refused with its reason, never half read.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clinibox_common.contracts.federated import MAX_CASES
from clinibox_common.errors import CliniboxError

__all__ = ["MAX_CASES", "CaseFileError", "LabelledCases", "read_cases", "write_cases"]


class CaseFileError(CliniboxError, ValueError):
    """The labelled-case file is missing, unreadable or not what training needs."""


@dataclass(frozen=True)
class LabelledCases:
    """The maps [N, C, h, w] and labels [N] of a box's labelled cases."""

    maps: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.size)


def read_cases(path: Path, channels: int) -> LabelledCases:
    """The cases of ``path``, checked: ``channels`` maps each, labels 0 or 1, finite."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if set(archive.files) != {"maps", "labels"}:
                raise CaseFileError(f"{path}: a case file holds 'maps' and 'labels' only; "
                                    f"it holds {sorted(archive.files)}")
            maps, labels = archive["maps"], archive["labels"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, CaseFileError):
            raise
        raise CaseFileError(f"{path}: not a readable case file ({exc})") from exc
    if maps.ndim != 4 or maps.shape[1] != channels:
        raise CaseFileError(f"{path}: maps must be [N, {channels}, h, w]; "
                            f"they are {list(maps.shape)}")
    if labels.shape != (maps.shape[0],):
        raise CaseFileError(f"{path}: {maps.shape[0]} cases but labels of shape "
                            f"{list(labels.shape)}")
    if maps.shape[0] > MAX_CASES:
        raise CaseFileError(f"{path}: {maps.shape[0]} cases; a round trains on at most "
                            f"{MAX_CASES}")
    if not np.isin(labels, (0, 1)).all():
        raise CaseFileError(f"{path}: labels must be 0 or 1")
    if not np.isfinite(maps).all():
        raise CaseFileError(f"{path}: the maps hold values that are not finite")
    return LabelledCases(maps.astype(np.float32, copy=False), labels.astype(np.int8))


def write_cases(path: Path, cases: LabelledCases) -> Path:
    """Write ``cases`` to ``path`` (numpy's uncompressed archive), whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as out:
        np.savez(out, maps=np.asarray(cases.maps, np.float32),
                 labels=np.asarray(cases.labels, np.int8))
    partial.replace(path)
    return path
