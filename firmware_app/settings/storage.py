"""The ``[storage]`` section: where the box keeps its state."""

from __future__ import annotations

from dataclasses import dataclass

from clinibox_common.settings_loader import in_range, setting


@dataclass
class StorageConfig:
    """Where the box keeps its state: spool, quarantine, databases."""

    state_dir: str = setting(doc="state folder (spool, quarantine, SQLite)", default="var")
    min_free_mb: int = setting(in_range(0, 10_000_000),
                               "refuse new objects below this free disk", 200)
    max_object_mb: int = setting(in_range(1, 4096), "largest DICOM object accepted", 1024)
