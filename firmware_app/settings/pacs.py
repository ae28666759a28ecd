"""The ``[pacs]`` section and its ``[[pacs.destinations]]``: sending the DICOM results."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from clinibox_common.contracts.dicom_outputs import DICOM_OUTPUTS, default_outputs, output_keys
from clinibox_common.contracts.words import Word
from clinibox_common.i18n import gettext
from clinibox_common.redaction import redact_url
from clinibox_common.settings_loader import (
    ConfigError,
    in_range,
    names,
    one_of,
    setting,
    toml_value,
)
from firmware_app.settings.checks import (
    check_absolute_or_empty,
    check_ae_title,
    check_name,
    check_optional_ae_title,
    is_plain_http_url,
    load_tables,
)

#: the kinds of DICOM result document a PACS destination may be sent (``send``): the keys of
#: the table of DICOM outputs (``contracts/dicom_outputs.py``) when this module was imported;
#: ``send`` is checked against the table itself
PACS_DOCUMENT_KINDS = output_keys()


class PacsProtocol(Word):
    """How a destination is sent its results."""

    DIMSE = "dimse"  # C-STORE associations (PS3.7), optionally over TLS
    STOW_RS = "stow-rs"  # DICOMweb Store over HTTP(S) (PS3.18 10.5)


def _stow_url(value: Any) -> str | None:
    """empty, or an http(s):// URL with a host, a port of 1-65535 if any, an ASCII path
    (non-ASCII percent-encoded) and no user, password, query or fragment."""
    if value and not is_plain_http_url(value):
        return gettext("must be an http:// or https:// address of the DICOMweb service "
                       "(ASCII, non-ASCII percent-encoded; a port of 1-65535 if any), "
                       "without a user, password, query or fragment (the user goes in "
                       "username, the password in password_file); got %(value)s",
                       value=repr(redact_url(value)))
    return None


def _host(value: Any) -> str | None:
    """a host name or address (no spaces)."""
    if not value.strip() or any(c.isspace() for c in value):
        return gettext("must be a host name or address, got %(value)s", value=repr(value))
    return None


def _document_kinds(value: Any) -> str | None:
    """one or more keys of the DICOM outputs table (contracts/dicom_outputs.py)."""
    unknown = [kind for kind in value if kind not in DICOM_OUTPUTS]
    if unknown or not value:
        return gettext("must list one or more of %(options)s; got %(value)s",
                       options=names(output_keys()), value=repr(value))
    return None


@dataclass
class PacsDestination:
    """One PACS (or other Storage SCP, or DICOMweb service) on the clinic's network that
    receives the results."""

    name: str = setting(check_name, "a name for the log and the status (unique)", "pacs")
    protocol: str = setting(one_of(*PacsProtocol), 'how results are sent: "dimse" '
                            "(C-STORE to ae_title at host and port) or \"stow-rs\" "
                            "(DICOMweb STOW-RS to url)", PacsProtocol.DIMSE.value)
    ae_title: str = setting(check_ae_title, "the destination's (called) AE title", "PACS")
    host: str = setting(_host, "host name or address of the destination", "192.0.2.10")
    port: int = setting(in_range(1, 65535), "its DICOM port", 104)
    send: list[str] = setting(_document_kinds, "which results it gets: any of "
                              + ", ".join(f'"{kind}"' for kind in PACS_DOCUMENT_KINDS),
                              factory=default_outputs)
    tls: bool = setting(doc="DICOM over TLS", default=False)
    ca_file: str = setting(doc="CA bundle (PEM) that signed the destination's certificate; "
                               "empty trusts the system's CAs", default="")
    cert_file: str = setting(doc="this box's client certificate (PEM), if the destination "
                                 "asks for one", default="")
    key_file: str = setting(doc="private key (PEM) of cert_file", default="")
    url: str = setting(_stow_url, "stow-rs: the DICOMweb service's address (the box POSTs "
                       "to <url>/studies), e.g. https://pacs.clinic.lan/dicom-web", "")
    username: str = setting(doc="stow-rs: the user the box signs in as (HTTP Basic, over "
                            "https:// only); empty: none", default="")
    password_file: str = setting(check_absolute_or_empty, "stow-rs: a file (mode 0600, read by "
                                 "the service alone) holding username's password; never "
                                 "shown or logged", "")

    @property
    def stow(self) -> bool:
        """Sent by DICOMweb STOW-RS (not C-STORE)."""
        return self.protocol == PacsProtocol.STOW_RS

    def peer(self) -> str:
        """Where the results go, for messages and pages: ``AE@host:port``, or the STOW-RS
        service's address (it holds no password)."""
        if self.stow:
            return self.url
        return f"{self.ae_title}@{self.host}:{self.port}"


#: the documentation line of ``[pacs] destinations``; ``describe_defaults`` replaces that
#: entry with a commented ``[[pacs.destinations]]`` example
DESTINATIONS_DOC = ("the destinations: one [[pacs.destinations]] table each; none by default "
                    "(nothing is sent)")


@dataclass
class PacsConfig:
    """Sending the DICOM results (SR, SEG, key image) back to the clinic's PACS."""

    calling_ae_title: str = setting(check_optional_ae_title, "our (calling) AE title when sending; "
                                    "empty means [dicom] ae_title", "")
    retry_min_seconds: float = setting(in_range(0.05, 3600),
                                       "first wait before a failed document is tried again "
                                       "(doubles with each failure)", 5.0)
    retry_max_seconds: float = setting(in_range(0.1, 86400),
                                       "longest wait between tries of a document", 300.0)
    max_refusals: int = setting(in_range(1, 1000),
                                "C-STORE failure statuses before a document is held "
                                "(network failures do not count)", 5)
    connect_timeout: float = setting(in_range(1, 3600), "seconds to open the connection and "
                                     "associate", 30.0)
    dimse_timeout: float = setting(in_range(1, 3600), "seconds to wait for each C-STORE "
                                   "response", 120.0)
    network_timeout: float = setting(in_range(1, 86400),
                                     "seconds before a silent link is closed", 120.0)
    destinations: list[PacsDestination] = setting(doc=DESTINATIONS_DOC, factory=list)


def load_destinations(raw: Any) -> list[PacsDestination]:
    """Build and check the ``[[pacs.destinations]]`` tables; ConfigError naming the key."""
    destinations = load_tables(raw, PacsDestination, "pacs.destinations", _required)
    for number, destination in enumerate(destinations, start=1):
        _check_destination(f"pacs.destinations {number}", destination)
    return destinations


def _required(table: dict) -> tuple[str, str]:
    """The keys a destination table needs: its name, and its host (C-STORE) or url."""
    return ("name", "url" if table.get("protocol") == PacsProtocol.STOW_RS else "host")


def _check_destination(where: str, destination: PacsDestination) -> None:
    if destination.stow:
        _check_stow(where, destination)
        return
    for key in ("url", "username", "password_file"):
        if getattr(destination, key):
            raise ConfigError(gettext('[%(where)s] %(key)s: only for protocol = "stow-rs"',
                                      where=where, key=key))
    if bool(destination.cert_file) != bool(destination.key_file):
        raise ConfigError(gettext("[%(where)s] cert_file: cert_file and key_file go together",
                                  where=where))
    if not destination.tls and (destination.ca_file or destination.cert_file):
        raise ConfigError(gettext("[%(where)s] tls: ca_file, cert_file and key_file need tls = "
                                  "true", where=where))


def _check_stow(where: str, destination: PacsDestination) -> None:
    """A STOW-RS destination: TLS is its https:// address; a password goes with a user,
    over https:// alone (never in clear on the clinic's network)."""
    https = urlsplit(destination.url).scheme == "https"
    if destination.tls:
        raise ConfigError(gettext('[%(where)s] tls: for protocol = "stow-rs" TLS is an '
                                  "https:// url", where=where))
    if bool(destination.username) != bool(destination.password_file):
        raise ConfigError(gettext("[%(where)s] password_file: username and password_file "
                                  "go together", where=where))
    if not https and (destination.username or destination.ca_file or destination.cert_file):
        raise ConfigError(gettext("[%(where)s] url: a username, ca_file or cert_file needs "
                                  "an https:// url (a password is never sent in clear)",
                                  where=where))
    if bool(destination.cert_file) != bool(destination.key_file):
        raise ConfigError(gettext("[%(where)s] cert_file: cert_file and key_file go together",
                                  where=where))


def describe_destination_example() -> str:
    """A commented ``[[pacs.destinations]]`` table with every key (the last part of the
    example config)."""
    lines = ["# PACS destinations: none by default, so nothing is sent. One table per",
             "# destination; uncomment and edit (name and host are required):",
             "# [[pacs.destinations]]"]
    example = PacsDestination()
    for spec in dataclasses.fields(example):
        lines.append(f"# # {spec.metadata.get('doc', '')}")
        lines.append(f"# {spec.name} = {toml_value(getattr(example, spec.name))}")
    return "\n".join(lines)
