"""Golden cases: the package's own reference inputs, run on this box's chosen backend.

A model package carries ``golden/*.npy`` inputs (exactly what the box's
preprocessing makes) with the answer the converter measured and a tolerance.
Running them through the backend and artifact this box actually chose proves
the runtime, the artifact and the postprocessing agree with the workstation:
a wrong runtime build, a damaged accelerator driver or a package meant for
another target shows up here, before a patient image does.

An ``expected`` key is ``probability`` (the postprocessor's finding
probability), a class name of a classifier, or a model output name (its first
value).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clinibox_common.contracts.manifest import ModelPackage, PackageError
from engine.imaging.preprocess import Transform
from engine.inference.heads import decoder_for
from engine.runtime.base import RuntimeBackend
from engine.runtime.selection import (
    Candidate,
    LoadedModel,
    fallback_candidates,
    load_fallback,
    probe_in_child,
    select_backend,
)
from engine.settings import RuntimeConfig

log = logging.getLogger(__name__)

PROBABILITY_KEYS = ("probability", "lesion_probability")


class GoldenCasesFailed(PackageError):
    """A package whose golden cases do not reproduce on this box."""

    code = "golden_cases_failed"


@dataclass(frozen=True)
class GoldenResult:
    """One golden case: what the package expects and what this box computed."""

    input: str
    expected: dict[str, float]
    actual: dict[str, float]
    tolerance: float
    passed: bool
    problem: str = ""

    def describe(self) -> str:
        """E.g. ``golden/finding.npy: probability 0.8511 (expected 0.8511 ± 0.04) ok``."""
        if self.problem:
            return f"{self.input}: {self.problem}"
        parts = [f"{key} {self.actual.get(key, float('nan')):.4f} (expected {want:.4f} "
                 f"± {self.tolerance:g})" for key, want in self.expected.items()]
        return f"{self.input}: {', '.join(parts)} {'ok' if self.passed else 'OUT OF TOLERANCE'}"


@dataclass
class GoldenReport:
    """Every golden case of one package on one backend."""

    model_id: str
    backend_label: str
    results: list[GoldenResult] = field(default_factory=list)
    #: candidates that failed before this one passed, by label, with why
    fell_back_from: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when there is at least one case and every case is within tolerance."""
        return bool(self.results) and all(r.passed for r in self.results)

    def describe(self) -> str:
        """A one-line summary for logs, the self-test table and refusals."""
        if not self.results:
            return f"{self.model_id} has no golden cases; the box cannot check it"
        good = sum(r.passed for r in self.results)
        line = f"{good}/{len(self.results)} golden cases within tolerance on {self.backend_label}"
        failed = [r.describe() for r in self.results if not r.passed]
        line += ": " + "; ".join(failed) if failed else ""
        if self.fell_back_from:
            line += f" (fell back: {', '.join(self.fell_back_from)} failed on this box)"
        return line


def _identity_transform(shape: tuple[int, ...]) -> Transform:
    height, width = int(shape[-2]), int(shape[-1])
    return Transform(scale=1.0, offset_x=0.0, offset_y=0.0, source_width=width,
                     source_height=height)


def _case(package: ModelPackage, backend: RuntimeBackend, case: dict) -> GoldenResult:
    spec = package.input
    relative = str(case.get("input", "?"))
    expected = {str(k): float(v) for k, v in dict(case.get("expected", {})).items()}
    tolerance = float(case.get("tolerance", 0.0))

    def problem(text: str) -> GoldenResult:
        return GoldenResult(relative, expected, {}, tolerance, False, text)

    if not expected:
        return problem("the case states no expected value")
    try:
        tensor = np.load(package.root / relative, allow_pickle=False)
    except (OSError, ValueError) as exc:
        return problem(f"input cannot be read: {exc}")
    if tuple(tensor.shape) != spec.shape:
        return problem(f"input shape {tuple(tensor.shape)} is not the model's {spec.shape}")
    outputs = backend.infer({spec.name: np.ascontiguousarray(tensor, dtype=np.float32)})
    manifest = package.manifest
    try:
        findings = decoder_for(manifest).decode(outputs, _identity_transform(spec.shape))
    except ValueError as exc:
        return problem(f"the outputs cannot be decoded: {exc}")
    actual: dict[str, float] = {}
    for key in expected:
        if key in PROBABILITY_KEYS:
            actual[key] = float(findings.probability)
        elif key in findings.classes:
            actual[key] = float(findings.classes[key])
        elif key in outputs:
            actual[key] = float(np.asarray(outputs[key]).ravel()[0])
        else:
            return problem(f"expected value {key!r} is neither the probability, a class "
                           "nor an output of the model")
    passed = all(np.isfinite(actual[k]) and abs(actual[k] - v) <= tolerance
                 for k, v in expected.items())
    return GoldenResult(relative, expected, actual, tolerance, passed)


def run_golden_cases(package: ModelPackage, backend: RuntimeBackend,
                     backend_label: str) -> GoldenReport:
    """Run every golden case of ``package`` on an already loaded ``backend``."""
    report = GoldenReport(package.model_id, backend_label)
    for case in package.manifest.get("golden_cases", []):
        try:
            report.results.append(_case(package, backend, case))
        except Exception as exc:  # a runtime that crashes on the case fails it, with why
            report.results.append(GoldenResult(
                str(case.get("input", "?")), {}, {}, 0.0, False,
                f"the backend failed: {type(exc).__name__}: {exc}"[:300]))
    return report


def load_backend(package: ModelPackage, runtime: RuntimeConfig,
                 timings: Path | None = None) -> LoadedModel:
    """Choose and load the backend as the service does (``timings``: the service's kept
    runtime timings, see ``runtime/selection.py``); a failure is a PackageError
    (``load_failed``)."""
    try:
        return select_backend(package, runtime, timings=timings)
    except (RuntimeError, ImportError) as exc:  # SelectionError, BackendUnavailable, …
        raise PackageError(f"{package.model_id} cannot be loaded on this box: {exc}",
                           "load_failed") from exc


def load_verified(package: ModelPackage, runtime: RuntimeConfig, timings: Path | None = None
                  ) -> tuple[LoadedModel, GoldenReport]:
    """Load the backend as the service does and keep the first candidate whose golden
    cases pass, falling back through the other measured candidates, then the rest of
    the package's artifacts for the configured backend (FP32 first), so a bad INT8
    kernel on an untested CPU costs speed, not the box.

    Returns the loaded model (``fell_back_from`` names every candidate that failed, with
    why) and its passing report. Raises PackageError (``load_failed``) when nothing
    loads and GoldenCasesFailed, with every candidate's reason, when none passes.
    """
    loaded = load_backend(package, runtime, timings)
    failed: dict[str, str] = {}
    queue = list(loaded.alternatives)
    tried = [*queue]
    while True:
        report = run_golden_cases(package, loaded.backend, loaded.label)
        if report.passed:
            report.fell_back_from = dict(failed)
            if failed:
                log.warning("%s: %s; %s", package.model_id, loaded.reason, report.describe())
            return loaded, report
        failed[loaded.label] = report.describe()
        log.warning("%s fails its golden cases on %s: %s", package.model_id, loaded.label,
                    report.describe())
        loaded.close()
        replacement = None
        while replacement is None:
            if not queue:
                more = fallback_candidates(package, runtime, tried)
                tried += more
                queue += _runnable(package, runtime, more, failed, loaded.skipped)
            if not queue:
                raise GoldenCasesFailed(
                    f"no artifact of {package.model_id} passes its golden cases on this box: "
                    + "; ".join(f"{label}: {why}" for label, why in failed.items()))
            candidate = queue.pop(0)
            try:
                replacement = load_fallback(loaded, candidate, package, runtime, failed)
            except Exception as exc:  # a fallback that does not load is one more failure
                failed[candidate.label] = f"does not load: {type(exc).__name__}: {exc}"[:300]
        loaded = replacement


def _runnable(package: ModelPackage, runtime: RuntimeConfig, found: list[Candidate],
              failed: dict[str, str], skipped: dict[str, str]) -> list[Candidate]:
    """Of fallbacks nobody timed here, those that load and run in a process of their own
    (``probe_in_child``): one the timing skipped, or one that crashes its probe, is a
    failure with its reason and is never loaded into the service."""
    runnable = []
    for candidate in found:
        if candidate.label in failed:
            continue
        why = skipped.get(candidate.label) or probe_in_child(package, runtime, candidate)
        if why:
            failed[candidate.label] = f"not loaded here: {why}"[:300]
            log.warning("%s: fallback %s not loaded: %s", package.model_id, candidate.label, why)
        else:
            runnable.append(candidate)
    return runnable


def check_golden(package: ModelPackage, runtime: RuntimeConfig, timings: Path | None = None
                 ) -> GoldenReport:
    """Load as the service would (falling back like it; with the service's ``timings``
    file, keeping the timings for its next start), return the report, release it.

    Raises GoldenCasesFailed when no candidate passes.
    """
    loaded, report = load_verified(package, runtime, timings)
    loaded.close()
    return report


def require_golden(report: GoldenReport) -> GoldenReport:
    """Return ``report`` when it passed; raise GoldenCasesFailed saying why otherwise."""
    if not report.passed:
        raise GoldenCasesFailed(report.describe())
    return report
