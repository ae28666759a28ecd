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
import stat
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
    """Have systemd-timesyncd start the next boot's clock no earlier than ``moment``. Its
    folder belongs to its own user, so root works there through file descriptors only and
    follows no link: a link or anything but a regular file named ``clock`` is left alone."""
    try:
        folder = os.open(clock_file.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return  # no systemd-timesyncd here
    try:
        try:
            fd = os.open(clock_file.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         0o644, dir_fd=folder)
            owner = os.fstat(folder)
            os.fchown(fd, owner.st_uid, owner.st_gid)  # timesyncd's own, to update it
        except FileExistsError:
            fd = os.open(clock_file.name, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK,
                         dir_fd=folder)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{clock_file} is not a regular file")
            stamp = moment.timestamp()
            os.utime(fd, (stamp, stamp))
        finally:
            os.close(fd)
    finally:
        os.close(folder)


def raise_clock(floor: dt.datetime, *, now: Callable[[], dt.datetime] | None = None,
                set_clock: Callable[[dt.datetime], None] = set_system_clock,
                keep: Callable[[dt.datetime], None] = keep_for_next_boot,
                source: str = "when the hospital issued its bundle") -> float:
    """Move the clock forward to ``floor`` if it is behind it; the seconds it moved (0: it
    was not behind). ``source`` says in the log what the floor is. OSError when the clock
    cannot be set."""
    current = (now or (lambda: dt.datetime.now(dt.timezone.utc)))()
    if current >= floor:
        return 0.0
    set_clock(floor)
    try:
        keep(floor)
    except OSError as exc:
        log.warning("the clock was set, but not kept for the next boot: %s", exc)
    moved = (floor - current).total_seconds()
    log.info("clock moved forward %.0f s, to %s, %s", moved, floor.isoformat(timespec="seconds"),
             source)
    return moved
