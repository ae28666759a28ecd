"""The ``[worker]`` section: the processing worker."""

from __future__ import annotations

from dataclasses import dataclass

from clinibox_common.settings_loader import in_range, setting


@dataclass
class WorkerConfig:
    """The processing worker (decode, quality, inference, results)."""

    enabled: bool = setting(doc="process queued objects", default=True)
    max_attempts: int = setting(in_range(1, 100), "tries before an object is marked failed", 3)
    max_frames_per_instance: int = setting(in_range(1, 1000), "frames inferred per multi-frame", 8)
    poll_seconds: float = setting(in_range(0.01, 60), "idle wait between queue checks", 0.2)
