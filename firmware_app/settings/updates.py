"""The ``[updates]`` section: model packages brought by the hospital's rollouts."""

from __future__ import annotations

from dataclasses import dataclass

from clinibox_common.settings_loader import in_range, setting


@dataclass
class UpdatesConfig:
    """Model packages the hospital's rollouts bring over the broker link."""

    max_kbps: float = setting(in_range(0, 1_000_000),
                              "the most a package download may use of the clinic's link, in "
                              "kilobits a second; 0 sets no cap", 256.0)
    min_free_mb: int = setting(in_range(0, 1_000_000),
                               "free disk a download must leave beyond the package and its "
                               "unpacked copy (MB); a box without it refuses the offer "
                               "(no_space)", 200)
    chunk_timeout_seconds: float = setting(in_range(1, 3600),
                                           "seconds to wait for one chunk before asking again",
                                           60.0)
    retry_seconds: float = setting(in_range(0.01, 86_400),
                                   "seconds to wait after the link failed a chunk", 30.0)
