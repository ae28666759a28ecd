"""The ``[worklist]`` section: the clinic's Modality Worklist, which the live page's session
form picks today's scheduled patients from (``ingest/worklist.py`` asks it, C-FIND)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clinibox_common.i18n import gettext
from clinibox_common.settings_loader import ConfigError, in_range, names, setting
from firmware_app.settings.checks import (
    check_ae_title,
    check_optional_ae_title,
    check_optional_host,
)

#: the modalities a worklist may be asked for (DICOM's defined terms the box's sources show)
WORKLIST_MODALITIES = ("US", "ES", "XC", "GM", "OP", "IVUS", "OT")


def _modalities(value: Any) -> str | None:
    """one or more of WORKLIST_MODALITIES."""
    if not value or any(item not in WORKLIST_MODALITIES for item in value):
        return gettext("must list one or more of %(options)s; got %(value)s",
                       options=names(WORKLIST_MODALITIES), value=repr(value))
    return None


@dataclass
class WorklistConfig:
    """The clinic's Modality Worklist (C-FIND): today's scheduled patients to pick from."""

    enabled: bool = setting(doc="ask the clinic's Modality Worklist (DICOM MWL, not the "
                                "viewer's list of studies) for today's scheduled patients; "
                                "off: the patient is typed on the live page", default=False)
    host: str = setting(check_optional_host, "host name or address of the worklist (needed when "
                        "enabled)", "")
    port: int = setting(in_range(1, 65535), "its DICOM port", 104)
    ae_title: str = setting(check_ae_title, "the worklist's (called) AE title", "WORKLIST")
    station_ae_title: str = setting(check_optional_ae_title, "the AE title the box asks as (and, "
                                    "with match_station, the station asked for); empty means "
                                    "[dicom] ae_title", "")
    match_station: bool = setting(doc="ask only for the steps scheduled on station_ae_title "
                                      "(the worklist schedules per station)", default=False)
    modalities: list[str] = setting(_modalities, "the modalities asked for: any of "
                                    + ", ".join(f'"{m}"' for m in WORKLIST_MODALITIES),
                                    factory=lambda: ["US", "ES"])
    refresh_seconds: float = setting(in_range(10, 3600), "seconds between two questions to "
                                     "the worklist", 60.0)
    timeout: float = setting(in_range(1, 120), "seconds to connect, and to wait for each "
                             "answer, before the worklist is said down", 10.0)
    max_items: int = setting(in_range(1, 1000), "the most scheduled steps kept from one "
                             "answer (the rest are not asked for)", 200)


def check_worklist(config: WorklistConfig) -> None:
    """The cross-key rule: an enabled worklist names its host."""
    if config.enabled and not config.host:
        raise ConfigError(gettext("[worklist] host: needed when [worklist] enabled is true"))
