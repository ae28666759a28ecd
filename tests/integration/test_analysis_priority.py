"""Receiving never waits for analysis: in a running box the analysis (the worker thread, the
decoder sandbox it starts, the runtime's own threads) runs at a lower CPU weight than what
receives (the service's main thread, the native receiver and its association processes),
read from /proc as ``top`` and ``ps`` read it. The mechanism, not a timing: the rate it
keeps is ``bench.ingest``'s (worker off, on while analysing, against Orthanc)."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from firmware_app.service.priority import ANALYSIS_NICE, WORKER_THREAD_NAME
from tests.integration.conftest import receiver_processes, storescu
from tests.integration.test_dicom_ingest import phantom_dicoms

pytestmark = pytest.mark.integration

SCHED_OTHER, SCHED_IDLE = 0, 5


def scheduling(pid: int, tid: int | None = None) -> tuple[str, int, int]:
    """(name, nice, policy) of a thread (``tid``) or a process's main thread, from /proc."""
    task = Path(f"/proc/{pid}") / ("task" if tid is not None else "") / str(tid or "")
    stat = (task / "stat").read_text()
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    # after the name: field 3 is fields[0]; nice is field 19, policy field 41 (proc(5))
    return name, int(fields[16]), int(fields[38])


def threads(pid: int) -> dict[int, tuple[str, int, int]]:
    return {int(t): scheduling(pid, int(t)) for t in os.listdir(f"/proc/{pid}/task")}


def test_analysis_runs_below_receiving_in_a_running_box(box_factory, tmp_path):
    box = box_factory(dicom={"receiver": "native"})
    files = phantom_dicoms(tmp_path / "in", 4, "ct")
    assert storescu(box.port, files).returncode == 0
    box.wait_idle(len(files))  # the model ran on them: the worker and its decoder are up
    assert box.db_rows("SELECT count(*) FROM instances WHERE status = 'processed'")[0][0] \
        == len(files)

    service = box.process.pid
    found = threads(service)
    workers = [tid for tid, (name, _n, _p) in found.items() if name == WORKER_THREAD_NAME]
    assert len(workers) == 1, found
    assert found[workers[0]][1:] == (ANALYSIS_NICE, SCHED_IDLE)
    # the service's main thread (it answers the watchdog, and starts the receiver again)
    # and the native receiver with its association processes keep the normal weight
    assert found[service][1:] == (0, SCHED_OTHER)
    [receiver] = receiver_processes(service)
    assert scheduling(receiver.pid)[1:] == (0, SCHED_OTHER)
    # more threads receive than analyse: the landing socket's and the components' stay at 0
    normal = [tid for tid, (_name, nice, _p) in found.items() if nice == 0]
    assert len(normal) >= 3, found

    [decoder] = [child for child in psutil.Process(service).children()
                 if "engine.imaging.sandbox" in child.cmdline()]
    assert all(nice == ANALYSIS_NICE and policy == SCHED_IDLE
               for _name, nice, policy in threads(decoder.pid).values())
