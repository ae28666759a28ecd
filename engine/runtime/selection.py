"""Choose, load and warm up the backend and artifact that run a model package.

``[runtime] backend`` and ``precision`` narrow the candidates, every
(available backend, artifact it can run) pair. With one candidate left it is
loaded; with several (``auto``) all are loaded and timed on this machine, in
interleaved rounds on a random input of the manifest's shape, and the fastest
wins. (All candidates are loaded at once while measuring: fine for the small,
compressed models the box runs; the losers are closed afterwards.)

The service passes a ``timings`` file: then the candidates are timed in a
child process of their own (:func:`measure_in_child`), so the runtimes that
lose never load into the service, which loads only the winner; the timings are
kept (``timings_cache.py``) and a later start on the same package, CPU and
runtimes loads the winner at once. A child that cannot start falls back to
timing in the service itself.
A lower precision or a heavier runtime has to earn its place: among candidates
within ``TIE_TOLERANCE`` or ``TIE_MS`` of the fastest, the highest precision is
kept, then the runtime that holds less memory, so int8 beats fp32 and OpenVINO
beats TFLite only when the box would notice the difference. Candidates that fail to load are
skipped with the reason logged and kept for ``clinibox status``.
"""

from __future__ import annotations

import logging
import pickle
import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from clinibox_common.child_call import ChildEnded, answer_parent, call_child
from clinibox_common.contracts.backends import BACKENDS
from clinibox_common.contracts.manifest import Artifact, ModelPackage
from clinibox_common.errors import CliniboxError
from engine.runtime import registry
from engine.runtime.base import RuntimeBackend
from engine.runtime.timings_cache import read_timings, timings_key, write_timings
from engine.settings import RuntimeConfig

log = logging.getLogger(__name__)

#: timings within this fraction of the fastest count as a tie
TIE_TOLERANCE = 0.05
#: ... and timings within this many ms a run of it: what the pipeline cannot see. Each
#: instance costs the box about 10 ms besides the first stage's run (decoding, checks,
#: preprocessing, the second stage: 20 core-ms on 2 cores of an Intel Xeon; more on slower
#: CPUs). There, the demo model on OpenVINO INT8 (0.53 ms) against TFLite FP32 (0.86 ms)
#: drained about 83 against 80 CT slices a second (run to run 79-84 and 78-83), and
#: OpenVINO held 67 MB more in the service: the whole appliance 250 MB steady, over its
#: 200 (docs/decisions/0011-runtime-ties-go-to-the-lighter-runtime.md)
TIE_MS = 0.5
#: precisions from most to least accurate
PRECISION_RANK = {"fp32": 0, "fp16": 1, "int8": 2}
#: seconds of timed runs shared by all candidates (loading and warm-up come on top)
MEASURE_BUDGET_S = 1.0
#: timing rounds; each candidate runs once per round
ROUNDS = 3
MIN_RUNS = 3
MAX_RUNS = 200
WARM_UP_RUNS = 2
#: longest a child process may take to load and time every candidate
CHILD_TIMEOUT_S = 300.0


class SelectionError(CliniboxError, RuntimeError):
    """No backend/artifact of the package can run with this configuration."""

    kind = "no runnable artifact"


@dataclass(frozen=True)
class Candidate:
    """One way to run the package: a backend key and an artifact it can load."""

    backend: str
    artifact: Artifact
    #: added to the label when the package has two artifacts of one format/precision
    tag: str = ""

    @property
    def label(self) -> str:
        """E.g. ``openvino:onnx/int8`` (plus `` (file name)`` when ambiguous)."""
        return f"{self.backend}:{self.artifact.label}{self.tag}"


@dataclass
class LoadedModel:
    """The loaded, warmed-up backend, its artifact and why it was chosen."""

    backend: RuntimeBackend
    artifact: Artifact
    #: median milliseconds per run of every candidate measured, by label
    ms_per_run: dict[str, float]
    reason: str
    #: candidates that could not be loaded or run, by label, with the error
    skipped: dict[str, str] = field(default_factory=dict)
    #: the chosen candidate's label, e.g. ``onnxruntime:onnx/fp32``
    label: str = ""
    #: the other measured candidates, best first: where to fall back when this one fails
    alternatives: list[Candidate] = field(default_factory=list)
    #: candidates tried before this one that failed their check, by label, with why
    fell_back_from: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        """Release the backend."""
        self.backend.close()

    def status_lines(self) -> list[str]:
        """Human-readable lines for ``clinibox status``."""
        lines = [f"runtime: {self.label} on {self.backend.describe()} — {self.reason}"]
        for label, ms in sorted(self.ms_per_run.items(), key=lambda item: item[1]):
            mark = "*" if label == self.label else " "
            lines.append(f" {mark} {label:28s} {ms:8.3f} ms/run")
        lines += [f"   {label:28s} skipped: {why}" for label, why in self.skipped.items()]
        lines += [f"   {label:28s} failed its check, fell back: {why}"
                  for label, why in self.fell_back_from.items()]
        return lines


# -- candidates -------------------------------------------------------------
def candidates(package: ModelPackage, config: RuntimeConfig) -> list[Candidate]:
    """Every (backend, artifact) pair the config allows, available backends only.

    An explicit backend that is not installed raises BackendUnavailable (with
    the pip extra); an explicit backend or precision the package has no
    artifact for raises SelectionError saying what the package has.
    """
    artifacts = package.artifacts
    have = ", ".join(a.label for a in artifacts)
    if config.precision != "auto":
        artifacts = [a for a in artifacts if a.precision == config.precision]
        if not artifacts:
            raise SelectionError(
                f"model package {package.model_id} has no {config.precision} artifact "
                f'(it has {have}); set [runtime] precision to "auto" or one it has'
            )
    if config.backend != "auto":
        registry.backend_class(config.backend)  # BackendUnavailable names the extra
        runnable = registry.FORMATS[config.backend]
        found = [c for (key, _path), c in _every_pair(package, config).items()
                 if key == config.backend]
        if not found:
            wanted = f"{config.precision} " if config.precision != "auto" else ""
            raise SelectionError(
                f"model package {package.model_id} has no {wanted}artifact that "
                f"{config.backend} can run (it runs {', '.join(runnable)}; the package "
                f"has {have})"
            )
        return found
    available = registry.available_backends()
    found = [c for (key, _path), c in _every_pair(package, config).items() if key in available]
    if not found:
        raise SelectionError(
            f"no installed runtime backend can run model package {package.model_id} "
            f"(it has {have}; installed: {', '.join(available) or 'none'})"
        )
    return found


# -- the decision -----------------------------------------------------------
def choose_fastest(
    measured: Sequence[tuple[Candidate, float]], tolerance: float = TIE_TOLERANCE,
    tie_ms: float = TIE_MS,
) -> Candidate:
    """The fastest candidate; near-ties (within ``tolerance`` of the fastest time or
    ``tie_ms`` of it, whichever is wider) go to higher precision, then to the runtime that
    holds less memory (``BackendInfo.resident_mb``: OpenVINO adds about 60 MB more to the
    service than TFLite), then to speed."""
    if not measured:
        raise ValueError("no measured candidates to choose from")
    fastest = min(ms for _, ms in measured)
    limit = max(fastest * (1 + tolerance), fastest + tie_ms)
    near = [(c, ms) for c, ms in measured if ms <= limit]

    def precision_memory_speed(item: tuple[Candidate, float]) -> tuple[int, int, float]:
        candidate, ms = item
        info = BACKENDS.get(candidate.backend)
        return (PRECISION_RANK.get(candidate.artifact.precision, len(PRECISION_RANK)),
                info.resident_mb if info else 0, ms)

    return min(near, key=precision_memory_speed)[0]


def ranked(measured: Sequence[tuple[Candidate, float]],
           tolerance: float = TIE_TOLERANCE, tie_ms: float = TIE_MS) -> list[Candidate]:
    """Every measured candidate in order of preference: ``choose_fastest`` applied again
    to what is left, so a fallback is the best of the rest."""
    left, order = list(measured), []
    while left:
        best = choose_fastest(left, tolerance, tie_ms)
        order.append(best)
        left = [(c, ms) for c, ms in left if c is not best]
    return order


# -- measuring --------------------------------------------------------------
def sample_inputs(package: ModelPackage, seed: int = 0) -> dict[str, np.ndarray]:
    """A random input of the manifest's shape and dtype (normalised-image range)."""
    spec = package.input
    rng = np.random.default_rng(seed)
    return {spec.name: rng.standard_normal(spec.shape).astype(spec.dtype)}


def load_candidate(
    candidate: Candidate, package: ModelPackage, config: RuntimeConfig
) -> RuntimeBackend:
    """A new backend with the candidate's artifact loaded, speaking the manifest's names."""
    outputs: list[dict[str, Any]] = package.manifest["outputs"]
    shapes = [o["shape"] for o in outputs] if all("shape" in o for o in outputs) else None
    backend = registry.create_backend(candidate.backend)
    backend.load(
        candidate.artifact.path,
        threads=config.threads,
        device=config.device,
        input_names=[package.input.name],
        output_names=[o["name"] for o in outputs],
        output_shapes=shapes,
    )
    return backend


def time_runs(
    backend: RuntimeBackend,
    inputs: dict[str, np.ndarray],
    budget_s: float,
    min_runs: int = MIN_RUNS,
    max_runs: int = MAX_RUNS,
) -> list[float]:
    """Milliseconds of each ``infer`` in a burst of about ``budget_s`` seconds."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (
        len(times) < min_runs or time.perf_counter() - start < budget_s
    ):
        began = time.perf_counter()
        backend.infer(inputs)
        times.append((time.perf_counter() - began) * 1000.0)
    return times


def _check_outputs(
    backend: RuntimeBackend, outputs: dict[str, np.ndarray], expected: list[str]
) -> None:
    if list(outputs) != expected:
        raise RuntimeError(f"returned outputs {list(outputs)}, the manifest lists {expected}")
    for name, value in outputs.items():
        if not np.all(np.isfinite(value)):
            raise RuntimeError(f"output {name!r} is not finite on {backend.describe()}")


def _prepare(
    candidate: Candidate, package: ModelPackage, config: RuntimeConfig, inputs: dict
) -> RuntimeBackend:
    """Load, check the outputs once and warm up; close again on any failure."""
    backend = load_candidate(candidate, package, config)
    try:
        expected = [o["name"] for o in package.manifest["outputs"]]
        _check_outputs(backend, backend.infer(inputs), expected)
        backend.warm_up(inputs, runs=WARM_UP_RUNS)
    except Exception:
        backend.close()
        raise
    return backend


def _skip(skipped: dict[str, str], candidate: Candidate, exc: Exception) -> None:
    skipped[candidate.label] = f"{type(exc).__name__}: {exc}"
    log.warning("runtime candidate %s skipped: %s", candidate.label, exc)


def measure(
    loaded: list[tuple[Candidate, RuntimeBackend]],
    inputs: dict[str, np.ndarray],
    budget_s: float,
    skipped: dict[str, str],
) -> list[tuple[Candidate, float]]:
    """Median ms/run of each loaded candidate, timed in interleaved rounds.

    Rounds (rather than one long run each) spread a passing load on a shared
    CPU over every candidate. Each burst starts with a quarter of its length
    untimed: a runtime whose worker threads still spin after the previous
    candidate's burst (ONNX Runtime's do) would otherwise slow the next one.
    A candidate that fails while running is closed and moved to ``skipped``.
    """
    times: dict[int, list[float]] = {i: [] for i in range(len(loaded))}
    burst_s = budget_s / max(1, len(loaded) * ROUNDS)
    for _ in range(ROUNDS):
        for i, (candidate, backend) in enumerate(loaded):
            if i not in times:
                continue
            try:
                time_runs(backend, inputs, burst_s / 4, min_runs=1)  # settle, untimed
                times[i] += time_runs(backend, inputs, burst_s, min_runs=MIN_RUNS)
            except Exception as exc:  # a runtime failure skips this candidate
                backend.close()
                _skip(skipped, candidate, exc)
                del times[i]
    return [(loaded[i][0], float(np.median(samples))) for i, samples in times.items()]


# -- timing in a child process, kept between starts ---------------------------
def _time_candidates(package: ModelPackage, config: RuntimeConfig, budget_s: float,
                     only: tuple[str, str] | None = None
                     ) -> tuple[list[tuple[str, str, float]], dict[str, str]]:
    """Load, warm up and time every candidate (``only``: the one (backend, artifact path)),
    then close them all (the child's job): (backend, artifact path, ms/run) of each
    measured, and the skipped ones by label."""
    inputs = sample_inputs(package)
    skipped: dict[str, str] = {}
    loaded: list[tuple[Candidate, RuntimeBackend]] = []
    for candidate in candidates(package, config):
        if only is not None and (candidate.backend, str(candidate.artifact.path)) != only:
            continue
        try:
            loaded.append((candidate, _prepare(candidate, package, config, inputs)))
        except Exception as exc:  # any failure skips this candidate, with its reason
            _skip(skipped, candidate, exc)
    measured = measure(loaded, inputs, budget_s, skipped)
    for _candidate, backend in loaded:
        backend.close()
    return [(c.backend, str(c.artifact.path), ms) for c, ms in measured], skipped


def measure_in_child(package: ModelPackage, config: RuntimeConfig, budget_s: float
                     ) -> tuple[list[tuple[str, str, float]], dict[str, str]]:
    """:func:`_time_candidates` in a fresh interpreter (``python -m
    engine.runtime.selection``), which exits after: the runtimes it imports never
    stay mapped in the service.

    A plain child process, not a multiprocessing pool: spawning through
    multiprocessing leaves its resource-tracker process running beside the
    service for good (about 8 MB). When the child is killed by a signal (a runtime
    crashing on this CPU or on this artifact), every candidate is timed again in a
    child of its own and the one that crashes is skipped with its reason, so that
    the service never loads it (:func:`_measure_each_in_child`). A child that ends
    otherwise (a sandbox refusing it) raises ChildProcessError; one that hangs is
    killed and raises TimeoutExpired after ``CHILD_TIMEOUT_S``.
    """
    try:
        answer = call_child("engine.runtime.selection", (package, config, budget_s, None),
                            CHILD_TIMEOUT_S)
    except ChildEnded as exc:
        if not exc.crashed:
            raise ChildProcessError(f"the timing process ended with {exc}") from None
        log.warning("a runtime crashed the timing process (%s): timing each candidate in a "
                    "process of its own", exc)
        return _measure_each_in_child(package, config, budget_s)
    return pickle.loads(answer)


def _measure_each_in_child(package: ModelPackage, config: RuntimeConfig, budget_s: float
                           ) -> tuple[list[tuple[str, str, float]], dict[str, str]]:
    """Every candidate timed alone in a fresh interpreter; one whose child crashes or hangs
    is skipped, its reason kept with the timings (so a later start never loads it)."""
    pairs = _every_pair(package, config)
    measured: list[tuple[str, str, float]] = []
    skipped: dict[str, str] = {}
    for (key, path), candidate in pairs.items():
        try:
            answer = call_child("engine.runtime.selection",
                                (package, config, budget_s / max(len(pairs), 1), (key, path)),
                                CHILD_TIMEOUT_S)
        except ChildEnded as exc:
            _skip(skipped, candidate, RuntimeError(
                f"{'crashed' if exc.crashed else 'ended'} the runtime's process here ({exc})"))
            continue
        except subprocess.TimeoutExpired:
            _skip(skipped, candidate, RuntimeError(
                f"the runtime's process hung here (killed after {CHILD_TIMEOUT_S:.0f} s)"))
            continue
        alone, reasons = pickle.loads(answer)
        measured += alone
        skipped.update(reasons)
    return measured, skipped


def probe_in_child(package: ModelPackage, config: RuntimeConfig, candidate: Candidate
                   ) -> str | None:
    """Load and run ``candidate`` in a fresh interpreter before the service loads it (a
    fallback nobody timed here): None when it ran there, else why not. A runtime that
    crashes or hangs on it, or cannot load it, must not take the service down; where no
    child can be started (a sandbox refusing it), the service loads it as before."""
    only = (candidate.backend, str(candidate.artifact.path))
    try:
        answer = call_child("engine.runtime.selection",
                            (package, replace(config, precision="auto"), 0.0, only),
                            CHILD_TIMEOUT_S)
    except ChildEnded as exc:
        if exc.crashed:
            return f"crashed the runtime's process here ({exc})"
        log.warning("could not try %s in a process of its own (%s)", candidate.label, exc)
        return None
    except subprocess.TimeoutExpired:
        return f"the runtime's process hung here (killed after {CHILD_TIMEOUT_S:.0f} s)"
    except OSError as exc:
        log.warning("could not try %s in a process of its own (%s)", candidate.label, exc)
        return None
    measured, skipped = pickle.loads(answer)
    if measured:
        return None
    return skipped.get(candidate.label, "did not run in a process of its own")


def _timing_child() -> None:
    """The child's side of :func:`measure_in_child` (``child_call.answer_parent``)."""
    answer_parent(lambda arguments: pickle.dumps(_time_candidates(*arguments)))


#: (backend, artifact format, precision) -> the machines (``platform.machine()``) where the
#: backend is not given such an artifact, found wrong there by ``clinibox cpu-check``:
#: OpenVINO's ARM plugin refuses ONNX Runtime's QDQ INT8 ONNX on ARMv8.0 and, on ARMv8.2,
#: answered 3 of a ResNet-18's 8 golden cases out of tolerance
#: (docs/decisions/0013-openvino-not-given-onnx-int8-on-arm.md). OpenVINO runs its own INT8
#: IR there.
NOT_GIVEN_ON: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("openvino", "onnx", "int8"): ("aarch64", "arm64"),
}


def _given_here(key: str, artifact: Artifact) -> bool:
    """Whether backend ``key`` may run ``artifact`` on this machine (:data:`NOT_GIVEN_ON`)."""
    return platform.machine() not in NOT_GIVEN_ON.get(
        (key, artifact.format, artifact.precision), ())


def _every_pair(package: ModelPackage, config: RuntimeConfig
                ) -> dict[tuple[str, str], Candidate]:
    """Every (backend, artifact) pair the precision allows on this machine, by (key, path),
    importing nothing; a pair's tag names the file when the package has two artifacts of
    one label."""
    labels = [a.label for a in package.artifacts]
    return {(key, str(a.path)): Candidate(key, a, f" ({a.path.name})"
                                          if labels.count(a.label) > 1 else "")
            for a in package.artifacts
            if config.precision == "auto" or a.precision == config.precision
            for key in registry.backends_for_format(a.format) if _given_here(key, a)}


def _select_timed_elsewhere(package: ModelPackage, config: RuntimeConfig, budget_s: float,
                            timings: Path) -> LoadedModel | None:
    """Load only the fastest candidate (the next when it fails here), from the timings kept in
    ``timings`` or, when they are stale, measured now in a child process and kept. None when
    the child cannot run (the caller then times here)."""
    key = timings_key(package, config)
    kept = read_timings(timings, key)
    if kept is not None:
        measured_keys, skipped, when = kept["timings"], dict(kept["skipped"]), "at an earlier start"
    else:
        try:
            measured_keys, skipped = measure_in_child(package, config, budget_s)
        except Exception as exc:  # e.g. no process can be spawned in this sandbox
            log.warning("runtime candidates not timed in a child process (%s); timing here",
                        exc)
            return None
        write_timings(timings, key, measured_keys, skipped)
        when = "in a child process"
    pairs = _every_pair(package, config)
    measured = [(pairs[(k, p)], float(ms)) for k, p, ms in measured_keys if (k, p) in pairs]
    for candidate, ms in measured:
        log.info("runtime candidate %s: %.3f ms/run (timed %s)", candidate.label, ms, when)
    order = ranked(measured)
    inputs = sample_inputs(package)
    for chosen in order:
        try:
            backend = _prepare(chosen, package, config, inputs)
        except Exception as exc:  # it ran where it was timed, not here: the next one
            _skip(skipped, chosen, exc)
            continue
        return LoadedModel(
            backend=backend, artifact=chosen.artifact,
            ms_per_run={c.label: ms for c, ms in measured},
            reason=f"{_reason(config, chosen, measured)}; timed {when}", skipped=skipped,
            label=chosen.label, alternatives=[c for c in order if c is not chosen])
    reasons = "; ".join(f"{label}: {why}" for label, why in skipped.items())
    raise SelectionError(f"no runtime candidate for {package.model_id} loads: {reasons}")


# -- the entry point --------------------------------------------------------
def select_backend(
    package: ModelPackage, config: RuntimeConfig, *, budget_s: float = MEASURE_BUDGET_S,
    timings: Path | None = None,
) -> LoadedModel:
    """Load, warm up and return the backend/artifact that runs ``package`` here.

    With a ``timings`` file (the service's) and several ``auto`` candidates,
    they are timed in a child process once per package, CPU and runtimes and
    only the winner loads here. Otherwise every candidate is loaded, warmed up
    and timed here (``budget_s`` seconds of timed runs in all) and the losers
    are closed. Raises BackendUnavailable for an explicit backend that is not
    installed and SelectionError when nothing fits the config or nothing loads.
    """
    if timings is not None and config.backend == "auto" and len(_every_pair(package,
                                                                            config)) > 1:
        chosen = _select_timed_elsewhere(package, config, budget_s, timings)
        if chosen is not None:
            return chosen
    found = candidates(package, config)
    inputs = sample_inputs(package)
    skipped: dict[str, str] = {}
    loaded: list[tuple[Candidate, RuntimeBackend]] = []
    for candidate in found:
        try:
            loaded.append((candidate, _prepare(candidate, package, config, inputs)))
        except Exception as exc:  # any failure skips this candidate, with its reason
            _skip(skipped, candidate, exc)
    measured = measure(loaded, inputs, budget_s, skipped)
    if not measured:
        reasons = "; ".join(f"{label}: {why}" for label, why in skipped.items())
        raise SelectionError(f"no runtime candidate for {package.model_id} loads: {reasons}")
    for candidate, ms in measured:
        log.info("runtime candidate %s: %.3f ms/run", candidate.label, ms)
    order = ranked(measured)
    chosen = order[0]
    backend = next(b for c, b in loaded if c is chosen)
    for candidate, other in loaded:
        if candidate is not chosen:
            other.close()
    return LoadedModel(
        backend=backend,
        artifact=chosen.artifact,
        ms_per_run={c.label: ms for c, ms in measured},
        reason=_reason(config, chosen, measured),
        skipped=skipped,
        label=chosen.label,
        alternatives=order[1:],
    )


def fallback_candidates(package: ModelPackage, config: RuntimeConfig,
                        tried: Sequence[Candidate]) -> list[Candidate]:
    """Candidates outside the measured set, for when every measured one failed its check.

    The configured backend's other artifacts (with ``auto``, every available
    backend's), highest precision first (FP32 before FP16 before INT8):
    ``[runtime] precision = "int8"`` must not leave a box down when a verified
    FP32 artifact sits beside the INT8 one. An explicitly configured backend is
    not swapped for another: its runtime is what the box was set up (and its
    service sandboxed) for.
    """
    seen = {(c.backend, c.artifact.path) for c in tried}
    try:
        found = candidates(package, replace(config, precision="auto"))
    except (SelectionError, ImportError):
        return []
    found.sort(key=lambda c: PRECISION_RANK.get(c.artifact.precision, len(PRECISION_RANK)))
    return [c for c in found if (c.backend, c.artifact.path) not in seen]


def load_fallback(previous: LoadedModel, candidate: Candidate, package: ModelPackage,
                  config: RuntimeConfig, failed: dict[str, str]) -> LoadedModel:
    """Load ``candidate`` in place of ``previous`` (already closed), whose check failed.

    ``failed`` holds every candidate that failed so far, by label, with why; the
    result keeps ``previous``'s timings and skips. Raises what loading raises.
    """
    backend = _prepare(candidate, package, config, sample_inputs(package))
    ms = previous.ms_per_run.get(candidate.label)
    timing = f" ({ms:.3f} ms/run)" if ms is not None else ""
    return LoadedModel(
        backend=backend,
        artifact=candidate.artifact,
        ms_per_run=previous.ms_per_run,
        reason=f"fell back to {candidate.label}{timing}: {', '.join(failed)} failed",
        skipped=previous.skipped,
        label=candidate.label,
        alternatives=[c for c in previous.alternatives if c is not candidate],
        fell_back_from=dict(failed),
    )


def _reason(
    config: RuntimeConfig, chosen: Candidate, measured: list[tuple[Candidate, float]]
) -> str:
    asked = [
        f"{k}={v}"
        for k, v in (("backend", config.backend), ("precision", config.precision))
        if v != "auto"
    ]
    prefix = f"{' and '.join(asked)} set in [runtime]" if asked else "auto"
    if len(measured) == 1:
        return f"{prefix}; the only candidate"
    ms = {c.label: t for c, t in measured}
    fastest_label, fastest_ms = min(ms.items(), key=lambda item: item[1])
    text = f"{prefix}; fastest of {len(measured)} measured here ({ms[chosen.label]:.3f} ms/run)"
    if fastest_label != chosen.label:
        fastest = next(c for c, _t in measured if c.label == fastest_label)
        kept = ("the higher precision" if PRECISION_RANK.get(chosen.artifact.precision, 9)
                < PRECISION_RANK.get(fastest.artifact.precision, 9) else "the lighter runtime")
        text += (
            f"; {fastest_label} ({fastest_ms:.3f} ms/run) is within "
            f"{TIE_TOLERANCE:.0%} or {TIE_MS:g} ms, so {kept} is kept"
        )
    return text


if __name__ == "__main__":
    _timing_child()
