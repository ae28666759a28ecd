"""The hospital's signed time handed to the clock's helper: a downlink ahead of the box's clock.

Every downlink carries the hospital's ``created_at``, signed with its downlink key: the real
time is at least that (a message that waited at the broker is only older). When an authentic
downlink arrives with a ``created_at`` more than ``CLOCK_TOLERANCE_SECONDS`` ahead of the box's
clock (a flat clock battery and no network time), the service leaves the envelope itself in
``[storage] state_dir``/``clock-incoming`` as ``<created_at>.downlink``. The service cannot set
the clock (its unit has ``ProtectClock=yes``); ``clinibox-clock.path`` starts the helper,
``clinibox hospital-time`` (``ops/hospital_clock.py``), which checks the envelope again with the
box's keys and moves the clock forward, never back. Only the newest time waits: a newer one
replaces it, an older one is not left.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from clinibox_common.contracts.downlink import CLOCK_TOLERANCE_SECONDS
from clinibox_common.fs import write_bytes_atomically

log = logging.getLogger(__name__)

SUFFIX = ".downlink"
#: a waiting time's file name: the hospital's ``created_at`` (epoch seconds, 12 digits)
FILE_NAME = re.compile(r"^(\d{12})\.downlink$")


def waiting(folder: Path) -> list[tuple[int, Path]]:
    """The times waiting in ``folder`` (``created_at``, file), oldest first."""
    try:
        names = [entry.name for entry in folder.iterdir()]
    except FileNotFoundError:
        return []
    found = [(int(match.group(1)), folder / name) for name in names
             if (match := FILE_NAME.fullmatch(name))]
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
    write_bytes_atomically(folder / f"{stamp:012d}{SUFFIX}", envelope, mode=0o640)
    for _, path in older:
        path.unlink(missing_ok=True)
    log.info("the hospital's signed time is ahead of the box's clock; handed to the clock's "
             "helper")
    return True
