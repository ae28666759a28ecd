"""The box's enrolment code, read from its own key: what its screen, its device page and
``clinibox provision`` show the technician to send to the hospital."""

from __future__ import annotations

from clinibox_common.contracts import signing
from clinibox_common.contracts.enrolment import EnrolmentCode
from firmware_app.settings.box import Config


def enrolment_code(config: Config) -> str | None:
    """The code the hospital enrols this box with (``clinibox central enrol-code``), once it is
    provisioned and has its key; None before. Makes nothing: reading only."""
    if not config.mqtt.host or not config.device_key_path.is_file():
        return None
    key = signing.load_private_key(config.device_key_path)
    return EnrolmentCode(config.telemetry.clinic, config.telemetry.device,
                         key.public_key()).text()
