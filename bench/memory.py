"""Memory benchmark: steady and peak RSS of `clinibox serve` with each backend.

For each backend the box is started alone (fresh state), measured idle after
start-up (steady), fed N phantom images over DICOM, and measured again after
processing (steady after work) together with its peak (VmHWM). The reference
in the same run is the same box with the worker off (no model loaded).

    .venv/bin/python -m bench.memory [--files 60]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.common import BOX_DEFAULTS, figure, phantom_files, save
from bench.process_memory import rss
from engine.runtime.registry import available_backends
from tests.box_harness import echoscu, send, serve, stop, wait_for, write_config
from tests.ports import free_port


def measure(files: list[Path], work: Path, backend: str | None) -> dict:
    port = free_port()
    sections = {"runtime": {"backend": backend}} if backend else {"worker": {"enabled": False}}
    config = write_config(work / "box.toml", work / "state", port, BOX_DEFAULTS, **sections)
    proc = serve(config, work / "serve.log", wait_for_model=True)
    try:
        wait_for(lambda: echoscu(port), 120, "clinibox")
        time.sleep(1.0)
        idle = rss(proc.pid)
        send(port, files)
        db = work / "state" / "clinibox.db"
        if backend:
            def done() -> bool:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
                try:
                    return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] >= len(
                        files)
                finally:
                    conn.close()
            wait_for(done, 600, "results")
        time.sleep(1.0)
        after = rss(proc.pid)
    finally:
        stop(proc)
    return {"steady_idle_mb": idle["VmRSS"], "steady_after_work_mb": after["VmRSS"],
            "peak_mb": after["VmHWM"]}


def main() -> None:
    """Measure each available backend and the no-model reference."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=60)
    args = parser.parse_args()
    cache = Path(tempfile.gettempdir()) / f"clinibox-bench-mixed-{args.files}"
    files = phantom_files(cache, args.files, "mixed", seed=4)
    figures = {}
    alone = "no model (worker off)"
    for backend in [None, *available_backends()]:
        with tempfile.TemporaryDirectory(prefix="clinibox-mem-") as tmp:
            figures[backend or alone] = measure(files, Path(tmp), backend)
    reference = f"{alone}, same run"
    kept = {f"{name}: {what}": figure(row[key], "MB RSS", None if name == alone else reference)
            for name, row in figures.items()
            for what, key in (("idle", "steady_idle_mb"), ("after work", "steady_after_work_mb"),
                              ("peak", "peak_mb"))}
    save("memory", {"files": args.files, "rss": figures, "target_mb_onnxruntime": 300}, kept,
         notes=f"clinibox serve alone, {args.files} mixed phantoms; target: onnxruntime <= 300 MB")


if __name__ == "__main__":
    main()
