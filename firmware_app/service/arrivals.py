"""Analysis waits for a burst of arrivals to pass: receiving never waits for analysis.

The worker's threads already run at a lower CPU weight (``priority.py``), but a job's
analysis still writes its results to the box's database, and every write there is a
durable commit (an fsync) that a receiver's commit must wait behind. While objects keep
arriving (a modality sending a series, one C-STORE every few milliseconds), the worker
holds its next job until the burst pauses for :data:`QUIET_S`, and never longer than
:data:`LONGEST_HOLD_S` a job, so a modality that never pauses still gets its images
analysed, one job per hold. A series is analysed as a volume once it is complete anyway.
"""

from __future__ import annotations

import threading
import time

#: a pause this long between arrivals ends a burst
QUIET_S = 0.25
#: the longest the worker holds one job while objects keep arriving
LONGEST_HOLD_S = 2.0


class Arrivals:
    """When the receivers last stored an object; the worker holds its next job while they
    keep storing."""

    def __init__(self, wake: threading.Event) -> None:
        self.wake = wake
        self.last = -1e9  # time.monotonic() of the last object stored

    def stored(self) -> None:
        """An object was stored (a receiver's ``on_stored``): note it and wake the worker."""
        self.last = time.monotonic()
        self.wake.set()

    def hold(self, stop: threading.Event) -> float:
        """Wait while objects keep arriving, at most LONGEST_HOLD_S (or until ``stop``);
        the seconds held."""
        start = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            quiet_for, held = now - self.last, now - start
            if quiet_for >= QUIET_S or held >= LONGEST_HOLD_S:
                return held
            stop.wait(min(QUIET_S - quiet_for, LONGEST_HOLD_S - held))
        return time.monotonic() - start
