"""Speed and size of one artifact, measured through the box's own runtime backend."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

from converters.artifacts import ArtifactRecord, open_artifact
from converters.spec import ModelSpec

WARM_UP_RUNS = 5


def benchmark(root: Path, record: ArtifactRecord, spec: ModelSpec, *, threads: int = 1,
              runs: int = 50) -> dict:
    """Median and p90 milliseconds per image (batch 1) over ``runs`` after a warm-up.

    Returns ``ms_per_image``, ``ms_p90``, ``size_bytes`` (all of the artifact's
    files), ``threads``, ``backend`` (key) and ``runtime`` (its description).
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, not {runs}")
    root = Path(root)
    backend = open_artifact(root, record, spec, threads=threads)
    try:
        x = np.random.default_rng(0).standard_normal(spec.input_shape).astype(np.float32)
        feed = {spec.input_name: x}
        backend.warm_up(feed, runs=WARM_UP_RUNS)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            backend.infer(feed)
            times.append((time.perf_counter() - start) * 1000.0)
        runtime = backend.describe()
    finally:
        backend.close()
    return {
        "ms_per_image": round(float(np.median(times)), 4),
        "ms_p90": round(float(np.percentile(times, 90)), 4),
        "size_bytes": sum((root / rel).stat().st_size for rel in record.files),
        "threads": threads,
        "backend": backend.key,
        "runtime": runtime,
        "cpu": cpu_name(),
    }


#: an artifact this much slower than its FP32 source is marked slower (run-to-run noise of a
#: median of 50 runs stays under it; the box's own tie rule, ``runtime/selection.py``, is 5 %)
SLOWER_MARGIN = 0.05


def cpu_name() -> str:
    """This machine's CPU model (``/proc/cpuinfo``), else the platform's words."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def speedups(records: list[ArtifactRecord], benchmarks: dict[str, dict]) -> dict[str, dict]:
    """Each non-FP32 artifact's speed against the FP32 artifact of its own runtime (same
    format), by kind: ``speedup_vs_fp32`` (the FP32 one's ms over its own; above 1 is
    faster), ``fp32_source`` (its path) and ``slower_than_fp32`` (more than
    :data:`SLOWER_MARGIN` slower on this CPU)."""
    fp32 = {r.format: r for r in records if r.precision == "fp32"}
    found = {}
    for record in records:
        source = fp32.get(record.format)
        if record.precision == "fp32" or source is None:
            continue
        mine = (benchmarks.get(record.kind) or {}).get("ms_per_image")
        theirs = (benchmarks.get(source.kind) or {}).get("ms_per_image")
        if not mine or not theirs:
            continue
        found[record.kind] = {"speedup_vs_fp32": round(theirs / mine, 3),
                              "fp32_source": source.path,
                              "slower_than_fp32": mine > theirs * (1 + SLOWER_MARGIN)}
    return found
