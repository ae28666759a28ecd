"""What one CT slice costs the box in core-milliseconds, with no pipeline around it.

The drain of ``end_to_end.py`` is bounded by the work each slice asks of the two
cores. This measures that work alone, in one process, on the same 512 × 512 CT
phantoms (the project's generator; the bundled demo model is trained on such
phantoms and is not for clinical use), each part timed over every slice after a
warm-up, wall time and CPU time of the whole process (every runtime thread included):

* the decoder sandbox's work: ``decode_with_previews`` (read, validate, decode,
  window, quality checks, grey statistics, previews written);
* the model without its second stage: ``ModelRunner.analyse`` with the stage left out;
* the model as the box runs it: ``ModelRunner.analyse`` with the second stage;
* the inference floor: the runtimes alone on the inputs that pass recorded (each
  slice's first-stage tensor, each crop the second stage looked at), with no decoder,
  Python analysis, queue or database. What 2 cores could drain at that floor bounds any
  pipeline around this model on this CPU: a drain target above it needs a cheaper model.

The runtimes are what ``auto`` chooses (``--backend`` names another); ``--threads 1``
runs them on one thread. What the drain could reach at best, if the pipeline cost
nothing and both cores were always busy: 2 cores ÷ the core-ms a slice. The first
stage alone is the reference in the same run.

    .venv/bin/python -m bench.slice_cost [--files 200] [--threads 0] [--models DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path

from bench.common import figure, machine, phantom_files, save
from engine.imaging.decode import decode
from engine.imaging.preview import decode_with_previews
from engine.settings import LimitsConfig, RuntimeConfig
from firmware_app.service.appliance import load_runner
from firmware_app.settings.box import Config

CORES = 2
WARM_UP = 10


def _timed(each, items: list) -> dict[str, float]:
    """Wall and CPU ms per item of ``each(item)`` over ``items``, after a warm-up."""
    for item in items[:WARM_UP]:
        each(item)
    wall, cpu = time.perf_counter(), time.process_time()
    for item in items:
        each(item)
    count = len(items)
    return {"wall_ms": round((time.perf_counter() - wall) * 1000 / count, 2),
            "core_ms": round((time.process_time() - cpu) * 1000 / count, 2)}


@contextmanager
def _recorded(backend) -> Iterator[list[dict]]:
    """Every input ``backend.infer`` is given while inside, copied (for the floor)."""
    inputs: list[dict] = []
    infer = backend.infer

    def kept(feed: dict):
        inputs.append({name: value.copy() for name, value in feed.items()})
        return infer(feed)
    backend.infer = kept
    try:
        yield inputs
    finally:
        del backend.infer


def _floor(runner, decoded: list, first_inputs: list[dict], crops: list[dict]) -> dict:
    """Core-ms a slice of the runtimes alone: every recorded input run again, bare."""
    first = _timed(runner.backend.infer, first_inputs)
    stage = (_timed(runner.stage.backend.infer, crops) if crops
             else {"wall_ms": 0.0, "core_ms": 0.0})
    per_slice = len(crops) / len(decoded)
    core = first["core_ms"] + stage["core_ms"] * per_slice
    return {"first_stage_a_slice": first, "second_stage_a_crop": stage,
            "crops_a_slice": round(per_slice, 3), "core_ms_a_slice": round(core, 2),
            "best_drain_on_2_cores": round(CORES * 1000 / core, 1) if core else None}


def main() -> None:
    """Measure and print the figures (bench/out/slice_cost.json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--threads", type=int, default=0,
                        help="[runtime] threads (0: the runtime decides)")
    parser.add_argument("--models", type=Path,
                        help="a folder of model packages ([models] dir) instead of the bundled")
    args = parser.parse_args()
    cache = Path(tempfile.gettempdir()) / f"clinibox-bench-ct-512-{args.files}"
    files = phantom_files(cache, args.files, "ct", seed=2, size=512)
    config = Config()
    config.runtime = RuntimeConfig(backend=args.backend, threads=args.threads)
    if args.models is not None:
        config.models.dir = str(args.models)
    limits = LimitsConfig()
    with tempfile.TemporaryDirectory(prefix="clinibox-slice-cost-") as tmp:
        previews = {path: str(Path(tmp) / f"{n}.npz") for n, path in enumerate(files)}
        decoder = _timed(
            lambda path: decode_with_previews(str(path), asdict(limits), 8, previews[path]),
            files)
    decoded = [decode(path, limits, 8) for path in files]
    runner = load_runner(config)
    stage = runner.stage
    try:
        runner.stage = None
        first = _timed(lambda image: runner.analyse(image, 64), decoded)
        runner.stage = stage
        found: list[int] = []  # lesions of each analysis, warm-up first
        whole = _timed(lambda image: found.append(len(runner.analyse(image, 64).findings.lesions)),
                       decoded)
        lesions = sum(found[-len(decoded):])
        with _recorded(runner.backend) as first_inputs, \
                (_recorded(stage.backend) if stage is not None else nullcontext([])) as crops:
            for image in decoded:
                runner.analyse(image, 64)
        floor = _floor(runner, decoded, first_inputs, crops)
    finally:
        runner.stage = stage
        runner.close()
    with_stage = decoder["core_ms"] + whole["core_ms"]
    without = decoder["core_ms"] + first["core_ms"]
    details = {
        "machine": machine("onnxruntime", "openvino", "ai-edge-litert", "numpy", "pydicom"),
        "model": runner.package.model_id, "models_dir": str(config.models_dir),
        "slices": len(files), "lesions_found": lesions, "backend": runner.backend_label,
        "threads": args.threads,
        "decoder_sandbox_work": decoder,
        "reference_first_stage_alone": first,
        "model_with_second_stage": whole,
        "second_stage_core_ms": round(whole["core_ms"] - first["core_ms"], 2),
        "inference_floor": floor,
        "core_ms_a_slice_with_second_stage": round(with_stage, 2),
        "core_ms_a_slice_without": round(without, 2),
        "best_drain_on_2_cores_with_second_stage": round(CORES * 1000 / with_stage, 1),
        "best_drain_on_2_cores_without": round(CORES * 1000 / without, 1),
        "note": "core-ms of the whole process (runtime threads included); the best drain "
                "assumes a pipeline that costs nothing and two cores always busy",
    }
    reference = "the first stage alone (no second stage), same slices, same run"
    kept = {"decoder sandbox's work": figure(decoder["core_ms"], "core-ms/slice"),
            "model, first stage alone": figure(first["core_ms"], "core-ms/slice"),
            "model with its second stage": figure(whole["core_ms"], "core-ms/slice", reference),
            "a slice with the second stage": figure(round(with_stage, 2), "core-ms",
                                                    reference),
            "a slice without": figure(round(without, 2), "core-ms"),
            "inference floor": figure(floor["core_ms_a_slice"], "core-ms/slice"),
            "best drain on 2 cores with the second stage": figure(
                details["best_drain_on_2_cores_with_second_stage"], "slices/s", reference),
            "best drain at the inference floor": figure(floor["best_drain_on_2_cores"],
                                                        "slices/s")}
    save("slice_cost", details, kept,
         notes=f"{len(files)} CT phantoms of 512 px, {details['model']} on "
               f"{details['backend']}, threads {args.threads or 'default'}; core-ms of the "
               "whole process")


if __name__ == "__main__":
    main()
