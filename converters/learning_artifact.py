"""The package's trainable model, for federated fine-tuning on the box (decision 0056).

The box trains the head over its model's final maps; it computes the maps with its
runtime, without PyTorch and without the ``onnx`` package (the box's install is lean). So the
converter writes them out: ``learning/trainable.onnx`` is the FP32 ONNX model with the
input of its ``cam`` 1×1 convolution exposed as ``trainable_maps``
(:func:`converters.trainable.trainable_model`), the pool's sharpness recovered from the
model's own logits on validation images. A model whose score is not such a pool gets none,
with the reason in the conversion's record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from clinibox_common.contracts.manifest import sha256_file
from clinibox_common.errors import CliniboxError
from converters.spec import ModelSpec
from converters.trainable import MAPS_OUTPUT, NotTrainable, fit_sharpness, trainable_model
from engine.learning.cam_head import CamHead

#: where the trainable model lies in the package
LEARNING_PATH = "learning/trainable.onnx"
#: the class-activation map the head is
HEAD_OUTPUT = "cam"
#: validation images the sharpness is recovered from
SHARPNESS_IMAGES = 32


def write_learning_model(out: Path, fp32: Path, spec: ModelSpec, x: np.ndarray
                         ) -> dict[str, Any]:
    """Write the trainable model beside the artifacts; the manifest's ``learning`` section,
    or ``{"skipped": reason}``."""
    if HEAD_OUTPUT not in spec.output_names or spec.activation != "sigmoid":
        return {"skipped": f"the model has no {HEAD_OUTPUT!r} output pooled into one sigmoid "
                           "score"}
    try:
        model = trainable_model(fp32, HEAD_OUTPUT)
    except NotTrainable as exc:
        return {"skipped": str(exc)}
    path = out / LEARNING_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model.model, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    maps, logits = [], []
    for row in np.asarray(x[:SHARPNESS_IMAGES], np.float32):
        score, found = session.run([spec.score_output, MAPS_OUTPUT],
                                   {spec.input_name: row[None]})
        maps.append(found[0])
        logits.append(float(np.asarray(score).reshape(-1)[0]))
    try:
        head = fit_sharpness(model.head, np.stack(maps), np.asarray(logits))
    except NotTrainable as exc:
        path.unlink()
        return {"skipped": str(exc)}
    return {"path": LEARNING_PATH, "files": {LEARNING_PATH: sha256_file(path)},
            "maps_output": MAPS_OUTPUT, "score_output": spec.score_output,
            "head_output": HEAD_OUTPUT, "sharpness": head.sharpness,
            "channels": head.channels}


class PackageHeadError(CliniboxError, ValueError):
    """A package a federated run cannot start from; ``code`` says why."""

    def __init__(self, code: str, path: Path) -> None:
        super().__init__(f"{path}: {code}")
        self.code, self.path = code, path


def package_head(package: Path) -> tuple[CamHead, str]:
    """The head a federated run starts from: the one in the package's trainable model (its
    file checked against the manifest's hash), with the package's sharpness; and the
    package's name and version. :class:`PackageHeadError` says why a package has none:
    ``no_manifest``, ``no_trainable_model``, ``trainable_model_not_listed`` (missing, or not
    the file the manifest lists) or ``trainable_model_unreadable``."""
    try:
        manifest = json.loads((package / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise PackageHeadError("no_manifest", package / "manifest.json") from exc
    learning = manifest.get("learning") if isinstance(manifest, dict) else None
    if not isinstance(learning, dict) or not isinstance(learning.get("path"), str) \
            or not isinstance(learning.get("files"), dict):
        raise PackageHeadError("no_trainable_model", package)
    path = package / learning["path"]
    try:
        listed = path.is_file() and sha256_file(path) == learning["files"].get(learning["path"])
    except OSError:
        listed = False
    if not listed:
        raise PackageHeadError("trainable_model_not_listed", path)
    sharpness = learning.get("sharpness")
    try:
        head = trainable_model(path, str(learning.get("head_output", HEAD_OUTPUT))).head
        sharpness = float(sharpness)
        if not 0 < sharpness <= 64:
            raise ValueError(f"sharpness {sharpness}")
    except Exception as exc:  # a model ONNX cannot read, or not trainable: said by its code
        raise PackageHeadError("trainable_model_unreadable", path) from exc
    head = CamHead(head.weights, head.bias, sharpness)
    return head, f"{manifest.get('name')} {manifest.get('version')}"
