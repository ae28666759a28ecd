"""The ``[retention]`` section: when received images are deleted."""

from __future__ import annotations

from dataclasses import dataclass

from clinibox_common.settings_loader import in_range, setting


@dataclass
class RetentionConfig:
    """When received images are deleted (results are always kept)."""

    image_days: float = setting(in_range(0, 36500), "delete images this many days after they "
                                "arrived; 0 keeps them until the disk fills", 30.0)
    quarantine_days: float = setting(in_range(0, 36500),
                                     "delete quarantined objects this many days "
                                     "after they arrived; 0 keeps them", 90.0)
    max_disk_used_pct: float = setting(in_range(1, 100), "above this disk use, delete the oldest "
                                       "safe images first until below it", 85.0)
