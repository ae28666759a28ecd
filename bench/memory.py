"""Memory benchmark: steady and peak RSS of `clinibox serve` with each backend.

For each backend the box is started alone (fresh state), measured idle after
start-up (steady), fed N phantom images over DICOM, and measured again after
processing (steady after work) together with its peak (VmHWM). The reference
in the same run is the same box with the worker off (no model loaded).

    .venv/bin/python bench/memory.py [--files 60]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from common import (
    echo,
    free_port,
    phantom_files,
    save,
    send,
    start_box,
    stop,
    wait_until,
    write_box_config,
)
from firmware_app.runtime.registry import available_backends
from process_memory import rss


def measure(files: list[Path], work: Path, backend: str | None) -> dict:
    port = free_port()
    sections = {"runtime": {"backend": backend}} if backend else {"worker": {"enabled": False}}
    config = write_box_config(work / "box.toml", work / "state", port, **sections)
    proc = start_box(config, work / "serve.log", wait_for_model=True)
    try:
        wait_until(lambda: echo(port, "CLINIBOX"), 120, "clinibox")
        time.sleep(1.0)
        idle = rss(proc.pid)
        send(port, "CLINIBOX", files)
        db = work / "state" / "clinibox.db"
        if backend:
            def done() -> bool:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
                try:
                    return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] >= len(
                        files)
                finally:
                    conn.close()
            wait_until(done, 600, "results")
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
    for backend in [None, *available_backends()]:
        with tempfile.TemporaryDirectory(prefix="clinibox-mem-") as tmp:
            figures[backend or "no model (worker off)"] = measure(files, Path(tmp), backend)
    save("memory", {"files": args.files, "rss": figures, "target_mb_onnxruntime": 300})


if __name__ == "__main__":
    main()
