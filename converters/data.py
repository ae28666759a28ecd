"""Labelled images for calibration, validation and (when distilling or pruning) training.

Two sources, both turned into model inputs by the *box's own* decoder and
preprocessing, so calibration sees exactly what the box will feed the model:

* a folder of DICOM, PNG or JPEG files with a CSV of labels: columns
  ``file,label`` (label an integer class index), optionally ``split``
  (``train``, ``calibration`` or ``validation``);
* the built-in phantom generator (``phantoms`` or ``phantoms:N``): CT-like and
  ultrasound-like images, label 1 when a lesion is drawn.

Without a ``split`` column the rows are split by a seeded shuffle, in the
fractions the config gives.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clinibox_common.errors import EXIT_USAGE, CliniboxError
from engine.imaging.decode import DecodeError
from engine.imaging.preprocess import get_preprocessor
from engine.imaging.wrap import decode_file
from engine.settings import LimitsConfig

SPLITS = ("train", "calibration", "validation")
PHANTOM_SEED = 505


class DataError(CliniboxError, ValueError):
    """The labelled data cannot be used, with the file or row at fault."""

    kind = "data refused"
    exit_status = EXIT_USAGE


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model input: the box's preprocessor, by name."""

    name: str
    shape: tuple[int, int, int, int]
    mean: float
    std: float
    params: dict

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Grey [0, 1] image → float32 [C, H, W]."""
        tensor, _ = get_preprocessor(self.name)(image, self.shape, self.mean, self.std,
                                                self.params)
        return tensor[0]


@dataclass
class LabelledData:
    """Model inputs [N, C, H, W], integer labels [N], their files and split names."""

    x: np.ndarray
    labels: np.ndarray
    files: list[str]
    split: np.ndarray

    def subset(self, name: str) -> LabelledData:
        """The rows of one split (``train``, ``calibration`` or ``validation``)."""
        keep = self.split == name
        return LabelledData(self.x[keep], self.labels[keep],
                            [f for f, k in zip(self.files, keep, strict=True) if k],
                            self.split[keep])

    def __len__(self) -> int:
        return len(self.labels)


def assign_splits(count: int, fractions: dict[str, float], seed: int) -> np.ndarray:
    """Split names for ``count`` rows by a seeded shuffle in the given fractions."""
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise DataError(f"unknown split names {sorted(unknown)}; use {SPLITS}")
    total = sum(fractions.values())
    if total <= 0:
        raise DataError("split fractions must add up to more than 0")
    names = np.empty(count, dtype=object)
    order = np.random.default_rng(seed).permutation(count)
    start = 0
    for name in SPLITS:
        size = math.floor(count * fractions.get(name, 0.0) / total + 0.5)
        names[order[start : start + size]] = name
        start += size
    names[order[start:]] = "validation"
    return names.astype(str)


def _read_csv(labels_csv: Path) -> list[dict[str, str]]:
    try:
        with open(labels_csv, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise DataError(f"cannot read labels {labels_csv}: {exc}") from exc
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise DataError(f"{labels_csv} needs a header with columns file,label (and optional "
                        "split) and at least one row")
    return rows


def _label(row: dict[str, str], line: int, where: Path, classes: int) -> int:
    try:
        value = int(row["label"])
    except (TypeError, ValueError):
        raise DataError(f"{where} line {line}: label {row['label']!r} is not an integer "
                        "class index") from None
    if not 0 <= value < classes:
        raise DataError(f"{where} line {line}: label {value} is outside 0..{classes - 1}")
    return value


def model_input(path: Path, name: str, prep: Preprocessing, limits: LimitsConfig) -> np.ndarray:
    """The first frame of an image file decoded as the box does, as model input; DataError
    naming the file (``name``) when it cannot be decoded."""
    try:
        decoded = decode_file(path, limits, 1)
    except (DecodeError, ValueError, OSError) as exc:
        raise DataError(f"{name}: cannot be decoded: {exc}") from exc
    return prep(decoded.frames[0])


def load_folder(folder: Path, labels_csv: Path, prep: Preprocessing, classes: int,
                fractions: dict[str, float], seed: int = 0,
                limits: LimitsConfig | None = None) -> LabelledData:
    """Decode and preprocess every file the CSV lists; DataError names any bad row or file.

    ``classes`` is how many label values are valid (2 for a binary model).
    Multi-frame objects contribute their first selected frame.
    """
    limits = limits or LimitsConfig()
    rows = _read_csv(labels_csv)
    root = folder.resolve()
    xs, labels, files, splits = [], [], [], []
    for line, row in enumerate(rows, start=2):
        relative = (row.get("file") or "").strip()
        path = (root / relative).resolve()
        if root not in path.parents:
            raise DataError(f"{labels_csv} line {line}: {relative!r} is outside {folder}")
        if not path.is_file():
            raise DataError(f"{labels_csv} line {line}: {relative} does not exist in {folder}")
        labels.append(_label(row, line, labels_csv, classes))
        xs.append(model_input(path, relative, prep, limits))
        files.append(relative)
        split = (row.get("split") or "").strip()
        if split and split not in SPLITS:
            raise DataError(f"{labels_csv} line {line}: split {split!r} is not one of {SPLITS}")
        splits.append(split)
    names = np.array(splits, dtype=object)
    if not all(names):
        if any(names):
            raise DataError(f"{labels_csv}: give a split for every row or for none")
        names = assign_splits(len(rows), fractions, seed)
    return LabelledData(np.stack(xs).astype(np.float32), np.asarray(labels, np.int64), files,
                        names.astype(str))


def load_phantoms(count: int, prep: Preprocessing, fractions: dict[str, float],
                  seed: int = PHANTOM_SEED) -> LabelledData:
    """``count`` phantoms (CT/US, half with lesions), label 1 = lesion."""
    from phantoms.images import dataset_plan, dataset_sample

    if count < 8:
        raise DataError(f"phantoms:{count} is too few; ask for at least 8")
    plan = dataset_plan(seed, count)
    xs, labels, files = [], [], []
    for index in range(count):
        phantom = dataset_sample(seed, index, plan)
        xs.append(prep(phantom.image))
        labels.append(int(bool(phantom.boxes)))
        files.append(f"phantom:{seed}:{index}:{phantom.kind}")
    return LabelledData(np.stack(xs).astype(np.float32), np.asarray(labels, np.int64), files,
                        assign_splits(count, fractions, seed))


def load_data(source: str, labels_csv: Path | None, prep: Preprocessing, classes: int,
              fractions: dict[str, float], seed: int = 0) -> LabelledData:
    """``phantoms[:N]`` or a folder with its labels CSV, as :class:`LabelledData`."""
    if source == "phantoms" or source.startswith("phantoms:"):
        count = source.partition(":")[2] or "600"
        if not count.isdigit():
            raise DataError(f"{source!r}: write phantoms:N with N a number")
        return load_phantoms(int(count), prep, fractions)
    folder = Path(source)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist")
    if labels_csv is None:
        raise DataError("a data folder needs --labels CSV (columns file,label)")
    return load_folder(folder, Path(labels_csv), prep, classes, fractions, seed)
