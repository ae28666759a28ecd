"""Speed and size of one artifact, measured through the box's own runtime backend."""

from __future__ import annotations

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
    }
