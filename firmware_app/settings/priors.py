"""The ``[priors]`` section: the patient's earlier studies asked of the clinic's PACS (C-FIND)
and fetched (C-GET) for a study with a finding, so that each lesion is shown beside its
earlier self (``ingest/priors.py`` asks, ``storage/growth.py`` compares)."""

from __future__ import annotations

from dataclasses import dataclass

from clinibox_common.i18n import gettext
from clinibox_common.settings_loader import ConfigError, in_range, setting
from firmware_app.settings.checks import (
    check_ae_title,
    check_optional_ae_title,
    check_optional_host,
)


@dataclass
class PriorsConfig:
    """The patient's earlier studies from the PACS (Query/Retrieve: C-FIND, then C-GET)."""

    enabled: bool = setting(doc="for a study with a finding, ask the PACS for the patient's "
                                "earlier studies of the same modality and body part, fetch "
                                "them and show each lesion beside its earlier size; the PACS "
                                "must know the box's AE title (it asks with C-GET)",
                            default=False)
    host: str = setting(check_optional_host, "host name or address of the PACS's Query/Retrieve "
                        "service (needed when enabled)", "")
    port: int = setting(in_range(1, 65535), "its DICOM port", 104)
    ae_title: str = setting(check_ae_title, "the PACS's (called) AE title", "PACS")
    calling_ae_title: str = setting(check_optional_ae_title, "the AE title the box asks as; empty "
                                    "means [pacs] calling_ae_title, else [dicom] ae_title", "")
    max_studies: int = setting(in_range(1, 10), "the most earlier studies fetched for one "
                               "study (the latest ones)", 1)
    max_images: int = setting(in_range(1, 5000), "the most images fetched for one study's "
                              "earlier studies", 300)
    max_megabytes: int = setting(in_range(1, 10000), "the most megabytes fetched for one "
                                 "study's earlier studies", 300)
    timeout: float = setting(in_range(1, 300), "seconds to connect, and to wait for each "
                             "answer, before the PACS is said not to answer", 20.0)
    wait_seconds: float = setting(in_range(0, 3600), "the longest a study with a finding "
                                  "waits, once stable, for its earlier studies to be fetched "
                                  "and analysed before its results and alert go without them",
                                  120.0)


def check_priors(config: PriorsConfig) -> None:
    """The cross-key rule: enabled priors name the PACS's host."""
    if config.enabled and not config.host:
        raise ConfigError(gettext("[priors] host: needed when [priors] enabled is true"))
