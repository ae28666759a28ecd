"""The ``[audit]`` section: the access audit trail."""

from __future__ import annotations

from dataclasses import dataclass

from clinibox_common.settings_loader import in_range, setting


@dataclass
class AuditConfig:
    """The access audit trail (``clinibox audit``, the viewer's /audit page)."""

    keep_days: float = setting(in_range(0, 36500), "keep audit rows this many days (the hourly "
                               "retention pass prunes older ones); 0 keeps them all", 365.0)
    max_mb: float = setting(in_range(0, 10_000_000), "past this many MB of audit rows, the device "
                          "page and clinibox status raise an alarm (no row is ever dropped: "
                          "export, then shorten keep_days); 0: no alarm", 256.0)
