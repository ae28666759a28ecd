"""The ``[mqtt]`` section: the TLS link to the hospital's broker."""

from __future__ import annotations

from dataclasses import dataclass

from clinibox_common.settings_loader import in_range, setting


@dataclass
class MqttConfig:
    """The TLS link to the central hospital's broker; disabled until a host is set."""

    host: str = setting(doc="broker host; empty keeps messages waiting in the outbox", default="")
    port: int = setting(in_range(1, 65535), "broker TLS port", 8883)
    ca_file: str = setting(doc="CA bundle (PEM) that signed the broker's certificate", default="")
    cert_file: str = setting(doc="this box's client certificate (PEM, CN clinic/device)",
                             default="")
    key_file: str = setting(doc="private key (PEM) of the client certificate", default="")
    keepalive: int = setting(in_range(5, 3600), "seconds between MQTT keep-alive pings", 60)
    session_expiry_seconds: int = setting(
        in_range(0, 4_294_967_294), "how long the broker keeps this box's session (and the "
        "hospital's verdicts for it, QoS 1) while the box is away", 30 * 86400)
