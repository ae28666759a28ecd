"""Analysis yields the CPU to receiving: the worker's threads run at a lower CPU weight.

On a box of two cores a modality's C-STOREs and the analysis of what already arrived
compete for the same cores. Receiving must never wait for analysis, so the analysis
runs at a lower weight than everything that receives (the native receiver and its
association processes, the landing socket's threads, the service's main thread): Linux's
``SCHED_IDLE`` policy, so a receiving thread that wakes preempts the analysis at once and
the analysis takes every cycle receiving leaves. On 2 cores of an AMD EPYC, shared with
other load, ``bench.ingest`` kept about 1.1× the worker-off rate with it, 0.8× with nice 10
and ``SCHED_BATCH``, 0.5× with no lowering; what the database still shares, ``arrivals.py``
leaves to receiving (docs/development/benchmarks.md).

- the worker thread lowers itself when it starts (``lower_this_thread``); the decoder
  sandbox it starts, and any thread a runtime starts from it, inherit that;
- the runtime's own native threads, made while the model was loaded and checked on the
  service's main thread, are lowered once the model is loaded (``lower_new_native_threads``).

Lowering is per thread (Linux's nice value and scheduling policy belong to a thread), and
any thread or process may lower itself without privilege; raising it back would need
one, so a lowered thread stays lowered and nothing that receives is ever lowered.
Where the system refuses (a syscall filter), the box runs as before and logs it once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: the analysis's nice value (its threads' policy is ``SCHED_IDLE``, weight 3 against
#: receiving's 1024; the nice value is what counts where that policy is refused, 110)
ANALYSIS_NICE = 10
#: the thread's name in ``top -H``, ``ps -L`` and /proc/<pid>/task/<tid>/comm
WORKER_THREAD_NAME = "clinibox-worker"

_TASKS = Path("/proc/self/task")


def lower_this_thread(name: str | None = None, nice: int = ANALYSIS_NICE) -> bool:
    """Give the calling thread (and what it starts later) the analysis's weight:
    ``SCHED_IDLE`` (a waking receiver preempts it at once, and is placed on its core as on
    an idle one) at ``nice`` (the weight it keeps where the policy is refused); name it
    ``name`` for the system's tools. Whether the weight was set."""
    if name:
        _set_name(threading.get_native_id(), name)
    return lower_thread(threading.get_native_id(), nice)


def lower_thread(tid: int, nice: int = ANALYSIS_NICE) -> bool:
    """Give the thread ``tid`` of this process the analysis's weight; whether it was set."""
    try:
        policy = getattr(os, "SCHED_IDLE", getattr(os, "SCHED_BATCH", None))
        if policy is not None:
            os.sched_setscheduler(tid, policy, os.sched_param(0))
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, max(current, nice))
        return True
    except OSError as exc:  # a syscall filter that refuses setpriority, or the thread ended
        log.warning("analysis priority not lowered (thread %d): %s; analysis and receiving "
                    "share the CPU equally", tid, exc)
        return False


def native_threads() -> set[int]:
    """The ids of this process's threads that are not Python's (a runtime's own pool)."""
    python = {t.native_id for t in threading.enumerate()}
    try:
        tasks = {int(entry.name) for entry in _TASKS.iterdir()}
    except OSError:
        return set()
    return tasks - python


def lower_new_native_threads(before: set[int], nice: int = ANALYSIS_NICE) -> int:
    """Lower every native thread made since ``before`` (``native_threads()`` taken then):
    the runtime's inference pool made while the model loaded. How many were lowered.

    A Python thread that was just starting (a landing connection's) has no native id yet:
    a thread counts as native only when it still is a moment later."""
    made = native_threads() - before
    if made:
        time.sleep(0.05)
        made &= native_threads()
    return sum(lower_thread(tid, nice) for tid in sorted(made))


def _set_name(tid: int, name: str) -> None:
    """Name the thread for the system's tools (15 bytes at most); best effort."""
    with contextlib.suppress(OSError):
        (_TASKS / str(tid) / "comm").write_text(name[:15])
