"""Package a second stage (``clinibox_common/contracts/stages.py``): export, check, golden cases.

A second stage is a PyTorch model that runs on each lesion's crop
(``engine/imaging/lesion_crop.py``). Whoever trained it (the demo's
``demo/crop_stage.py``, or a clinic's own model named by ``[stage]`` in
``convert.toml``) hands it here with its crop, output names and heads:

* ``export_stage`` writes FP32 ONNX, and FP32 TFLite when a target runs TFLite
  (a stage is small; its INT8 is not worth a second calibration), runs each
  artifact through the box's own runtime backend on the check crops and
  refuses one that disagrees with PyTorch (class probabilities, mask);
* ``golden_cases`` keeps a few crops with PyTorch's answers, which the box
  checks on its chosen runtime before it runs the package;
* ``stage_section`` is the manifest's ``stages`` entry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clinibox_common.contracts.heads import head_of, parse_heads
from clinibox_common.contracts.manifest import sha256_file
from clinibox_common.contracts.stages import check_stage
from converters.export import torch_outputs
from converters.spec import ModelSpec
from engine.imaging.lesion_crop import CropSpec, lesion_crop
from engine.inference.postprocess import sigmoid

#: an exported stage artifact must agree this well with PyTorch
MAX_CLASS_DIFFERENCE, MIN_MASK_IOU = 0.02, 0.98


@dataclass(frozen=True)
class StageSpec:
    """What a second stage is: its name, crop, input and output names, heads and what
    each output means."""

    name: str
    crop: CropSpec
    outputs: tuple[str, ...]
    heads: tuple[dict[str, Any], ...]
    input_name: str = "crop"
    meanings: dict[str, str] = field(default_factory=dict)
    purpose: str = "look again at each lesion on its crop at source resolution"

    @property
    def model_spec(self) -> ModelSpec:
        """The converter's spec of the stage model (for export and PyTorch runs)."""
        classification = head_of(parse_heads(list(self.heads)), "classification")
        score = classification.outputs["output"] if classification else self.outputs[0]
        return ModelSpec(input_shape=(1, 1, *self.crop.size), output_names=self.outputs,
                         score_output=score, input_name=self.input_name)

    def crop_section(self) -> dict[str, Any]:
        """The manifest's ``crop`` of the stage."""
        return {"size": list(self.crop.size), "context": self.crop.context,
                "margin_px": self.crop.margin_px, "normalisation": "standardise"}


def check_crops(images: list[np.ndarray], spec: StageSpec, count: int = 64,
                seed: int = 0) -> np.ndarray:
    """Crops for checking an export: cut as the box cuts them, around boxes of 5-40 % of
    each grey [0, 1] image's width at random places (real image content, no labels)."""
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        image = images[i % len(images)]
        h, w = image.shape
        side = rng.uniform(0.05, 0.4) * w
        x0, y0 = rng.uniform(0, max(w - side, 1)), rng.uniform(0, max(h - side, 1))
        crops.append(lesion_crop(image, (x0, y0, x0 + side, y0 + side), spec.crop)[0][0])
    return np.stack(crops).astype(np.float32)


def _runtime_outputs(backend_key: str, path: Path, spec: StageSpec, shapes: list,
                     x: np.ndarray) -> dict[str, np.ndarray]:
    """The stage's outputs on crops through the box's own runtime backend."""
    from engine.runtime.registry import create_backend

    backend = create_backend(backend_key)
    backend.load(path, threads=2, input_names=[spec.input_name],
                 output_names=list(spec.outputs), output_shapes=shapes)
    try:
        rows = [backend.infer({spec.input_name: x[i : i + 1]}) for i in range(len(x))]
    finally:
        backend.close()
    return {name: np.concatenate([r[name] for r in rows]) for name in spec.outputs}


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def agreement(spec: StageSpec, reference: dict[str, np.ndarray],
              other: dict[str, np.ndarray]) -> dict[str, float]:
    """How closely an artifact reproduces PyTorch: the largest difference of any output, of
    the class probabilities, and the IoU of the thresholded masks over all crops."""
    heads = parse_heads(list(spec.heads))
    checks = {"max_abs_difference": round(max(float(np.abs(reference[n] - other[n]).max())
                                              for n in spec.outputs), 6)}
    classification = head_of(heads, "classification")
    if classification is not None:
        name = classification.outputs["output"]
        a, b = reference[name].reshape(len(reference[name]), -1), other[name].reshape(
            len(other[name]), -1)
        if classification.param("activation", "sigmoid") == "softmax":
            a, b = _softmax_rows(a), _softmax_rows(b)
        else:
            a, b = sigmoid(a), sigmoid(b)
        checks["max_class_probability_difference"] = round(float(np.abs(a - b).max()), 5)
    segmentation = head_of(heads, "segmentation")
    if segmentation is not None:
        name = segmentation.outputs["output"]
        cut = 0.0 if segmentation.param("activation", "sigmoid") == "sigmoid" else 0.5
        a, b = reference[name] >= cut, other[name] >= cut
        union = np.logical_or(a, b).sum()
        checks["mask_iou_with_torch"] = round(
            float(np.logical_and(a, b).sum() / union) if union else 1.0, 5)  # both empty
    return checks


def _refused(checks: dict[str, float]) -> bool:
    return (checks.get("max_class_probability_difference", 0.0) > MAX_CLASS_DIFFERENCE
            or checks.get("mask_iou_with_torch", 1.0) < MIN_MASK_IOU)


def export_stage(model: Any, out: Path, spec: StageSpec, targets: list[str],
                 check_x: np.ndarray, log=print) -> list[dict[str, Any]]:
    """The stage's artifacts (FP32 ONNX, and FP32 TFLite when a target runs TFLite), each
    checked on ``check_x`` crops through the box's runtime against PyTorch; RuntimeError
    when one disagrees."""
    from converters import formats
    from converters.export import export_onnx, export_tflite

    folder = f"stages/{spec.name}"
    wanted = [("onnx", "onnxruntime", f"{folder}/model.fp32.onnx")]
    if any(k.format == "tflite" for k in formats.kinds_for(targets)):
        wanted.append(("tflite", "tflite", f"{folder}/model.fp32.tflite"))
    model_spec = spec.model_spec
    reference = torch_outputs(model, model_spec, check_x)
    shapes = [[1, *reference[n].shape[1:]] for n in spec.outputs]
    artifacts = []
    for fmt, backend_key, relative in wanted:
        start = time.perf_counter()
        path = out / relative
        if fmt == "onnx":
            export_onnx(model, model_spec, path)
        else:
            export_tflite(model, model_spec, path)
        seconds = round(time.perf_counter() - start, 1)
        checks = agreement(spec, reference,
                           _runtime_outputs(backend_key, path, spec, shapes, check_x))
        log(f"stage {relative}: {checks}")
        if _refused(checks):
            raise RuntimeError(f"the second stage's {relative} disagrees with PyTorch: {checks}")
        artifacts.append({"format": fmt, "precision": "fp32", "path": relative,
                          "files": {relative: sha256_file(path)},
                          "validation": {**checks, "crops": len(check_x)},
                          "conversion": {"seconds": seconds}})
    return artifacts


def golden_cases(out: Path, model: Any, spec: StageSpec, crops: np.ndarray,
                 picks: list[int]) -> list[dict[str, Any]]:
    """Golden cases of the stage: chosen crops with PyTorch's class probabilities and the
    first value of every output (the box runs them on its chosen runtime)."""
    folder = out / "stages" / spec.name / "golden"
    folder.mkdir(parents=True, exist_ok=True)
    classification = head_of(parse_heads(list(spec.heads)), "classification")
    cases = []
    for number, index in enumerate(picks):
        tensor = crops[index : index + 1]
        relative = f"stages/{spec.name}/golden/crop-{number}.npy"
        np.save(out / relative, tensor)
        found = torch_outputs(model, spec.model_spec, tensor)
        expected = {name: round(float(found[name].ravel()[0]), 4) for name in spec.outputs}
        if classification is not None:
            logits = found[classification.outputs["output"]].reshape(1, -1)
            if classification.param("activation", "sigmoid") == "softmax":
                probs = _softmax_rows(logits)[0]
            else:
                probs = sigmoid(logits[0])
            labels = classification.param("labels", [])
            expected.update({str(label): round(float(p), 4)
                             for label, p in zip(labels, probs, strict=True)})
        cases.append({"input": relative, "sha256": sha256_file(out / relative),
                      "expected": expected, "tolerance": 0.05})
    return cases


def _declaration(spec: StageSpec, output_shapes: dict[str, list[int]]) -> dict[str, Any]:
    """What a ``stages`` entry says of the stage itself: crop, inputs, outputs, heads."""
    return {
        "name": spec.name, "runs_on": "lesions", "purpose": spec.purpose,
        "crop": spec.crop_section(),
        "inputs": [{"name": spec.input_name, "shape": [1, 1, *spec.crop.size],
                    "dtype": "float32", "layout": "NCHW"}],
        "outputs": [{"name": n, "shape": list(output_shapes.get(n, [])),
                     "meaning": spec.meanings.get(n, "output")} for n in spec.outputs],
        "heads": list(spec.heads)}


def stage_section(spec: StageSpec, output_shapes: dict[str, list[int]],
                  artifacts: list[dict], cases: list[dict], validation: dict) -> dict:
    """The manifest's ``stages`` entry, checked as the box will check it."""
    section = {**_declaration(spec, output_shapes), "artifacts": artifacts,
               "golden_cases": cases, "validation": validation}
    check_stage(section)
    return section


class TorchStage:
    """A PyTorch stage behind the box's runtime interface (``infer`` by names), so the box's
    own ``LesionStage`` decodes it while it is trained and measured here."""

    key = "torch"

    def __init__(self, model: Any, spec: StageSpec) -> None:
        self.model, self.spec = model, spec

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The stage's named outputs on one crop."""
        return torch_outputs(self.model, self.spec.model_spec, inputs[self.spec.input_name])

    def close(self) -> None:
        """Nothing to release."""


def stage_package(out: Path, section: dict[str, Any], name: str, version: str):
    """The stage as the box loads it (``ModelPackage.stages``), before the package is signed."""
    from clinibox_common.contracts.manifest import SCHEMA, ModelPackage
    from clinibox_common.contracts.stages import stage_manifest

    return ModelPackage(out, stage_manifest({"schema": SCHEMA, "name": name, "version": version},
                                            section), "unsigned")


def torch_lesion_stage(model: Any, spec: StageSpec, name: str, version: str):
    """A PyTorch stage run by the box's own ``LesionStage`` (its crop, decoder and second
    look), so a stage is measured on lesions exactly as the box will run it before any
    artifact is exported."""
    from engine.inference.stage import LesionStage

    reference = torch_outputs(model, spec.model_spec,
                              np.zeros((1, 1, *spec.crop.size), np.float32))
    shapes = {n: [1, *reference[n].shape[1:]] for n in spec.outputs}
    section = {**_declaration(spec, shapes), "artifacts": []}
    return LesionStage(stage_package(Path("."), section, name, version),
                       TorchStage(model, spec), "torch")


def package_configured_stage(config: dict[str, Any], out: Path, targets: list[str],
                             images: list[np.ndarray], log=print) -> dict[str, Any]:
    """A clinic's own second stage from ``[stage]`` in convert.toml: loaded like the
    package's model (MODULE:FACTORY with weights, or a file), exported and checked on crops
    of ``images`` (grey [0, 1]), with golden cases; its manifest entry.

    Its accuracy on lesions is its makers' to show; the converter proves the artifacts
    compute what the PyTorch model computes and that the box can run the declaration."""
    from converters.source import load_source

    crop = dict(config["crop"])
    size = crop.get("size", [64, 64])
    spec = StageSpec(name=str(config.get("name", "stage")),
                     crop=CropSpec.from_dict({**crop, "size": size}),
                     outputs=tuple(config["outputs"]), heads=tuple(config["heads"]),
                     input_name=str(config.get("input_name", "crop")),
                     meanings=dict(config.get("output_meanings", {})),
                     purpose=str(config.get("purpose", StageSpec.purpose)))
    model = load_source(str(config["model"]), config.get("weights"),
                        config.get("factory_kwargs")).exportable
    crops = check_crops(images, spec)
    artifacts = export_stage(model, out, spec, targets, crops, log)
    reference = torch_outputs(model, spec.model_spec, crops[:1])
    shapes = {n: [1, *reference[n].shape[1:]] for n in spec.outputs}
    cases = golden_cases(out, model, spec, crops, [0, len(crops) // 2])
    return stage_section(spec, shapes, artifacts, cases, {"check_crops": len(crops)})
