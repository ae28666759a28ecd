"""The ``[dicom]`` section: the DICOM Storage SCP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clinibox_common.settings_loader import in_range, one_of, setting
from firmware_app.settings.checks import check_ae_title


def _ae_titles(value: Any) -> str | None:
    """AE titles, each 1-16 printable ASCII characters without backslash."""
    for title in value:
        problem = check_ae_title(title)
        if problem:
            return problem
    return None


@dataclass
class DicomConfig:
    """The DICOM Storage SCP (C-ECHO, C-STORE)."""

    enabled: bool = setting(doc="run the Storage SCP", default=True)
    ae_title: str = setting(check_ae_title, "our AE title", "CLINIBOX")
    host: str = setting(doc="address to listen on", default="0.0.0.0")
    port: int = setting(in_range(1, 65535), "TCP port", 11112)
    receiver: str = setting(
        one_of("auto", "native", "pynetdicom"),
        'who owns the port: "native" is clinibox-receiver (dcmtk, built by make install), '
        '"pynetdicom" the Python receiver; "auto" takes the native one where it is built',
        "auto")
    allowed_calling_aets: list[str] = setting(
        _ae_titles, "calling AE titles allowed to connect; empty allows any", factory=list
    )
    max_associations: int = setting(
        in_range(1, 256), "concurrent associations; the last free one goes only to an address "
                        "that holds none (others are rejected as busy), so no few modalities "
                        "can take every slot", 8)
    max_associations_per_peer: int = setting(
        in_range(1, 256), "concurrent associations one address may hold (the rest stay free "
                        "for other modalities; never the last free slot, so at most "
                        "max_associations - 1)", 4)
    max_pdu_kb: int = setting(in_range(4, 4096), "largest PDU we accept (advertised to peers), KB",
                              256)
    acse_timeout: float = setting(in_range(1, 3600), "seconds a new connection has to associate "
                                                   "(and to release)", 10.0)
    dimse_timeout: float = setting(in_range(1, 3600), "seconds to wait for DIMSE messages", 60.0)
    network_timeout: float = setting(in_range(1, 86400),
                                     "seconds before an idle link is closed", 60.0)
    tls_enabled: bool = setting(doc="DICOM over TLS", default=False)
    tls_cert: str = setting(doc="server certificate (PEM) when TLS is on", default="")
    tls_key: str = setting(doc="server private key (PEM) when TLS is on", default="")
    tls_ca: str = setting(doc="CA bundle; when set, senders must present a certificate", default="")
