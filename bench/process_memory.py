"""The memory of the whole appliance: PSS summed over a process and all its descendants.

``clinibox serve`` is a process tree: the service, its viewer child (gunicorn
master and workers) and short-lived decoder sandboxes. PSS (proportional set
size, from ``/proc/<pid>/smaps_rollup``) counts shared pages once across them,
so the sum is what the box really holds. ``PeakSampler`` samples the tree in a
thread and keeps the largest sum seen, and the process that held the most.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (children of all its threads), breadth first."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                queue += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def pss_mb(pid: int) -> float:
    """PSS of one process in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def rss(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def tree_pss_mb(pid: int) -> dict[str, float]:
    """``{"total": MB, "processes": n, "largest": MB}`` for the tree under ``pid``."""
    sizes = [pss_mb(p) for p in descendants(pid)]
    return {"total": round(sum(sizes), 1), "processes": len(sizes),
            "largest": round(max(sizes, default=0.0), 1)}


class PeakSampler:
    """Sample the tree under ``pid`` every ``interval`` seconds; ``peak`` is the largest total."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self.peak: dict[str, float] = {"total": 0.0, "processes": 0, "largest": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = tree_pss_mb(self.pid)
            if sample["total"] > self.peak["total"]:
                self.peak = sample
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(self.interval * 2)
        self._stop.set()
        self._thread.join()
