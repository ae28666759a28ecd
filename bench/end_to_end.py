"""End-to-end benchmark: C-STORE received → result stored, and pipeline vs bare backend.

1. Streaming: `clinibox serve` (worker on) receives N phantom images from
   storescu; latency per instance = result stored − object received
   (both timestamps from the box's database); p50/p95.
2. Drain: the same N objects queued with the worker off, then the box is
   restarted with the worker on; throughput = images/s while draining.
3. Bare backend, same run: the same images decoded and preprocessed
   beforehand, then only ``backend.infer`` timed on the artifact the box chose.
   ratio = drain throughput / bare throughput (1.0 = no pipeline overhead).

    .venv/bin/python -m bench.end_to_end [--files 120] [--backend auto]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import BOX_DEFAULTS, figure, phantom_files, save
from bench.process_cpu import cpu_split, snapshot
from engine.imaging.decode import decode
from engine.imaging.preprocess import get_preprocessor
from engine.model_package import find_package, load_package
from engine.runtime.selection import candidates, load_candidate
from engine.settings import RuntimeConfig
from firmware_app.settings.box import Config
from tests.box_harness import echoscu, send, serve, stop, wait_for, write_config
from tests.ports import free_port


def _rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _wait_processed(db: Path, count: int, timeout: float = 600) -> None:
    def done() -> bool:
        if not db.exists():
            return False
        return _rows(db, "SELECT COUNT(*) FROM results")[0][0] >= count
    wait_for(done, timeout, f"{count} results")


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def streaming(files: list[Path], work: Path, backend: str) -> dict:
    port = free_port()
    config = write_config(work / "stream.toml", work / "stream", port, BOX_DEFAULTS,
                          runtime={"backend": backend})
    proc = serve(config, work / "stream.log", wait_for_model=True)
    try:
        wait_for(lambda: echoscu(port), 120, "clinibox")
        send(port, files)
        db = work / "stream" / "clinibox.db"
        _wait_processed(db, len(files))
        rows = _rows(db, "SELECT r.created_at - i.received_at, r.backend FROM results r"
                         " JOIN instances i ON i.id = r.instance_id")
    finally:
        stop(proc)
    latencies = [r[0] * 1000 for r in rows]
    return {"p50_ms": round(percentile(latencies, 0.5), 1),
            "p95_ms": round(percentile(latencies, 0.95), 1),
            "max_ms": round(max(latencies), 1), "backend": rows[0][1]}


def drain(files: list[Path], work: Path, backend: str, threads: int = 0) -> dict:
    port = free_port()
    state = work / "drain"
    config = write_config(work / "fill.toml", state, port, BOX_DEFAULTS,
                          worker={"enabled": False})
    proc = serve(config, work / "fill.log")
    try:
        wait_for(lambda: echoscu(port), 120, "clinibox")
        send(port, files)
    finally:
        stop(proc)
    config = write_config(work / "drain.toml", state, port, BOX_DEFAULTS,
                          runtime={"backend": backend, "threads": threads},
                          dicom={"enabled": False})
    proc = serve(config, work / "drain.log", wait_for_model=True)
    try:
        # CPU from the first result on, as the drain's rate (the decoder's start not counted)
        _wait_processed(state / "clinibox.db", 1)
        before = snapshot(proc.pid)
        done = _rows(state / "clinibox.db", "SELECT COUNT(*) FROM results")[0][0]
        _wait_processed(state / "clinibox.db", len(files))
        cpu = cpu_split(before, snapshot(proc.pid), len(files) - done)
        created = sorted(r[0] for r in _rows(state / "clinibox.db",
                                             "SELECT created_at FROM results"))
        stages = _rows(state / "clinibox.db", "SELECT timings_json FROM results")
        label = _rows(state / "clinibox.db", "SELECT backend FROM results LIMIT 1")[0][0]
        frames = _rows(state / "clinibox.db", "SELECT SUM(frames_inferred) FROM results")[0][0]
    finally:
        stop(proc)
    timings = [json.loads(s[0]) for s in stages]
    mean = {k: round(statistics.mean(t[k] for t in timings), 3) for k in timings[0]}
    span = created[-1] - created[0]
    return {"instances_per_s": round((len(created) - 1) / span, 1),
            "frames_per_s": round(frames * (len(created) - 1) / len(created) / span, 1),
            "mean_stage_ms_per_instance": mean, "backend": label,
            "core_ms_per_instance": cpu}


def bare(files: list[Path], backend_label: str) -> dict:
    config = Config()
    package = load_package(find_package(config.models_dir, config.models.name),
                           config.trusted_key_paths)
    runtime = RuntimeConfig()
    first_stage = backend_label.split(" + ")[0]  # "first + second stage" with a stage
    chosen = [c for c in candidates(package, runtime) if c.label == first_stage]
    backend = load_candidate(chosen[0], package, runtime)
    spec = package.input
    pre = get_preprocessor(package.manifest["preprocessing"]["name"])
    feeds = []
    for path in files:
        decoded = decode(path, config.limits, config.worker.max_frames_per_instance)
        for frame in decoded.frames:
            tensor, _ = pre(frame, spec.shape, spec.mean, spec.std, {})
            feeds.append({spec.name: tensor})
    for feed in feeds[:8]:
        backend.infer(feed)
    started = time.perf_counter()
    for feed in feeds:
        backend.infer(feed)
    elapsed = time.perf_counter() - started
    backend.close()
    return {"frames_per_s": round(len(feeds) / elapsed, 1),
            "ms_per_image": round(elapsed * 1000 / len(feeds), 3), "frames": len(feeds)}


def main() -> None:
    """Run the three measurements and print the pipeline/bare ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=120)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--kind", choices=("mixed", "ct"), default="mixed",
                        help="mixed phantoms (CT, US, US cines), or CT slices only")
    parser.add_argument("--size", type=int, default=None,
                        help="every image this many pixels a side (e.g. 512 for CT slices)")
    parser.add_argument("--threads", type=int, default=0,
                        help="[runtime] threads for the drain (0: the runtime decides)")
    parser.add_argument("--skip-streaming", action="store_true",
                        help="measure the drain and the bare backend only")
    args = parser.parse_args()
    sized = "" if args.size is None else f"-{args.size}"
    cache = Path(tempfile.gettempdir()) / f"clinibox-bench-{args.kind}{sized}-{args.files}"
    files = phantom_files(cache, args.files, args.kind, seed=2, size=args.size)
    with tempfile.TemporaryDirectory(prefix="clinibox-e2e-") as tmp:
        work = Path(tmp)
        stream = None if args.skip_streaming else streaming(files, work, args.backend)
        drained = drain(files, work, args.backend, args.threads)
    label = drained["backend"]
    reference = bare(files, label)
    bare_ref = f"bare backend.infer, {label.split(' + ')[0]}, same images, same run"
    kept = {"drain": figure(drained["frames_per_s"], "frames/s", bare_ref),
            "drain, instances": figure(drained["instances_per_s"], "instances/s"),
            "bare backend": figure(reference["frames_per_s"], "frames/s"),
            "drain ÷ bare backend": figure(round(drained["frames_per_s"]
                                                  / reference["frames_per_s"], 3), "×",
                                            bare_ref),
            "drain, whole tree": figure(drained["core_ms_per_instance"]["whole_tree"],
                                        "core-ms/instance")}
    if stream is not None:
        kept.update({"received → result p50": figure(stream["p50_ms"], "ms"),
                     "received → result p95": figure(stream["p95_ms"], "ms")})
    variant = "" if args.kind == "mixed" and args.size is None else f"-{args.kind}{sized}"
    save(f"end_to_end{variant}", {
        "files": len(files), "kind": args.kind, "size": args.size, "backend": label,
        "latency_received_to_result": stream,
        "pipeline_drain": drained,
        "bare_backend": reference,
        "pipeline_over_bare_throughput": round(
            drained["frames_per_s"] / reference["frames_per_s"], 3),
        "note": "frames/s both sides; same images, same artifact, same run",
    }, kept, notes=f"{len(files)} {args.kind} phantoms"
                   f"{f' of {args.size} px' if args.size else ''}, backend {label}, "
                   f"[runtime] threads {args.threads or 'default'}")


if __name__ == "__main__":
    main()
