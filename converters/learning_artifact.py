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


def package_head(package: Path) -> tuple[CamHead, str]:
    """The head a federated run starts from: the one in the package's trainable model (its
    file checked against the manifest's hash), with the package's sharpness; and the
    package's name and version. NotTrainable when the package carries no trainable model."""
    try:
        manifest = json.loads((package / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise NotTrainable(f"{package}: no readable manifest.json ({exc})") from exc
    learning = manifest.get("learning") if isinstance(manifest, dict) else None
    if not isinstance(learning, dict) or not isinstance(learning.get("path"), str):
        raise NotTrainable(f"{package}: the package carries no trainable model ('learning' "
                           "in its manifest)")
    path = package / learning["path"]
    if not path.is_file() or sha256_file(path) != learning.get("files", {}).get(
            learning["path"]):
        raise NotTrainable(f"{path}: missing, or not the file the manifest lists")
    head = trainable_model(path, str(learning.get("head_output", HEAD_OUTPUT))).head
    head = CamHead(head.weights, head.bias, float(learning["sharpness"]))
    return head, f"{manifest.get('name')} {manifest.get('version')}"
