"""The box's clock moved forward to a time the hospital signed, when it is behind it.

A box with a flat clock battery and no network time starts at the image's build time
(``/usr/lib/clock-epoch``), or earlier. The hospital's enrolment bundle is then "not valid
yet" by the box's own clock, and a box with no keyboard could never take it. But the
bundle was issued by the hospital, so the real time is at least its issue: its ``issued_at``,
trusted only within the hour by which the CA's signed certificate starts earlier
(``contracts.enrolment.time_floor``). The stick's root step moves the clock forward to that
moment, never back, and keeps it for the next boot
(systemd-timesyncd starts the clock no earlier than its clock file's time). NTP, once it
answers, sets the exact time as always.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: systemd-timesyncd advances the clock at boot to this file's modification time
TIMESYNC_CLOCK_FILE = Path("/var/lib/systemd/timesync/clock")


def set_system_clock(moment: dt.datetime) -> None:
    """Set the system clock (root: CAP_SYS_TIME)."""
    time.clock_settime(time.CLOCK_REALTIME, moment.timestamp())


def keep_for_next_boot(moment: dt.datetime, clock_file: Path = TIMESYNC_CLOCK_FILE) -> None:
    """Have systemd-timesyncd start the next boot's clock no earlier than ``moment``."""
    folder = clock_file.parent
    if not folder.is_dir():
        return
    if not clock_file.exists():
        clock_file.touch(mode=0o644)
        owner = folder.stat()
        os.chown(clock_file, owner.st_uid, owner.st_gid)  # timesyncd's own, to update it
    stamp = moment.timestamp()
    os.utime(clock_file, (stamp, stamp))


def raise_clock(floor: dt.datetime, *, now: Callable[[], dt.datetime] | None = None,
                set_clock: Callable[[dt.datetime], None] = set_system_clock,
                keep: Callable[[dt.datetime], None] = keep_for_next_boot) -> float:
    """Move the clock forward to ``floor`` if it is behind it; the seconds it moved (0: it
    was not behind). OSError when the clock cannot be set."""
    current = (now or (lambda: dt.datetime.now(dt.timezone.utc)))()
    if current >= floor:
        return 0.0
    set_clock(floor)
    try:
        keep(floor)
    except OSError as exc:
        log.warning("the clock was set, but not kept for the next boot: %s", exc)
    moved = (floor - current).total_seconds()
    log.info("clock moved forward %.0f s, to %s, when the hospital issued its bundle", moved,
             floor.isoformat(timespec="seconds"))
    return moved
