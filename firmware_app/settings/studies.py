"""The ``[studies]`` section: when a study counts as complete."""

from __future__ import annotations

from dataclasses import dataclass

from clinibox_common.settings_loader import in_range, setting


@dataclass
class StudiesConfig:
    """When a study counts as complete: its alert, summary and DICOM results wait for it."""

    stable_seconds: float = setting(
        in_range(0.5, 86_400), "a study is complete when no instance of it has arrived for this "
        "long (and every instance received meanwhile is analysed); a later instance updates it",
        60.0)
