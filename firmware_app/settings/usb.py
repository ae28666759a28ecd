"""The ``[usb]`` section: import from USB media and plain folders."""

from __future__ import annotations

from dataclasses import dataclass

from clinibox_common.settings_loader import in_range, setting


@dataclass
class UsbConfig:
    """Import from mounted USB media and plain folders."""

    enabled: bool = setting(doc="watch the import folder", default=True)
    watch_dir: str = setting(doc="folder to watch; empty means <state_dir>/import", default="")
    poll_seconds: float = setting(in_range(0.05, 3600), "seconds between scans", 2.0)
    settle_seconds: float = setting(in_range(0, 3600),
                                    "a file is taken once unchanged this long", 2.0)
    max_depth: int = setting(in_range(1, 64), "deepest folder level scanned", 12)
