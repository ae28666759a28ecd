"""Write the box's case file from its own labelled images (issue 60, decision 0056).

For each image people labelled (``storage/case_labels.py``: a clinician's review, the
hospital's verdict; the latest label counts), the box decodes the received object again in
its decoding sandbox, takes the frame its result was judged on (the key frame), prepares it
as the analysis does (the package's preprocessing and normalisation) and runs the package's
trainable model (``learning`` in the manifest: the FP32 model with its final maps as an
output) on ONNX Runtime. The maps and the labels go to the case file
(:mod:`firmware_app.learning.cases`), which never leaves the box.

An image whose object is gone (retention deleted it), cannot be decoded again, or was
judged by a model of another name is left out and counted by its reason; one bad image
never stops the others. At most :data:`~firmware_app.learning.cases.MAX_CASES` images, the
latest labels first.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from clinibox_common.contracts.manifest import ModelPackage, PackageError
from engine.imaging.errors import DecodeError
from engine.imaging.preprocess import get_preprocessor
from engine.imaging.sandbox import DecodeSandbox
from firmware_app.learning.cases import MAX_CASES, LabelledCases, write_cases
from firmware_app.settings.box import Config
from firmware_app.storage.case_labels import labelled_objects

log = logging.getLogger(__name__)


@dataclass
class CaseFileSummary:
    """What the case file holds, and what was left out by reason (codes)."""

    path: Path
    lesions: int = 0
    clear: int = 0
    left_out: Counter[str] = field(default_factory=Counter)


def trainable_session(package: ModelPackage) -> tuple[ort.InferenceSession, dict]:
    """The package's trainable model on ONNX Runtime, and its ``learning`` section;
    PackageError when the package carries none."""
    learning = package.manifest.get("learning")
    if not isinstance(learning, dict) or not learning.get("path"):
        raise PackageError(f"model {package.model_id} carries no trainable model ('learning' in "
                           "its manifest): convert it again with this clinibox, whose "
                           "converter writes one for a model whose score pools a 1×1 "
                           "convolution", "not_trainable")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(package.root / learning["path"]), options,
                                   providers=["CPUExecutionProvider"])
    return session, learning


def write_case_file(config: Config, conn: sqlite3.Connection, package: ModelPackage,
                    out: Path) -> CaseFileSummary:
    """Write the case file of ``package`` at ``out``; what it holds and what was left out."""
    session, learning = trainable_session(package)
    spec = package.input
    preprocess = get_preprocessor(package.manifest["preprocessing"]["name"])
    params = package.manifest["preprocessing"].get("params", {})
    summary = CaseFileSummary(out)
    objects = labelled_objects(conn, package.name)
    maps: np.ndarray | None = None  # filled in place: the stack of 5,000 maps is not copied
    labels: list[int] = []
    sandbox = DecodeSandbox(config.limits)
    try:
        for where_kept, key_frame, lesion in objects:
            if len(labels) == MAX_CASES:  # the latest first: an image left out frees a place
                break
            path = Path(where_kept)
            if not path.is_file():
                summary.left_out["object_deleted"] += 1
                continue
            try:
                decoded = sandbox.decode(path, config.worker.max_frames_per_instance)
            except DecodeError as exc:
                log.warning("case file: %s cannot be decoded again: %s", path.name, exc)
                summary.left_out["not_decodable"] += 1
                continue
            if key_frame not in decoded.frame_indices:  # not the frame it was judged on
                summary.left_out["key_frame_missing"] += 1
                continue
            try:
                tensor, _ = preprocess(decoded.frames[decoded.frame_indices.index(key_frame)],
                                       spec.shape, spec.mean, spec.std, params)
                [found] = session.run([learning["maps_output"]],
                                      {spec.name: np.asarray(tensor, np.float32)})
            except Exception as exc:  # one image that cannot be run never stops the others
                log.warning("case file: %s could not be run: %s", path.name, exc)
                summary.left_out["not_run"] += 1
                continue
            if maps is None:
                maps = np.empty((min(len(objects), MAX_CASES), *found[0].shape), np.float32)
            maps[len(labels)] = found[0]
            labels.append(int(lesion))
    finally:
        sandbox.close()
    summary.lesions, summary.clear = sum(labels), len(labels) - sum(labels)
    channels = int(learning.get("channels") or 0)
    kept = maps[:len(labels)] if maps is not None else np.zeros((0, channels, 1, 1), np.float32)
    write_cases(out, LabelledCases(kept, np.asarray(labels, np.int8)))
    return summary
