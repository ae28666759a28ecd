"""The live frames a source's live process shows the viewer: files on a tmpfs.

The live process (``firmware_app/live/``) writes, for each analysed frame, the frame as a
JPEG (``frames/<seq>.jpg``) and then the source's state (``state.json``, replaced
atomically): where the source stands, and the last ``[live] ring_seconds`` of frames with
their overlays, oldest first. The viewer (``web/views_live.py``) only reads them. They live
under ``$CLINIBOX_RUNTIME_DIR/live`` (the units set ``/run/clinibox``: a tmpfs, so 15 frames
a second do not wear the box's flash), else ``<state_dir>/live``; nothing there outlives a
reboot, and nothing is kept there for a patient (a session keeps DICOM through the spool).

``state.json``::

    {"format": 1, "source": "us-1", "label": "...", "modality": "US", "pid": 123,
     "wall": 1790000000.0,           # time.time() of this write
     "state": "running", "detail": {...},   # contracts.statuses.LiveState and its values
     "width": 1280, "height": 720, "region": [x, y, w, h], "mm_per_pixel": 0.1 | null,
     "fps": 15.2, "analysed": 1234, "dropped": 56, "hint": "hold_here",
     "session": {"id": 3, "kept": 2} | null,
     "last_seq": 17,                 # the newest frame's seq (0: none yet); kept by the
                                     # service's word and by the next process, which numbers
                                     # its frames on from it
     "frames": [{"seq": 17, "arrived": 12.345,  # time.monotonic() when the frame arrived
                 "hint": "none", "quality": ["too_dark"],
                 "lesions": [{"track": 4, "box": [x0, y0, x1, y1], "score": 0.81,
                              "long_axis_mm": 12.5 | null, "short_axis_mm": 9.1 | null,
                              "long_axis_px": 40.2,
                              "held": 5}]}, ...]}

Boxes are in the frame's own pixels (the whole captured frame, not the region).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clinibox_common.errors import CliniboxError

#: the state file's format number (a reader refuses another)
FORMAT = 1
STATE_FILE = "state.json"
FRAMES_DIR = "frames"
#: a source's name, as ``[[live.sources]] name`` allows it
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def live_root(state_dir: Path) -> Path:
    """Where the live sources' folders are: ``$CLINIBOX_RUNTIME_DIR/live`` or the state
    folder's ``live``."""
    runtime = os.environ.get("CLINIBOX_RUNTIME_DIR", "")
    return (Path(runtime) if runtime else Path(state_dir)) / "live"


def source_dir(root: Path, source: str) -> Path:
    """A source's folder; ValueError for a name no source may have (a path in disguise)."""
    if not _NAME.match(source):
        raise ValueError(f"not a live source name: {source!r}")
    return root / source


class SourceBusy(CliniboxError):
    """Another live process already reads this source (the service's, or a technician's in
    the foreground): one writer a source."""


def _hold_lock(root: Path, source: str) -> int | None:
    """The source's writer lock (``<root>/.<source>.lock``: an open descriptor, held until
    closed or the process ends), or None when another process holds it."""
    root.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd = os.open(root / f".{source_dir(root, source).name}.lock",
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def claim_source(root: Path, source: str) -> int:
    """Claim the source for this process (its live process's first step): the lock's
    descriptor, held until the process ends; SourceBusy when another process reads it."""
    fd = _hold_lock(root, source)
    if fd is None:
        holder = (read_state(root, source) or {}).get("pid", "?")
        raise SourceBusy(f"live source {source} is already read by another process "
                         f"(pid {holder}): stop it first (the service runs one per source; "
                         "`clinibox live` in the foreground is for a box whose service does "
                         "not)")
    return fd


class FrameWriter:
    """Write one source's frames and state (the live process's side)."""

    def __init__(self, root: Path, source: str, ring_seconds: float) -> None:
        self.folder = source_dir(root, source)
        self.frames = self.folder / FRAMES_DIR
        self.frames.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.ring_seconds = ring_seconds
        self.ring: list[dict[str, Any]] = []
        #: the newest frame's seq: the previous process's at first (its frames' numbers go on)
        self.last_seq = _last_seq(read_state(root, source))
        for old in [*self.frames.glob("*.jpg"), *self.frames.glob(".*.part"),
                    *self.folder.glob(".*.part")]:  # a previous process's frames and leftovers
            old.unlink(missing_ok=True)

    def publish(self, seq: int, jpeg: bytes, entry: dict[str, Any],
                state: dict[str, Any]) -> None:
        """Add frame ``seq`` (its JPEG and overlay ``entry``), drop frames older than the
        ring, then replace the state (``state`` without ``frames``)."""
        _replace(self.frames / f"{seq}.jpg", jpeg)
        self.ring.append({**entry, "seq": seq})
        self.last_seq = max(self.last_seq, seq)
        newest = float(entry["arrived"])
        while self.ring and newest - float(self.ring[0]["arrived"]) > self.ring_seconds:
            gone = self.ring.pop(0)
            (self.frames / f"{gone['seq']}.jpg").unlink(missing_ok=True)
        self.write_state(state)

    def write_state(self, state: dict[str, Any]) -> None:
        """Replace the state file (the ring of frames added)."""
        body = {"format": FORMAT, "wall": time.time(), "pid": os.getpid(), **state,
                "last_seq": self.last_seq, "frames": self.ring}
        _replace(self.folder / STATE_FILE, json.dumps(body, separators=(",", ":")).encode())


def write_stopped(root: Path, source: str, state: str, detail: dict[str, Any]) -> None:
    """The service's word on a source whose live process is not running (it ended, or
    live mode stops): the state without frames."""
    folder = source_dir(root, source)
    folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    lock = _hold_lock(root, source)
    if lock is None:  # another live process reads the source: its state stands
        return
    os.close(lock)
    body = {"format": FORMAT, "wall": time.time(), "pid": 0, "source": source,
            "state": state, "detail": detail,
            "last_seq": _last_seq(read_state(root, source)), "frames": []}
    _replace(folder / STATE_FILE, json.dumps(body).encode())


def _last_seq(state: dict[str, Any] | None) -> int:
    """The newest frame number a state file names (its ``last_seq``, its frames); 0: none."""
    if not state:
        return 0
    seqs = [state.get("last_seq"), *(f.get("seq") for f in state.get("frames") or []
                                      if isinstance(f, dict))]
    return max([int(s) for s in seqs if isinstance(s, int) and not isinstance(s, bool)] or [0])


def read_state(root: Path, source: str) -> dict[str, Any] | None:
    """A source's state as its live process last wrote it; None when there is none (or it
    cannot be read: a torn or foreign file)."""
    try:
        body = json.loads((source_dir(root, source) / STATE_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        return None
    return body


def state_version(root: Path, source: str) -> int:
    """The state file's modification time in ns (0 when absent): a cheap change signal."""
    try:
        return (source_dir(root, source) / STATE_FILE).stat().st_mtime_ns
    except OSError:
        return 0


def frame_bytes(root: Path, source: str, seq: int) -> bytes | None:
    """Frame ``seq``'s JPEG, or None when it is no longer (or not yet) in the ring."""
    with contextlib.suppress(OSError):
        return (source_dir(root, source) / FRAMES_DIR / f"{int(seq)}.jpg").read_bytes()
    return None


def newest_frame(state: dict[str, Any]) -> dict[str, Any] | None:
    """The newest frame entry of a state, or None."""
    frames: Sequence[dict[str, Any]] = state.get("frames") or []
    return frames[-1] if frames else None


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a tmpfs: no fsync)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    partial.write_bytes(data)
    os.replace(partial, path)
