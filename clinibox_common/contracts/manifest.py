"""The model package manifest: its schema, its parts and the checks on its files.

Shared by the box (which loads packages), the converter (which writes them) and
the runtime (which reads artifacts and tensor specs from them).

A package is a folder with a signed manifest and the artifacts it lists. The
manifest says everything the box needs to run the model, so the box carries
no model-specific code. Fields (``schema`` = ``clinibox.model-package/1``)::

    name, version, task, intended_use, modalities, labels
    inputs:  [{name, shape [N,C,H,W], dtype, layout "NCHW", normalisation {mean, std}}]
    outputs: [{name, meaning}]
    heads: [{kind, output names, ...}]         # optional: contracts/heads.py
    ood: {method "mahalanobis", output, mean, inverse_covariance, threshold}  # optional
    thresholds: {finding, alert, box}          # probabilities, 0..1
    preprocessing:  {name, params}             # a name from imaging/preprocess.py
    postprocessing: {name, params}             # a name from inference/postprocess.py
    artifacts: [{format "onnx"|"openvino-ir"|"tflite", precision "fp32"|"fp16"|"int8",
                 path, files {relative path: sha256}, validation {metric: value},
                 thresholds {finding}}]    # optional: this artifact's own operating point
                                           # (an INT8 artifact's, below the package's)
    provenance: {...}                          # source checkpoint hash, training settings
    golden_cases: [{input, sha256, expected {output name or "lesion_probability": value},
                    tolerance}]
    learning: {path, files, maps_output, score_output, head_output, sharpness, channels}
                                               # optional: the trainable model (decision 0056)
    stages: [{name, crop, inputs, outputs, heads, artifacts, golden_cases}]   # optional:
                                               # a second stage on each lesion (contracts/stages.py)
    signature: {algorithm "ed25519", key_id, value}   # over the canonical manifest

What each key means is :data:`KEYS`. ``models/package.py`` loads a package: it
checks the schema and every file's sha256 here, and the signature with
``contracts/signing.py``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinibox_common.contracts.backends import ARTIFACT_FORMATS as FORMATS
from clinibox_common.contracts.backends import PRECISIONS
from clinibox_common.contracts.heads import HeadsError, parse_heads, parse_validated_range
from clinibox_common.contracts.stages import StageError, stage_manifest, stages_of
from clinibox_common.errors import CliniboxError

SCHEMA = "clinibox.model-package/1"
#: The demo model's package name: trained on procedurally generated phantoms, never for
#: clinical use. The hospital, which sees only model ids, says so wherever it shows one.
DEMO_MODEL_NAME = "clinibox-demo-lesion"
_VERSION = re.compile(r"^\d+(\.\d+){0,3}$")

#: Every manifest key, by path (``a.b``; ``a[]`` is each item of the list ``a``), with what
#: it means: the reference's table (docs/reference/manifest.md). The box reads the keys of
#: the schema above; ``provenance``, ``conversion`` and most of ``validation`` are the
#: converter's record, for its report (the device pages show each artifact's profiles and
#: validation).
KEYS: dict[str, str] = {
    "schema": f"the manifest's format, always ``{SCHEMA}``",
    "name": "the package (model) name",
    "version": "the package version, dotted numbers (``1.0.0``); ``name@version`` is the "
               "model id shown in results, reports and telemetry",
    "task": "what the model does, in words (``classification``, ``lesion-detection``)",
    "intended_use": "the use the model is validated for, with its clinical warning; shown "
                    "by the device pages, ``clinibox model`` and ``clinibox infer``; "
                    "``DEMONSTRATION ONLY …`` marks every output of the model as a demo's",
    "modalities": "the DICOM modalities the model accepts (empty: any); routing refuses "
                  "others as ``modality_not_accepted``",
    "labels": "the model's finding labels (class names); the only labels an alert may carry",
    "inputs": "the model's input tensors: exactly one NCHW image",
    "inputs[].name": "the input tensor's name in the model",
    "inputs[].shape": "its shape [N, C, H, W]",
    "inputs[].dtype": "its element type (``float32``)",
    "inputs[].layout": "its layout, ``NCHW``",
    "inputs[].normalisation": "how the box scales the preprocessed grey values "
                              "(``(x - mean) / std``)",
    "inputs[].normalisation.mean": "the mean subtracted (the one the model was trained with)",
    "inputs[].normalisation.std": "the standard deviation divided by",
    "outputs": "the model's output tensors, in the model's order",
    "outputs[].name": "the output tensor's name (heads and golden cases name it)",
    "outputs[].shape": "its shape",
    "outputs[].meaning": "what the output holds, in words (``convert.toml`` "
                         "``output_meanings``)",
    "heads": "the output heads the postprocessor reads (optional): see *Heads and the "
             "validated range*",
    "ood": "the validated range (optional): see *Heads and the validated range*",
    "thresholds": "the package's operating thresholds, probabilities 0 … 1",
    "thresholds.finding": "at or above it an image has a finding (the operating point)",
    "thresholds.alert": "at or above it a study raises an alert (sent to the hospital)",
    "thresholds.box": "a detection head's box threshold: a lesion box is kept where its "
                      "centre heatmap peaks at or above it",
    "preprocessing": "how the box turns a decoded frame into the model's input",
    "preprocessing.name": "a preprocessor of ``imaging/preprocess.py`` "
                          "(``letterbox_grey``)",
    "preprocessing.params": "its parameters, by name",
    "postprocessing": "how the box reads the model's outputs",
    "postprocessing.name": "a postprocessor of ``inference/postprocess.py`` "
                           "(``classification``, ``heads``)",
    "postprocessing.params": "its parameters, by name (``input_size`` [H, W] with heads: a "
                             "map's stride is the input size over the map's size)",
    "artifacts": "the runnable files, one per format and precision; the box runs the "
                 "fastest one that passes the golden cases on it",
    "artifacts[].format": "``onnx``, ``openvino-ir`` or ``tflite``",
    "artifacts[].precision": "``fp32``, ``fp16`` or ``int8``",
    "artifacts[].path": "the runnable file, relative to the package folder",
    "artifacts[].files": "every file of the artifact (relative path → sha256), the path "
                         "itself included; a file that does not match refuses the package "
                         "(``tampered``)",
    "artifacts[].profiles": "the deployment profiles (kinds of box: ``onnx``, ``x86-cpu``, "
                            "``intel-npu``, ``arm-cpu``, ``jetson``) the artifact was made "
                            "for (``converters/formats.py``); empty: made as the base of "
                            "the others",
    "artifacts[].validation": "what the converter measured of this artifact against the "
                              "source model on the validation images (AUC, sensitivity, "
                              "specificity and their deltas, agreement, speed, size)",
    "artifacts[].thresholds": "the artifact's own operating thresholds (optional), in "
                              "place of the package's when it runs: an INT8 artifact's "
                              "``finding``, below the package's",
    "artifacts[].thresholds.finding": "the artifact's finding threshold (probability)",
    "artifacts[].conversion": "how the converter made the artifact (method, seconds, "
                              "calibration and quantisation notes); for the report",
    "artifacts[].conversion.operating_threshold": "an INT8 artifact's own finding "
                                                  "threshold and how it was chosen "
                                                  "(``int8_guard_band``)",
    "artifacts[].conversion.operating_threshold.finding": "the artifact's finding threshold "
                                                          "(also its ``thresholds.finding`` "
                                                          "when it differs)",
    "artifacts[].conversion.operating_threshold.guard_band_logit": "how far below the "
        "package's threshold it lies, on the logit scale",
    "artifacts[].conversion.operating_threshold.calibration_images": "the calibration "
        "images the guard band was measured on (never the validation ones)",
    "artifacts[].conversion.operating_threshold.rule": "the rule, in words",
    "artifacts[].runtime_config": "runtime properties the artifact was validated with and "
                                  "must run with (OpenVINO: ``INFERENCE_PRECISION_HINT``); "
                                  "checked when the converter loads it",
    "stages": "a second stage run on each lesion (optional): see *Second stages*",
    "provenance": "where the model came from and how it was converted (the converter's "
                  "record)",
    "provenance.source": "the source model: its kind, reference and files' sha256",
    "provenance.signatures": "the earlier signatures, first signer first, each kept verbatim "
                             "when the package was signed again (``clinibox model sign``: the "
                             "hospital's signature over the maker's); see *Signed again by "
                             "the hospital*",
    "provenance.steps": "each conversion step's figures, by step (distill, prune, export, "
                        "quantize, verify …)",
    "provenance.data": "the data the converter validated and calibrated on",
    "provenance.data.source": "where the images came from",
    "provenance.data.rows": "images per split (``train``, ``calibration``, ``validation``)",
    "provenance.data.clinic_feedback_cases": "how many validation images came from the "
        "clinicians' disagreements (``--extra-validation``; validation only); absent "
        "without them",
    "provenance.gate": "the fidelity gate the artifacts passed (``convert.toml`` ``gate``: "
                       "AUC delta, agreement, sensitivity loss limits for float and INT8)",
    "provenance.threshold_from": "how the package's finding threshold was chosen, in words "
                                 "(from ``convert.toml`` ``thresholds.finding``, or the "
                                 "highest one keeping ``target_sensitivity`` on validation)",
    "provenance.floors": "the least a model had to reach to be packaged",
    "provenance.floors.auc": "the least validation AUC of the source model "
                             "(``floor_auc``)",
    "provenance.floors.sensitivity": "the least sensitivity of every artifact at its "
                                     "operating threshold (``floor_sensitivity``)",
    "learning": "the model federated fine-tuning computes a box's maps with (optional; "
                "decision 0056): the FP32 ONNX model with the maps its score is pooled from "
                "as an output",
    "learning.path": "the file, in the package",
    "learning.files": "it and its sha256, checked as every artifact's",
    "learning.maps_output": "the output holding the final feature maps (``trainable_maps``)",
    "learning.score_output": "the output holding the image's logit",
    "learning.head_output": "the class-activation map the head is (``cam``)",
    "learning.sharpness": "the log-sum-exp pool's sharpness, recovered from the model's "
                          "own logits",
    "learning.channels": "how many maps the head weighs",
    "provenance.federated": "the federated run whose head replaced the source's "
                            "(``--federated-run``; absent otherwise): the run's record "
                            "(``clinibox.federated-run/1``) and the layer it replaced",
    "provenance.federated.layer": "the source model's 1×1 convolution the run's head "
                                  "replaced",
    "provenance.federated.rounds": "how many rounds ran",
    "provenance.federated.boxes_per_round": "how many boxes' heads each round summed "
                                            "(boxes are counted, never named)",
    "provenance.federated.cases_per_round": "how many labelled cases those boxes held",
    "provenance.federated.privacy": "client-level differential privacy: clipping norm, "
                                    "noise multiplier, δ and the ε spent (null: no noise)",
    "provenance.federated.secure_aggregation": "SecAgg+'s shares and reconstruction "
                                               "threshold",
    "provenance.weakness": "every figure below its floor, packaged anyway "
                           "(``--accept-weak-model``): figure, model, value, floor and "
                           "who accepted it; absent for a model above its floors",
    "provenance.source_metrics": "the source model's figures on the validation images",
    "provenance.versions": "the converter's torch and Python versions",
    "provenance.created": "when the package was made (ISO 8601, UTC); the box's clock "
                          "check knows the time cannot be much before it",
    "golden_cases": "reference inputs the box runs on the artifact it chose, before any "
                    "patient image (``models/golden.py``): a mismatch means that artifact "
                    "is not used",
    "golden_cases[].input": "a ``.npy`` input, exactly what the preprocessing makes, "
                            "relative to the package",
    "golden_cases[].sha256": "the input file's sha256",
    "golden_cases[].expected": "the answer the converter measured: ``probability``, a class "
                               "name or an output name → value",
    "golden_cases[].tolerance": "the largest difference allowed from each expected value",
    "golden_cases[].class": "the class of the validation image the case was taken from "
                            "(every class gets an equal share of the cases)",
    "golden_cases[].description": "where the case comes from, in words",
    "signature": "the Ed25519 signature over the canonical manifest (without ``signature``)",
    "signature.algorithm": "``ed25519``",
    "signature.key_id": "the signing key's id: the first 16 hex digits of the public key's "
                        "sha256; the box trusts only keys it holds",
    "signature.value": "the signature, base64",
}
#: objects whose keys :data:`KEYS` does not list one by one: names, figures and notes, or a
#: part with its own contract (heads, ood, stages: ``contracts/heads.py``, ``stages.py``)
OPEN_KEYS = frozenset({
    "heads", "ood", "stages", "preprocessing.params", "postprocessing.params",
    "artifacts[].files", "artifacts[].validation", "artifacts[].conversion",
    "artifacts[].runtime_config", "provenance.source", "provenance.steps", "provenance.gate",
    "provenance.data.rows", "provenance.source_metrics", "provenance.versions",
    "provenance.weakness", "golden_cases[].expected", "learning.files",
})


class PackageError(CliniboxError, ValueError):
    """A model package the box refuses to load, with the reason.

    ``code`` says which check refused it, in words the hospital's alerts use:
    ``invalid`` (manifest), ``signature`` (unsigned, untrusted key, altered
    manifest) or ``tampered`` (an artifact that does not match its sha256).
    """

    kind = "model package refused"

    code = "invalid"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


@dataclass(frozen=True)
class TensorSpec:
    """One model input as the manifest describes it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    layout: str
    mean: float
    std: float


@dataclass(frozen=True)
class Artifact:
    """One runnable file of the package (plus companion files, e.g. OpenVINO .bin)."""

    format: str
    precision: str
    path: Path
    files: dict[str, str]
    validation: dict[str, Any] = field(default_factory=dict)
    #: thresholds of its own that replace the package's (``finding`` of an INT8 artifact)
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """A short name such as ``onnx/int8``."""
        return f"{self.format}/{self.precision}"


@dataclass(frozen=True)
class ModelPackage:
    """A verified model package, ready to hand to a runtime backend."""

    root: Path
    manifest: dict[str, Any]
    signer: str

    @property
    def name(self) -> str:
        """Package name."""
        return self.manifest["name"]

    @property
    def version(self) -> str:
        """Package version."""
        return self.manifest["version"]

    @property
    def model_id(self) -> str:
        """``name@version``, the id shown in results and reports."""
        return f"{self.name}@{self.version}"

    @property
    def input(self) -> TensorSpec:
        """The (single) image input."""
        spec = self.manifest["inputs"][0]
        norm = spec.get("normalisation", {})
        return TensorSpec(
            name=spec["name"],
            shape=tuple(int(d) for d in spec["shape"]),
            dtype=spec.get("dtype", "float32"),
            layout=spec.get("layout", "NCHW"),
            mean=float(norm.get("mean", 0.0)),
            std=float(norm.get("std", 1.0)),
        )

    @property
    def thresholds(self) -> dict[str, float]:
        """Operating thresholds (finding, alert, box)."""
        return {k: float(v) for k, v in self.manifest.get("thresholds", {}).items()}

    def thresholds_for(self, artifact: Artifact) -> dict[str, float]:
        """The operating thresholds when ``artifact`` runs: the package's, with the
        artifact's own in their place."""
        return {**self.thresholds, **artifact.thresholds}

    @property
    def modalities(self) -> list[str]:
        """Modalities this model accepts; empty accepts any."""
        return list(self.manifest.get("modalities", []))

    @property
    def artifacts(self) -> list[Artifact]:
        """Every artifact listed in the manifest."""
        return [
            Artifact(
                format=a["format"],
                precision=a["precision"],
                path=self.root / a["path"],
                files=dict(a["files"]),
                validation=dict(a.get("validation", {})),
                thresholds={k: float(v) for k, v in (a.get("thresholds") or {}).items()},
            )
            for a in self.manifest["artifacts"]
        ]

    @property
    def stages(self) -> list[ModelPackage]:
        """The declared second stages, each as a package of its own (same folder and
        signer; ``contracts/stages.py``)."""
        return [ModelPackage(self.root, stage_manifest(self.manifest, s), self.signer)
                for s in stages_of(self.manifest)]


def is_demo_model(model_id: str | None) -> bool:
    """Whether ``model_id`` (``name@version`` or a name) is the demo model."""
    return bool(model_id) and str(model_id).split("@", 1)[0] == DEMO_MODEL_NAME


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _require(manifest: dict[str, Any], key: str, kind: type) -> Any:
    if key not in manifest:
        raise PackageError(f"manifest is missing {key!r}")
    if not isinstance(manifest[key], kind):
        raise PackageError(f"manifest {key!r} must be a {kind.__name__}")
    return manifest[key]


def check_schema(manifest: dict[str, Any]) -> None:
    """Refuse a manifest whose structure is not what the box can run."""
    if manifest.get("schema") != SCHEMA:
        raise PackageError(f"unknown manifest schema {manifest.get('schema')!r}; want {SCHEMA}")
    for key in ("name", "version", "task"):
        _require(manifest, key, str)
    if not _VERSION.match(manifest["version"]):
        raise PackageError(f"version {manifest['version']!r} is not dotted numbers")
    inputs = _require(manifest, "inputs", list)
    if len(inputs) != 1 or len(inputs[0].get("shape", [])) != 4:
        raise PackageError("the box runs models with exactly one NCHW image input")
    _require(manifest, "outputs", list)
    for key in ("preprocessing", "postprocessing"):
        if "name" not in _require(manifest, key, dict):
            raise PackageError(f"manifest {key!r} needs a name")
    try:
        if "heads" in manifest:
            parse_heads(manifest["heads"])
        if "ood" in manifest:
            parse_validated_range(manifest["ood"])
    except HeadsError as exc:
        raise PackageError(str(exc)) from None
    try:
        stages = stages_of(manifest)
    except StageError as exc:
        raise PackageError(str(exc)) from None
    artifacts = _require(manifest, "artifacts", list)
    if not artifacts:
        raise PackageError("manifest lists no artifacts")
    for art in artifacts + [a for stage in stages for a in stage["artifacts"]]:
        if art.get("format") not in FORMATS:
            raise PackageError(f"artifact format {art.get('format')!r} is not one of {FORMATS}")
        if art.get("precision") not in PRECISIONS:
            raise PackageError(f"artifact precision {art.get('precision')!r} unknown")
        if not isinstance(art.get("files"), dict) or art.get("path") not in art["files"]:
            raise PackageError(f"artifact {art.get('path')!r} must list itself in 'files'")
        _check_thresholds(art.get("thresholds", {}), f"artifact {art.get('path')!r}")
    if "learning" in manifest:
        _check_learning(manifest["learning"])


def _check_learning(learning: Any) -> None:
    """The trainable model federated fine-tuning runs on the box (optional)."""
    if not isinstance(learning, dict) or not isinstance(learning.get("files"), dict) \
            or not isinstance(learning.get("path"), str) \
            or learning["path"] not in learning["files"] \
            or not all(isinstance(k, str) and isinstance(v, str)
                       for k, v in learning["files"].items()):
        raise PackageError("'learning' must name its model ('path') and list it in 'files'")
    channels = learning.get("channels")
    if isinstance(channels, bool) or not isinstance(channels, int) or not 0 < channels <= 4096:
        raise PackageError("'learning.channels' must be a whole number of maps")
    for key in ("maps_output", "score_output"):
        if not isinstance(learning.get(key), str) or not learning[key]:
            raise PackageError(f"'learning' needs {key!r}, an output name")
    sharpness = learning.get("sharpness")
    if isinstance(sharpness, bool) or not isinstance(sharpness, (int, float)) or \
            not 0 < sharpness <= 64:
        raise PackageError("'learning.sharpness' must be a number in (0, 64]")


def _check_thresholds(thresholds: Any, owner: str) -> None:
    """An artifact's own thresholds: known names, probabilities between 0 and 1."""
    if not isinstance(thresholds, dict):
        raise PackageError(f"{owner}: 'thresholds' must be a table of probabilities")
    for name, value in thresholds.items():
        if name not in ("finding", "alert", "box"):
            raise PackageError(f"{owner}: unknown threshold {name!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise PackageError(f"{owner}: threshold {name!r} must lie between 0 and 1")


def _safe_member(root: Path, relative: str) -> Path:
    path = (root / relative).resolve()
    if root.resolve() not in path.parents:
        raise PackageError(f"artifact path {relative!r} points outside the package")
    return path


def check_files(root: Path, manifest: dict[str, Any]) -> None:
    """Check every artifact file and golden case against its listed sha256."""
    listed: dict[str, str] = {}
    for part in (manifest, *manifest.get("stages", [])):
        for art in part["artifacts"]:
            listed.update(art["files"])
        for case in part.get("golden_cases", []):
            listed[case["input"]] = case["sha256"]
    if isinstance(manifest.get("learning"), dict):
        listed.update(manifest["learning"].get("files") or {})
    for relative, expected in listed.items():
        path = _safe_member(root, relative)
        if not path.is_file():
            raise PackageError(f"package file {relative} is missing", "tampered")
        actual = sha256_file(path)
        if actual != expected:
            raise PackageError(
                f"package file {relative} has sha256 {actual[:12]}…, manifest says "
                f"{expected[:12]}… (corrupted or altered)", "tampered"
            )


