"""The box's one disk figure: the filesystem that holds its state folder (database, spool,
quarantine, downloads), measured one way everywhere.

The device page, ``clinibox status``, the self-test, the health message to the hospital and
the retention pass all read :func:`disk_figures` (or :func:`usage`), so they say the same
percentage, and it is the one ``df`` prints for that filesystem's mount point: used blocks
over the blocks the box can use (used + available; the blocks a filesystem keeps back for
root count in neither).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Usage:
    """Bytes of one filesystem as ``df`` counts them (``total`` = ``used`` + ``free``)."""

    total: int
    used: int
    free: int


def existing(path: Path) -> Path:
    """``path``, or its nearest folder that exists (a box not provisioned yet)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding ``path`` (``df``'s "Mounted on")."""
    here = Path(os.path.realpath(existing(path)))
    while not os.path.ismount(here) and here != here.parent:
        here = here.parent
    return here


def usage(path: Path) -> Usage:
    """The filesystem holding ``path``: bytes used, free for the box, and their sum."""
    stats = os.statvfs(existing(path))
    used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
    free = stats.f_bavail * stats.f_frsize
    return Usage(used + free, used, free)


def used_percent(measured: Usage) -> float:
    """Percent used, as ``df`` shows it (one decimal; 100 for a filesystem of no size)."""
    return round(100.0 * measured.used / measured.total, 1) if measured.total else 100.0


def disk_figures(state_dir: Path) -> dict[str, Any]:
    """The state folder's filesystem: free and total MB, percent used and its mount point."""
    measured = usage(state_dir)
    return {"free_mb": measured.free // 2**20, "total_mb": measured.total // 2**20,
            "used_percent": used_percent(measured), "mount": str(mount_point(state_dir))}
