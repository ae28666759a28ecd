"""Clinic feedback as extra validation data: the cases a box exported with their verdicts.

``clinibox export-disagreements`` (``firmware_app/dicom_out/disagreements.py``)
writes one folder per case: de-identified ``IMAGE*.dcm`` files and a
``case.json`` naming, per image, the model's finding and the clinicians'
verdict. ``--extra-validation FOLDER`` (``extra_validation`` in convert.toml)
reads every case folder under FOLDER, decodes the images with the box's own
decoder and preprocessing (as ``data.py`` does) and labels each:

* ``disagree`` on a finding → 0 (no lesion); ``disagree`` on no finding → 1;
* ``agree`` → the model's answer (1 on a finding, else 0);
* ``unsure``, no verdict, or an image the model did not judge (not assessable,
  outside the validated range) → skipped.

The rows go to the validation split only, never to training or calibration.
Each ``case.json`` is untrusted input: ``case_file.py`` reads it bounded in
size and depth, without following links, and checks its types; a case that
fails, or an image outside its case folder, stops the run with a DataError
naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converters.case_file import read_case
from converters.data import DataError, LabelledData, Preprocessing, model_input
from engine.settings import LimitsConfig

CASE_FILE = "case.json"
#: assessments on which the model gave an answer a verdict can be read against
JUDGED = ("finding", "no_finding")


def feedback_label(verdict: str, finding: bool) -> int | None:
    """The label a clinician's ``verdict`` on the model's ``finding`` gives (None: skip)."""
    if verdict == "agree":
        return int(finding)
    if verdict == "disagree":
        return int(not finding)
    return None


def case_folders(folder: Path) -> list[Path]:
    """Every folder under ``folder`` (itself included) holding a ``case.json``, sorted."""
    return sorted(path.parent for path in Path(folder).rglob(CASE_FILE))


def labelled_images(folder: Path) -> list[tuple[Path, int]]:
    """(image file, label) of every usable image of every case under ``folder``."""
    rows = []
    for case_dir in case_folders(folder):
        case = read_case(case_dir / CASE_FILE, folder)
        for image in case.get("images", []):
            if image.get("assessment") not in JUDGED:
                continue
            label = feedback_label(str(image.get("verdict") or ""), bool(image.get("finding")))
            if label is None:
                continue
            name = image.get("file") or ""
            path = None if "\0" in name else (case_dir / name).resolve()
            if path is None or case_dir.resolve() not in path.parents or not path.is_file():
                raise DataError(f"{case_dir / CASE_FILE}: image {name!r} is not in the case")
            rows.append((path, label))
    return rows


def load_feedback_cases(folder: Path, prep: Preprocessing,
                        limits: LimitsConfig | None = None) -> LabelledData:
    """The labelled images of an export (see the module docstring), all in ``validation``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"extra validation folder {folder} does not exist")
    limits = limits or LimitsConfig()
    xs, labels, files = [], [], []
    for path, label in labelled_images(folder):
        xs.append(model_input(path, str(path), prep, limits))
        labels.append(label)
        files.append(f"feedback:{path.relative_to(folder.resolve())}")
    shape = (0, *prep.shape[1:])
    x = np.stack(xs).astype(np.float32) if xs else np.zeros(shape, np.float32)
    return LabelledData(x, np.asarray(labels, np.int64), files,
                        np.asarray(["validation"] * len(files), dtype=str))


def appended(data: LabelledData, extra: LabelledData) -> LabelledData:
    """``data`` with ``extra``'s rows after it (``extra`` is all validation rows)."""
    if not len(extra):
        return data
    return LabelledData(np.concatenate([data.x, extra.x]),
                        np.concatenate([data.labels, extra.labels]),
                        data.files + extra.files,
                        np.concatenate([data.split.astype(str), extra.split.astype(str)]))
