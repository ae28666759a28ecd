"""Decode untrusted objects in a child process with hard limits.

The codecs (OpenJPEG, libjpeg, CharLS, RLE) are C code fed by whoever is on
the clinic LAN. The header and stream checks in ``decode`` refuse the bombs
we know; the sandbox bounds the ones we do not:

* the decoder runs in its own process (a fresh interpreter, ``python -m
  engine.imaging.sandbox``: no state, locks or sockets inherited from the
  threaded service, only its end of a socket pair), kept warm between objects;
* its address space is limited (``RLIMIT_AS``: what it had mapped when it
  started plus ``[limits] sandbox_memory_mb``), so a decoder that asks for
  gigabytes gets MemoryError or dies, not the service;
* every decode has a time limit (``sandbox_seconds``): past it the child is killed and a
  fresh one started for the next object. The limit counts the child's own time
  (:class:`ChildClock`): the CPU time it got while it runs or waits for a CPU, the wall
  clock while it does neither. The analysis runs at the lowest CPU weight
  (``firmware_app/service/priority.py``), and a box busy receiving may hold it back for
  minutes: a looping codec uses its time, a hung one (stopped, deadlocked) lets it pass,
  one only waiting its turn keeps it. Its start
  has :data:`START_SECONDS` of that time; a child that does not start is the box's fault
  (``SandboxNotStarted``), not the object's;
* it has no network: it is given no socket, and where the kernel allows (root,
  or CAP_SYS_ADMIN) it moves into a network namespace of its own, with no
  interface but a down loopback; ``network_isolated`` says which held.

A crash (a signal), running out of memory or time becomes a ``DecodeError``
with a plain reason, which the worker quarantines the object with; the child
is replaced and the next object goes on. Decoded frames come back through a
``.npy`` file in a private folder (0700), not through the pipe, and are mapped
rather than read by the service; display previews are written by the child
beside the object (``engine.imaging.preview``).

``start_decode`` hands an object to the child and returns at once, so the
worker analyses one object while the child decodes the next: the two run on
two cores.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import asdict, replace
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from clinibox_common.fs import owned_temp_folder
from engine.imaging.decode import NOT_ENOUGH_MEMORY, DecodedImage, DecodeError, decode
from engine.imaging.errors import SandboxNotStarted
from engine.imaging.preview import decode_with_previews
from engine.settings import LimitsConfig

log = logging.getLogger(__name__)

MB = 1024 * 1024
CLONE_NEWNET = 0x40000000
#: a child that decoded nothing for this long is stopped (``stop_if_idle``): an idle box
#: does not hold its ~50 MB; the next object starts a fresh one (a few tenths of a second)
IDLE_SECONDS = 60.0
#: the child's own time (see :class:`ChildClock`) to start and say it is ready: a fresh
#: interpreter importing numpy and the codecs takes about a second of it
START_SECONDS = 120.0
#: how often a wait for the child looks at its clock
_LOOK_SECONDS = 0.5


def _mapped_bytes() -> int:
    """The process's current virtual size (VmSize)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _isolate_network() -> bool:
    """Move into a new, empty network namespace; False where the kernel refuses."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.unshare(CLONE_NEWNET) == 0
    except (OSError, AttributeError):
        return False


def _child_state(pid: int) -> tuple[bool, float] | None:
    """Whether any thread of the process ``pid`` is running or ready to run, and the CPU
    seconds its threads have had (``/proc/<pid>/task/*/stat`` and ``schedstat``); None where
    the kernel does not say or the process is gone."""
    ready, cpu = False, 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            ready |= (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R"
            cpu += int((task / "schedstat").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return ready, cpu / 1e9


class ChildClock:
    """The time a child process has had since a moment: while it runs or waits for a CPU,
    the CPU time it got; while it neither runs nor waits for one (stopped, blocked), the
    wall clock. A child held back by higher-weight work (receiving) keeps its time limit;
    a looping codec and a hung one use theirs. Where the kernel does not say, the wall
    clock. The clock moves when :meth:`used` is read; an interval counts the wall clock
    only if the child was not ready to run at either end of it."""

    def __init__(self, pid: int) -> None:
        """Start counting now for the process ``pid``."""
        self.pid = pid
        self._used = 0.0
        self._at = time.monotonic()
        self._last = _child_state(pid)

    def used(self) -> float:
        """Seconds of the child's own time since the clock started."""
        now, state = time.monotonic(), _child_state(self.pid)
        if state is None or self._last is None:
            self._used += now - self._at
        else:
            (was_ready, was_cpu), (ready, cpu) = self._last, state
            self._used += cpu - was_cpu if was_ready or ready else now - self._at
        self._at, self._last = now, state
        return self._used


def answered(conn: Connection, clock: ChildClock, limit: float) -> bool:
    """Wait until ``conn`` has something to read (an answer, or the child's end: True) or
    the child has used ``limit`` seconds of its own time on ``clock`` (False)."""
    while True:
        left = limit - clock.used()
        if left <= 0:
            return conn.poll(0)
        if conn.poll(min(left, _LOOK_SECONDS)):
            return True


def _serve(conn: Connection, memory_bytes: int) -> None:
    """The child: limit itself, then decode what the parent sends until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the child ends
    isolated = _isolate_network()
    limit = _mapped_bytes() + memory_bytes
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        limited = True
    except (OSError, ValueError):  # a seccomp filter that denies setrlimit (see the units)
        limited = False
    conn.send(("ready", (isolated, limited)))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        kind, out, args = request
        try:
            if kind == "decode":
                path, limits, max_frames, preview_to = args
                if preview_to is None:
                    image = decode(Path(path), LimitsConfig(**limits), max_frames)
                else:
                    image = decode_with_previews(path, limits, max_frames, preview_to)
                array = image.frames
                meta = asdict(replace(image, frames=np.empty((0, 0, 0), np.float32)))
                meta.pop("frames")
            else:  # "call": a "module:function" of this project returning (array, meta)
                module, _, function = kind.removeprefix("call:").partition(":")
                array, meta = getattr(importlib.import_module(module), function)(*args)
            np.save(out, array, allow_pickle=False)
            conn.send(("ok", meta))
        except MemoryError:
            conn.send(("memory", ""))
        except DecodeError as exc:
            conn.send(("memory", "") if exc.reason == NOT_ENOUGH_MEMORY else
                      ("refused", exc.reason))
        except FileNotFoundError as exc:
            conn.send(("missing", str(exc)))


#: a sandbox's private folder: ``<temp>/clinibox-decode-<pid of its owner>-<random>``
#: (``fs.owned_temp_folder``); a decode under way when the service was SIGKILLed leaves its
#: frames there, up to the memory limit, until the next sandbox starts
FOLDER_PREFIX = "clinibox-decode-"


class DecodeSandbox:
    """Decodes objects in a warm, limited child process; one object at a time."""

    def __init__(self, limits: LimitsConfig, role: str = "decoder",
                 activity: str = "decoding") -> None:
        """Limits come from ``[limits]``: what decode checks, and the child's bounds.
        ``role`` and ``activity`` name the child and its work in its errors ("the decoder
        crashed", "decoding took longer than …"): another user of the sandbox
        (``dicom_out/maker.py``) says what it is."""
        self.limits = limits
        self.role, self.activity = role, activity
        self.memory_bytes = limits.sandbox_memory_mb * MB
        self.seconds = float(limits.sandbox_seconds)
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._folder = owned_temp_folder(FOLDER_PREFIX)
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._folder, True)
        #: whether the running child could leave the network (None before it started)
        self.network_isolated: bool | None = None
        #: whether the running child's address-space limit holds (None before it started)
        self.memory_limited: bool | None = None
        #: the decode handed to the child and not yet collected
        self._pending: PendingDecode | None = None
        self._sent = 0
        self._last_used = time.monotonic()

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        process = subprocess.Popen(
            [sys.executable, "-m", "engine.imaging.sandbox", str(theirs.fileno()),
             str(self.memory_bytes)],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, close_fds=True)
        theirs.close()
        parent = Connection(ours.detach())
        try:
            if not answered(parent, ChildClock(process.pid), START_SECONDS):
                raise EOFError
            _, (self.network_isolated, self.memory_limited) = parent.recv()
            if not self.memory_limited:
                log.warning("the decoder could not limit its memory (setrlimit denied): "
                            "a decode bomb would be bounded only by the service's own limits")
        except (EOFError, OSError):
            process.kill()
            process.wait()
            parent.close()
            raise SandboxNotStarted(f"the {self.role} process did not start") from None
        self._process, self._conn = process, parent

    def _stop_child(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait(10)
        self._process = self._conn = None

    def _died(self) -> DecodeError:
        try:
            code = self._process.wait(10)
        except subprocess.TimeoutExpired:
            code = None
        self._stop_child()
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            return DecodeError(f"the {self.role} crashed ({name}); with a "
                               f"{self.memory_bytes // MB} MB memory limit this is often an "
                               "image too large or damaged to decode")
        return DecodeError(f"the {self.role} stopped unexpectedly (exit status {code})")

    def decode(self, path: Path, max_frames: int, *,
               preview_to: Path | None = None) -> DecodedImage:
        """Decode ``path`` as ``engine.imaging.decode.decode`` would, in the sandbox.

        With ``preview_to``, the decoded frames' display previews are written
        there too (``engine.imaging.preview``), from the same decode.
        """
        return self.start_decode(path, max_frames, preview_to=preview_to).result()

    def start_decode(self, path: Path, max_frames: int, *,
                     preview_to: Path | None = None) -> PendingDecode:
        """Hand ``path`` to the child and return at once: the child decodes it while the
        caller works on something else (the worker analyses the previous object).

        Only one decode is under way at a time: collect it with
        :meth:`PendingDecode.result` before starting the next one. Its time limit
        counts from now.
        """
        target = None if preview_to is None else str(preview_to)
        with self._lock:
            if self._pending is not None:
                raise RuntimeError("a decode is already under way in this sandbox")
            out, clock = self._send("decode", (str(path), asdict(self.limits), max_frames,
                                               target))
            self._pending = pending = PendingDecode(self, out, clock)
        return pending

    def call(self, target: str, *args: object) -> tuple[np.ndarray, dict]:
        """Run ``target`` (``"package.module:function"``, returning ``(array, meta)``) in
        the sandbox, under the same limits; its DecodeError comes back as one."""
        with self._lock:
            if self._pending is not None:
                raise RuntimeError("a decode is already under way in this sandbox")
            out, clock = self._send(f"call:{target}", args)
            return self._receive(out, clock)

    def _send(self, kind: str, args: tuple) -> tuple[Path, ChildClock]:
        """Start the child if needed and send it one request; the file its array comes in
        and the clock of the request's time limit."""
        if self._process is None or self._process.poll() is not None:
            self._stop_child()
            self._start()
        self._sent += 1
        self._last_used = time.monotonic()
        out = self._folder / f"frames-{self._sent}.npy"
        out.unlink(missing_ok=True)
        assert self._conn is not None and self._process is not None
        clock = ChildClock(self._process.pid)
        try:
            self._conn.send((kind, str(out), args))
        except (OSError, BrokenPipeError):
            raise self._died() from None
        return out, clock

    def _receive(self, out: Path, clock: ChildClock) -> tuple[np.ndarray, dict]:
        """The child's answer to the request whose array comes in ``out``, within the
        time limit counted on ``clock``."""
        assert self._conn is not None
        try:
            try:
                if not answered(self._conn, clock, self.seconds):
                    self._stop_child()
                    raise DecodeError(f"{self.activity} took longer than {self.seconds:g} s;"
                                      f" the {self.role} was stopped")
                kind, payload = self._conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                raise self._died() from None
            if kind == "refused":
                raise DecodeError(payload)
            if kind == "memory":
                self._stop_child()  # a fresh child for the next object: no fragments kept
                raise DecodeError(f"the {self.role} ran out of its {self.memory_bytes // MB} MB "
                                  "memory limit")
            if kind == "missing":
                raise FileNotFoundError(payload)
            # mapped, not read: clean file pages the kernel may drop under pressure
            return np.load(out, mmap_mode="r", allow_pickle=False), payload
        finally:
            out.unlink(missing_ok=True)  # a mapping outlives the name

    def _collect(self, pending: PendingDecode) -> DecodedImage:
        with self._lock:
            if self._pending is not pending:
                raise RuntimeError("this decode was already collected")
            self._pending = None
            frames, meta = self._receive(pending.out, pending.clock)
        return DecodedImage(frames=frames, **meta)

    @property
    def running(self) -> bool:
        """Whether the child is up."""
        return self._process is not None and self._process.poll() is None

    def stop_if_idle(self, seconds: float = IDLE_SECONDS) -> bool:
        """Stop the child when nothing was handed to it for ``seconds`` (the worker calls
        this while the queue is empty); whether it was stopped."""
        with self._lock:
            if (self._process is None or self._pending is not None
                    or time.monotonic() - self._last_used < seconds):
                return False
            self._stop_child()
            return True

    def cancel(self) -> None:
        """Give up the decode under way, if any, without waiting for it: its child is
        stopped, and a fresh one starts for the next object."""
        with self._lock:
            if self._pending is not None:
                self._pending.out.unlink(missing_ok=True)
                self._pending = None
                self._stop_child()

    def close(self) -> None:
        """End the child and remove the private folder."""
        with self._lock:
            self._pending = None
            self._stop_child()
        self._cleanup()


class PendingDecode:
    """A decode under way in a :class:`DecodeSandbox`; ``result()`` waits for it."""

    def __init__(self, sandbox: DecodeSandbox, out: Path, clock: ChildClock) -> None:
        """Made by :meth:`DecodeSandbox.start_decode`; its time limit counts on ``clock``."""
        self.sandbox = sandbox
        self.out = out
        self.clock = clock

    def result(self) -> DecodedImage:
        """The decoded image: DecodeError for refused, crashed or too slow decodes,
        FileNotFoundError when the object is gone. Call it once."""
        return self.sandbox._collect(self)


def main(argv: list[str]) -> None:
    """``python -m engine.imaging.sandbox FD MEMORY_BYTES``: the child's entry."""
    _serve(Connection(int(argv[0])), int(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
