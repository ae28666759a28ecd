"""Backend benchmark: ms/image of every artifact of the demo package on every backend.

Inputs are real phantom images preprocessed as the box does. Each (backend,
artifact) pair is measured with 1 thread and with the runtime's default
threads; the reference in the same run is ONNX Runtime FP32. Each row also
carries the artifact's fidelity from the signed manifest (AUC, ΔAUC and
decision agreement against the PyTorch source on the held-out phantoms), and
the run ends with the issue's target: OpenVINO INT8 at least 2x faster than
ONNX Runtime FP32 with |ΔAUC| <= 0.01.

    .venv/bin/python -m bench.backends [--images 64] [--runs 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from bench.common import REPO, figure, save
from engine.imaging.preprocess import get_preprocessor
from engine.model_package import find_package, load_package
from engine.runtime.base import ArtifactLoadError
from engine.runtime.selection import candidates, load_candidate
from engine.settings import RuntimeConfig
from firmware_app.settings.box import Config
from phantoms.images import generate


def inputs_for(package, count: int, size: int | None = 256) -> list[dict[str, np.ndarray]]:
    """Phantom images (``size``: see ``phantoms.generate``) preprocessed exactly as the box
    does it."""
    spec = package.input
    pre = get_preprocessor(package.manifest["preprocessing"]["name"])
    rng = np.random.default_rng(3)
    feeds = []
    for i in range(count):
        phantom = generate("ct" if i % 2 else "us", rng, size)
        tensor, _ = pre(phantom.image, spec.shape, spec.mean, spec.std, {})
        feeds.append({spec.name: tensor})
    return feeds


def time_backend(backend, feeds, runs: int) -> dict[str, float]:
    """Median and p95 ms per image over ``runs`` inferences (after warm-up)."""
    for feed in feeds[:8]:
        backend.infer(feed)
    samples = []
    for i in range(runs):
        started = time.perf_counter()
        backend.infer(feeds[i % len(feeds)])
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 3),
            "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 3),
            "images_per_s": round(1000 / statistics.mean(samples), 1)}


def main() -> None:
    """Measure every pair and print ms/image with the ratio to ORT FP32."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    config = Config()
    package = load_package(find_package(config.models_dir, config.models.name),
                           config.trusted_key_paths)
    feeds = inputs_for(package, args.images)
    figures: dict[str, dict] = {}
    for threads in (1, 0):
        runtime = RuntimeConfig(threads=threads)
        for candidate in candidates(package, runtime):
            try:
                backend = load_candidate(candidate, package, runtime)
            except ArtifactLoadError as exc:  # e.g. OpenVINO refuses the TensorRT form
                print(f"skipped {candidate.label}: {str(exc).splitlines()[0]}", file=sys.stderr)
                continue
            try:
                path = candidate.artifact.path.relative_to(package.root)
                key = f"{candidate.backend}:{path} threads={'default' if threads == 0 else threads}"
                figures[key] = time_backend(backend, feeds, args.runs)
                v = candidate.artifact.validation
                figures[key].update({k: v.get(k) for k in ("auc", "auc_delta",
                                                           "decision_agreement")})
                figures[key]["size_kb"] = round(sum(
                    (package.root / name).stat().st_size for name in candidate.artifact.files
                ) / 1024)
            finally:
                backend.close()
    for threads in ("1", "default"):
        reference = figures[f"onnxruntime:model.fp32.onnx threads={threads}"]["median_ms"]
        for key, row in figures.items():
            if key.endswith(f"threads={threads}"):
                row["speedup_vs_ort_fp32"] = round(reference / row["median_ms"], 2)
    target = {}
    for threads in ("1", "default"):
        row = figures[f"openvino:openvino/model.int8.xml threads={threads}"]
        target[f"threads={threads}"] = {
            "openvino_int8_speedup_vs_ort_fp32": row["speedup_vs_ort_fp32"],
            "openvino_int8_abs_auc_delta": abs(row["auc_delta"]),
            "met": row["speedup_vs_ort_fp32"] >= 2.0 and abs(row["auc_delta"]) <= 0.01}
    reference = "onnxruntime:model.fp32.onnx, same threads, same run"
    kept = {f"{key} median": figure(row["median_ms"], "ms/image",
                                    None if key.startswith("onnxruntime:model.fp32.onnx")
                                    else reference) for key, row in figures.items()}
    kept.update({f"openvino int8 ÷ onnxruntime fp32, {name}": figure(
        row["openvino_int8_speedup_vs_ort_fp32"], "× faster", reference)
        for name, row in target.items()})
    save("backends", {"package": package.model_id, "images": args.images, "runs": args.runs,
                      "repo": str(REPO.name), "results": figures,
                      "target_openvino_int8_2x_ort_fp32": target}, kept,
         notes=f"{package.model_id}, {args.images} preprocessed phantoms, {args.runs} runs "
               "after warm-up; target: OpenVINO INT8 >= 2x ONNX Runtime FP32, |dAUC| <= 0.01")


if __name__ == "__main__":
    main()
