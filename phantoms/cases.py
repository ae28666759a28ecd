"""Labelled cases as a hospital's model maker has them, made of CT phantoms (the cookbook's data).

:func:`write_cases` writes ``count`` CT phantoms (half with lesions) into a folder as DICOM
files, with what an annotation tool exports beside them, all in the files' own pixels:

* ``labels.csv``: ``file,label`` (1 where a lesion is drawn), what ``clinibox convert``'s
  ``--labels`` reads;
* ``boxes.json``: ``{file: [[x0, y0, x1, y1], …]}``, each lesion's box (pixel edges);
* ``masks/<file>.png``: each lesion's pixels 255, the rest 0.

:func:`read_cases` reads them back. The examples in ``examples/model-makers`` train on them
through ``converters.box_input`` (the box's own decoding and preprocessing).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from phantoms.dicom import ct_dataset, write_dicom
from phantoms.images import dataset_plan, dataset_sample


@dataclass(frozen=True)
class Case:
    """One labelled file: its path, image-level label, lesion boxes and lesion mask."""

    path: Path
    label: int
    boxes: list[list[float]]
    mask: np.ndarray  # bool, the file's rows × columns


def write_cases(folder: Path, seed: int, count: int, size: int = 96) -> Path:
    """``count`` CT phantoms of ``size`` pixels as ``ct0000.dcm`` … with their labels, boxes
    and masks in ``folder``; returns the ``labels.csv`` path."""
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    plan = dataset_plan(seed, count, ("ct",))
    boxes: dict[str, list[list[float]]] = {}
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label"])
        for index in range(count):
            phantom = dataset_sample(seed, index, plan, size=size)
            name = f"ct{index:04d}.dcm"
            write_dicom(ct_dataset(phantom, {"PatientName": f"PHANTOM^{seed}^{index}"}),
                        folder / name)
            writer.writerow([name, int(bool(phantom.boxes))])
            boxes[name] = [[round(float(v), 3) for v in box] for box in phantom.boxes]
            Image.fromarray(phantom.truth_mask().astype(np.uint8) * 255).save(
                folder / "masks" / f"{name}.png")
    (folder / "boxes.json").write_text(json.dumps(boxes, indent=1))
    return folder / "labels.csv"


def read_cases(folder: Path) -> list[Case]:
    """The cases :func:`write_cases` wrote (or yours, laid out the same way)."""
    boxes = json.loads((folder / "boxes.json").read_text())
    with open(folder / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [Case(folder / row["file"], int(row["label"]), boxes.get(row["file"], []),
                 np.asarray(Image.open(folder / "masks" / f"{row['file']}.png")) > 127)
            for row in rows]
