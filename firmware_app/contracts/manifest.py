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
    stages: [{name, crop, inputs, outputs, heads, artifacts, golden_cases}]   # optional:
                                               # a second stage on each lesion (contracts/stages.py)
    signature: {algorithm "ed25519", key_id, value}   # over the canonical manifest

``models/package.py`` loads a package: it checks the schema and every file's
sha256 here, and the signature with ``contracts/signing.py``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_app.contracts.backends import ARTIFACT_FORMATS as FORMATS
from firmware_app.contracts.backends import PRECISIONS
from firmware_app.contracts.heads import HeadsError, parse_heads, parse_validated_range
from firmware_app.contracts.stages import StageError, stage_manifest, stages_of
from firmware_app.errors import CliniboxError

SCHEMA = "clinibox.model-package/1"
_VERSION = re.compile(r"^\d+(\.\d+){0,3}$")


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


