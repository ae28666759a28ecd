"""The decoder sandbox: a real child process, really crashed, hung and starved of memory.

Each failure must come back as a plain DecodeError, the next object must decode
in a fresh child, and the service's own memory must not carry what the child
decoded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from engine.imaging import sandbox as sandbox_module
from engine.imaging.decode import DecodeError, decode
from engine.imaging.errors import SandboxNotStarted
from engine.imaging.sandbox import ChildClock, DecodeSandbox
from engine.settings import LimitsConfig
from tests.corpus import image_dataset, j2k_bomb, rle_giant, write

CT = Path(get_testdata_file("CT_small.dcm"))
J2K = Path(get_testdata_file("emri_small_jpeg_2k_lossless.dcm"))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def sandbox():
    box = DecodeSandbox(LimitsConfig())
    yield box
    box.close()


def test_the_sandbox_decodes_exactly_like_the_service_would(sandbox):
    for path in (CT, J2K):
        here, there = decode(path, LimitsConfig(), 4), sandbox.decode(path, 4)
        np.testing.assert_array_equal(np.asarray(there.frames), here.frames)
        assert (there.modality, there.rows, there.frame_indices) == (
            here.modality, here.rows, here.frame_indices)
        assert there.display == here.display
    assert sandbox._process is not None and sandbox._process.pid != os.getpid()


def test_refusals_are_plain_and_the_child_stays(sandbox, tmp_path):
    bomb = tmp_path / "bomb.dcm"
    bomb.write_bytes(j2k_bomb("bomb"))
    with pytest.raises(DecodeError, match="says 40000 × 40000 pixels"):
        sandbox.decode(bomb, 1)
    child = sandbox._process.pid
    assert sandbox.decode(CT, 1).modality == "CT"
    assert sandbox._process.pid == child  # a refusal does not cost a restart


@pytest.mark.slow
def test_a_decoder_that_crashes_mid_object_is_a_reason_and_the_next_goes_on(sandbox):
    sandbox.decode(CT, 1)
    child = sandbox._process.pid
    os.kill(child, signal.SIGSTOP)  # the request waits in the socket; then the codec "crashes"

    def crash() -> None:
        os.kill(child, signal.SIGSEGV)
        os.kill(child, signal.SIGCONT)

    threading.Timer(0.3, crash).start()
    with pytest.raises(DecodeError, match=r"the decoder crashed \(SIGSEGV\)"):
        sandbox.decode(CT, 1)
    assert sandbox.decode(CT, 1).modality == "CT"
    assert sandbox._process.pid != child


@pytest.mark.slow
def test_a_child_gone_between_objects_is_simply_replaced(sandbox):
    sandbox.decode(CT, 1)
    os.kill(sandbox._process.pid, signal.SIGKILL)
    sandbox._process.wait(10)
    assert sandbox.decode(CT, 1).modality == "CT"


@pytest.mark.slow
def test_a_hung_decoder_is_stopped_after_its_time(tmp_path):
    sandbox = DecodeSandbox(replace(LimitsConfig(), sandbox_seconds=1.0))
    try:
        sandbox.decode(CT, 1)
        os.kill(sandbox._process.pid, signal.SIGSTOP)  # hangs as a looping codec would
        started = time.monotonic()
        with pytest.raises(DecodeError, match="decoding took longer than 1 s"):
            sandbox.decode(CT, 1)
        assert time.monotonic() - started < 15
        assert sandbox.decode(CT, 1).modality == "CT"
    finally:
        sandbox.close()


def test_a_decode_past_the_memory_limit_fails_in_the_child_not_the_service(tmp_path):
    """A 16384² RLE image (512 MB of pixels, 8 MB on the wire) let past the megapixel
    limit: the child hits its 256 MB limit; the service's memory does not move."""
    giant = tmp_path / "giant.dcm"
    giant.write_bytes(rle_giant("giant"))
    limits = replace(LimitsConfig(), max_megapixels=300.0, sandbox_memory_mb=256)
    sandbox = DecodeSandbox(limits)
    try:
        sandbox.decode(CT, 1)
        before = rss_mb()
        with pytest.raises(DecodeError, match=r"256 MB memory limit|decoder crashed"):
            sandbox.decode(giant, 1)
        assert rss_mb() - before < 50
        assert sandbox.decode(CT, 1).modality == "CT"  # a fresh child
    finally:
        sandbox.close()


@pytest.mark.slow  # a decoder child grows to its memory limit first
def test_an_image_too_big_for_a_64_mb_decoder_is_refused_and_the_next_decodes(tmp_path):
    from engine.imaging.decode import DecodeError as Refused

    sandbox = DecodeSandbox(replace(LimitsConfig(), sandbox_memory_mb=64, max_megapixels=300))
    try:
        big = write(image_dataset("big", 4096, 4096), tmp_path, "big.dcm")  # 32 MB of pixels
        with pytest.raises(Refused, match=r"64 MB memory limit|decoder crashed"):
            sandbox.decode(big, 1)
        assert sandbox.decode(CT, 1).rows == 128
    finally:
        sandbox.close()


@pytest.mark.slow
def test_a_started_decode_runs_while_the_caller_works(sandbox):
    """``start_decode`` returns at once; the child decodes meanwhile, so collecting the
    result afterwards waits for (almost) nothing: the worker's overlap."""
    sandbox.decode(CT, 1)  # a warm child
    started = time.perf_counter()
    pending = sandbox.start_decode(J2K, 4)
    handed_over = time.perf_counter() - started
    with pytest.raises(RuntimeError, match="already under way"):
        sandbox.start_decode(CT, 1)  # one decode at a time
    with pytest.raises(RuntimeError, match="already under way"):
        sandbox.call("engine.imaging.preview:remake", str(CT), {}, 1, "x")
    time.sleep(1.0)  # the caller's own work
    collecting = time.perf_counter()
    image = pending.result()
    waited = time.perf_counter() - collecting
    np.testing.assert_array_equal(np.asarray(image.frames),
                                  decode(J2K, LimitsConfig(), 4).frames)
    assert handed_over < 0.2 and waited < 0.2, (handed_over, waited)
    with pytest.raises(RuntimeError, match="already collected"):
        pending.result()
    assert sandbox.decode(CT, 1).modality == "CT"  # free for the next
    assert not list(sandbox._folder.iterdir())  # no frame files left behind


@pytest.mark.slow
def test_a_started_decode_keeps_its_time_limit_and_its_refusals(tmp_path):
    sandbox = DecodeSandbox(replace(LimitsConfig(), sandbox_seconds=1.0))
    try:
        bomb = tmp_path / "bomb.dcm"
        bomb.write_bytes(j2k_bomb("bomb"))
        refused = sandbox.start_decode(bomb, 1)
        with pytest.raises(DecodeError, match="says 40000 × 40000 pixels"):
            refused.result()
        os.kill(sandbox._process.pid, signal.SIGSTOP)
        hung = sandbox.start_decode(CT, 1)
        time.sleep(1.5)  # the limit counts from the start, not from the collection
        started = time.monotonic()
        with pytest.raises(DecodeError, match="decoding took longer than 1 s"):
            hung.result()
        assert time.monotonic() - started < 5
        missing = sandbox.start_decode(tmp_path / "gone.dcm", 1)
        with pytest.raises(FileNotFoundError):
            missing.result()
        assert sandbox.decode(CT, 1).modality == "CT"
    finally:
        sandbox.close()


def test_an_idle_child_is_stopped_and_the_next_object_starts_a_fresh_one(sandbox):
    assert sandbox.stop_if_idle(0.0) is False  # no child yet
    sandbox.decode(CT, 1)
    child = sandbox._process.pid
    assert sandbox.stop_if_idle(60.0) is False  # just used
    pending = sandbox.start_decode(CT, 1)
    assert sandbox.stop_if_idle(0.0) is False  # a decode under way is never cut short
    pending.result()
    time.sleep(0.2)
    assert sandbox.stop_if_idle(0.1) is True
    assert sandbox._process is None
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    assert sandbox.decode(CT, 1).modality == "CT" and sandbox._process.pid != child


@pytest.mark.slow
def test_another_user_of_the_sandbox_is_named_in_its_errors(tmp_path):
    """The DICOM document maker runs in the same limited child; its failures say so."""
    maker = DecodeSandbox(replace(LimitsConfig(), sandbox_seconds=60.0),
                          role="DICOM document maker", activity="making the documents")
    try:
        # a fresh child imports highdicom first: over 1 s on a busy 2-core AVX2 EPYC
        maker.call("firmware_app.dicom_out.maker:warm_up")
        maker.seconds = 1.0
        os.kill(maker._process.pid, signal.SIGSTOP)
        with pytest.raises(DecodeError, match="making the documents took longer than 1 s; "
                                              "the DICOM document maker was stopped"):
            maker.call("firmware_app.dicom_out.maker:warm_up")
        maker.seconds = 60.0
        maker.call("firmware_app.dicom_out.maker:warm_up")
        os.kill(maker._process.pid, signal.SIGKILL)
        maker._process.wait(10)
        assert maker.call("firmware_app.dicom_out.maker:warm_up")[1] == {}  # a fresh child
    finally:
        maker.close()


def test_the_folder_a_killed_owner_left_is_removed_by_the_next_sandbox(sandbox, tmp_path):
    import subprocess
    import sys

    from clinibox_common.fs import _pid_namespace

    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from engine.imaging.sandbox import DecodeSandbox\n"
         "from engine.settings import LimitsConfig\n"
         "box = DecodeSandbox(LimitsConfig())\n"
         "(box._folder / 'frames-1.npy').write_bytes(bytes(2**20))\n"
         "print(box._folder, flush=True)\n"
         "time.sleep(600)\n"], stdout=subprocess.PIPE, text=True)
    left = Path(owner.stdout.readline().strip())
    assert left.name.startswith(f"clinibox-decode-{_pid_namespace()}_{owner.pid}-")
    owner.kill()  # SIGKILL: no finaliser runs, the folder and its frames stay behind
    owner.wait()
    assert (left / "frames-1.npy").exists()
    ours = sandbox._folder  # a live owner's folder is kept
    fresh = DecodeSandbox(LimitsConfig())
    try:
        assert not left.exists()
        assert ours.is_dir() and fresh._folder.is_dir()
    finally:
        fresh.close()


def _spin_on(cpu: int) -> subprocess.Popen:
    """A busy loop at normal weight on one CPU: the receiving that holds analysis back."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    os.sched_setaffinity(spinner.pid, {cpu})
    return spinner


def _lowered_on(pid: int, cpu: int) -> None:
    """Put the process ``pid`` on one CPU at the analysis's weight (SCHED_IDLE)."""
    os.sched_setaffinity(pid, {cpu})
    os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))


@pytest.mark.slow
def test_a_child_that_waits_for_the_cpu_keeps_its_time_and_a_stopped_one_does_not():
    cpu = min(os.sched_getaffinity(0))
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    stopped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    spinner = _spin_on(cpu)
    try:
        _lowered_on(child.pid, cpu)
        os.kill(stopped.pid, signal.SIGSTOP)
        time.sleep(0.2)
        held, hung = ChildClock(child.pid), ChildClock(stopped.pid)
        time.sleep(2.0)
        assert held.used() < 0.5, held.used()  # it waited for the CPU almost all along
        assert hung.used() >= 1.9  # a stopped child is not waiting for a CPU: its time runs
    finally:
        for process in (child, stopped, spinner):
            process.kill()
            process.wait()


@pytest.mark.slow
def test_a_decode_held_back_by_higher_weight_work_is_not_cut_short(tmp_path):
    """The analysis's decoder (SCHED_IDLE) on a core that receiving keeps busy for 3 s:
    with a 1 s limit it still decodes, since the time it waited for the CPU is not its own."""
    cpu = min(os.sched_getaffinity(0))
    sandbox = DecodeSandbox(replace(LimitsConfig(), sandbox_seconds=1.0))
    try:
        sandbox.decode(CT, 1)  # a warm child
        _lowered_on(sandbox._process.pid, cpu)
        for task in Path(f"/proc/{sandbox._process.pid}/task").iterdir():
            _lowered_on(int(task.name), cpu)
        spinner = _spin_on(cpu)
        threading.Timer(3.0, spinner.kill).start()
        started = time.monotonic()
        try:
            assert sandbox.decode(J2K, 4).modality == "MR"
        finally:
            spinner.kill()
            spinner.wait()
        # it was held back past its limit (how far past depends on how little CPU the decode
        # needs: a fast core finishes it in the few milliseconds SCHED_IDLE gets in 1.4 s)
        assert time.monotonic() - started > 1.0
    finally:
        sandbox.close()


def test_a_decoder_that_does_not_start_is_the_boxs_fault(monkeypatch):
    monkeypatch.setattr(sandbox_module, "START_SECONDS", 0.0)
    monkeypatch.setattr(sandbox_module, "answered", lambda *args: False)
    sandbox = DecodeSandbox(LimitsConfig())
    try:
        with pytest.raises(SandboxNotStarted, match="the decoder process did not start"):
            sandbox.decode(CT, 1)
        assert sandbox._process is None
    finally:
        sandbox.close()
