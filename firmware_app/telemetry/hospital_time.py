"""The hospital's signed time handed to the clock's helper: a downlink ahead of the box's clock.

Every downlink carries the hospital's ``created_at``, signed with its downlink key: the real
time is at least that (a message that waited at the broker is only older). When an authentic
downlink arrives with a ``created_at`` more than ``CLOCK_TOLERANCE_SECONDS`` ahead of the box's
clock (a flat clock battery and no network time), the service leaves the envelope itself in
``[storage] state_dir``/``clock-incoming`` as ``<created_at, 13 digits>.downlink``. The
service cannot set the clock (its unit has ``ProtectClock=yes``); ``clinibox-clock.path``
starts the helper, ``clinibox hospital-time`` (``ops/hospital_clock.py``), which checks the
envelope again with the box's keys and moves the clock forward, never back. Only the newest
time waits: a newer one replaces it, an older one is not left.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

from clinibox_common.contracts.downlink import CLOCK_TOLERANCE_SECONDS
from clinibox_common.fs import write_bytes_atomically

log = logging.getLogger(__name__)

#: what ``clinibox-clock.path`` watches for (``PathExistsGlob=…/*.downlink``)
SUFFIX = ".downlink"
#: a waiting time's file name: the hospital's ``created_at`` (epoch seconds, 13 ASCII digits:
#: a downlink's times are at most ``egress.MAX_SECONDS``, 2**40)
FILE_NAME = re.compile(r"^([0-9]{13})\.downlink$", re.ASCII)


def entries(folder: Path) -> list[Path]:
    """Everything in ``folder`` the path unit starts the helper for (``*.downlink``)."""
    try:
        return sorted(entry for entry in folder.iterdir() if entry.name.endswith(SUFFIX))
    except FileNotFoundError:
        return []


def waiting(folder: Path) -> list[tuple[int, Path]]:
    """The times waiting in ``folder`` (``created_at``, file), oldest first."""
    found = [(int(match.group(1)), entry) for entry in entries(folder)
             if (match := FILE_NAME.fullmatch(entry.name))]
    return sorted(found)


def is_ahead(created_at: float, now: float) -> bool:
    """Whether the hospital's ``created_at`` is ahead of the box's clock ``now`` by more than
    the tolerance."""
    return created_at > now + CLOCK_TOLERANCE_SECONDS


def hand_over(folder: Path, envelope: bytes, created_at: float) -> bool:
    """Leave ``envelope`` (an authentic downlink built at ``created_at``) for the clock's
    helper, unless a time as new or newer waits already; whether it was left. The older
    times waiting are removed (the newest bound is the one that counts)."""
    stamp = int(created_at)
    older = waiting(folder)
    if older and older[-1][0] >= stamp:
        return False
    folder.mkdir(mode=0o750, parents=True, exist_ok=True)
    write_bytes_atomically(folder / f"{stamp:013d}{SUFFIX}", envelope, mode=0o640)
    for _, path in older:  # the helper removes whatever is not a file
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    log.info("the hospital's signed time is ahead of the box's clock; handed to the clock's "
             "helper")
    return True
