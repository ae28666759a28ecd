"""The ``[learning]`` section: the box's part in the hospital's federated fine-tuning (its
Flower SuperNode, supervised by ``firmware_app/learning/node.py``; decision 0056)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from clinibox_common.i18n import gettext
from clinibox_common.settings_loader import ConfigError, setting

#: ``HH-HH``: the hours (local time) the box may train, from the first to the second
HOURS = re.compile(r"(\d{1,2})-(\d{1,2})")
#: ``host:port`` of the hospital's SuperLink (its Fleet API)
ADDRESS = re.compile(r"[A-Za-z0-9.-]{1,253}:\d{1,5}")


def check_hours(value: str) -> str | None:
    """``22-6`` (across midnight) or ``1-5``: two different whole hours 0 … 23."""
    found = HOURS.fullmatch(str(value))
    if not found or not all(0 <= int(h) <= 23 for h in found.groups()) or \
            int(found[1]) == int(found[2]):
        return gettext("two different whole hours 0 to 23, '22-6' for 22:00 to 06:00; got "
                       "%(value)s", value=repr(value))
    return None


def check_address(value: str) -> str | None:
    """Empty, or ``host:port``."""
    if value and not ADDRESS.fullmatch(str(value)):
        return gettext("host:port of the hospital's SuperLink, e.g. "
                       "federation.hospital.example:9092; got %(value)s", value=repr(value))
    return None


@dataclass
class LearningConfig:
    """The box's part in federated fine-tuning."""

    enabled: bool = setting(doc="take part in the hospital's federated fine-tuning: in the "
                                "hours below, write the case file from this box's labelled "
                                "images and run a Flower SuperNode that trains on it (only "
                                "the head's masked update leaves the box)", default=False)
    superlink: str = setting(check_address, "host:port of the hospital's SuperLink (needed "
                             "when enabled)", "")
    root_certificates: str = setting(doc="the hospital's CA certificate (PEM) the SuperLink's "
                                         "TLS certificate is checked against (needed when "
                                         "enabled)", default="")
    hours: str = setting(check_hours, "the hours (local time) the box may train, '22-6' for "
                         "22:00 to 06:00; outside them its SuperNode is stopped", "22-6")


def check_learning(config: LearningConfig) -> None:
    """The cross-key rule: enabled learning names the SuperLink and the hospital's CA."""
    if config.enabled and not (config.superlink and config.root_certificates):
        raise ConfigError(gettext("[learning] superlink and root_certificates: needed when "
                                  "[learning] enabled is true"))
