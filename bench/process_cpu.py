"""CPU time of the whole appliance by process and thread, from ``/proc`` (Linux).

``clinibox serve`` analyses in its worker thread, runs the runtimes' helper
threads beside it and decodes in a sandbox child (``imaging/sandbox.py``).
Which of them is busiest says where the pipeline is bound: ``cpu_split``
takes two snapshots of the tree under the service and gives each part's
core-milliseconds per analysed object.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.process_memory import descendants

TICKS = os.sysconf("SC_CLK_TCK")


def _seconds(stat: str) -> float:
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def snapshot(pid: int) -> dict[tuple[int, int], tuple[str, float]]:
    """CPU seconds of every thread under ``pid``: (process, thread) → (process kind, s)."""
    threads = {}
    for process in descendants(pid):
        try:
            command = Path(f"/proc/{process}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        kind = ("service" if process == pid else
                "decoder" if b"imaging.sandbox" in command else "other")
        for task in Path(f"/proc/{process}/task").glob("*"):
            try:
                threads[(process, int(task.name))] = (kind, _seconds((task / "stat").read_text()))
            except OSError:
                continue
    return threads


def cpu_split(before: dict, after: dict, objects: int) -> dict[str, float]:
    """Core-ms per object between two snapshots: the service's busiest thread (the worker),
    the service's other threads (runtime helpers, intake, telemetry), the decoder sandbox
    and the whole tree."""
    used: dict[tuple[int, int], tuple[str, float]] = {}
    for key, (kind, seconds) in after.items():
        used[key] = (kind, seconds - before.get(key, (kind, 0.0))[1])
    service = sorted((s for k, s in used.values() if k == "service"), reverse=True)
    per = 1000 / max(objects, 1)
    return {
        "worker_thread": round(service[0] * per, 2) if service else 0.0,
        "service_other_threads": round(sum(service[1:]) * per, 2),
        "decoder": round(sum(s for k, s in used.values() if k == "decoder") * per, 2),
        "whole_tree": round(sum(s for _k, s in used.values()) * per, 2),
    }
