"""How fast a rollout's package comes in, for the device page and the hospital.

:class:`DownloadMeter` counts the bytes the updater appends and measures the rate over the
last :data:`WINDOW_SECONDS` (a rural link's pace changes; the whole download's average would
hide a link that just slowed down). It says when the figures are worth writing down again
(every :data:`SAVE_SECONDS`, not at every chunk: chunks may be small and many) and when a
tenth of the archive more has come (the hospital is told then, not more often: the box's
messages cross the same slow link).
"""

from __future__ import annotations

import math
from collections import deque

#: the span the rate is measured over (seconds)
WINDOW_SECONDS = 30.0
#: the least time between two notes of the progress in the box's database (seconds)
SAVE_SECONDS = 2.0


class DownloadMeter:
    """Bytes received of ``total``, the rate, and when to note or tell them."""

    def __init__(self, total: int, received: int, now: float) -> None:
        self.total = max(0, int(total))
        self.received = min(max(0, int(received)), self.total)
        self._samples: deque[tuple[float, int]] = deque([(now, self.received)])
        self._saved_at = -math.inf
        self._told = self.tenth()  # a resumed download does not tell again what it told

    def add(self, count: int, now: float) -> None:
        """``count`` more bytes arrived at ``now`` (monotonic seconds)."""
        self.received = min(self.total, self.received + int(count))
        self._samples.append((now, self.received))
        while len(self._samples) > 2 and now - self._samples[1][0] >= WINDOW_SECONDS:
            self._samples.popleft()  # keep one sample at or before the window's start

    def rate(self) -> float:
        """Bytes a second over the last window (0.0 until two samples span some time)."""
        (start, first), (end, last) = self._samples[0], self._samples[-1]
        return (last - first) / (end - start) if end > start else 0.0

    def tenth(self) -> int:
        """How many whole tenths of the archive have come (0-10)."""
        return 10 * self.received // self.total if self.total else 10

    def save_due(self, now: float) -> bool:
        """Whether the figures should be written now (and they count as written)."""
        if now - self._saved_at < SAVE_SECONDS:
            return False
        self._saved_at = now
        return True

    def tell_due(self) -> bool:
        """Whether another tenth came since the hospital was last told (and it counts as told);
        the whole archive is told by the ``downloaded`` step instead."""
        tenth = self.tenth()
        if tenth <= self._told or tenth >= 10:
            return False
        self._told = tenth
        return True
