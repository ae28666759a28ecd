"""The ``[records]`` section and its ``[[records.receivers]]``: each study's result sent to
the clinic's information system, as HL7 v2 ORU^R01 over MLLP or as a FHIR R4
DiagnosticReport (``firmware_app/records``)."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from clinibox_common.contracts.words import Word
from clinibox_common.i18n import gettext
from clinibox_common.redaction import redact_url
from clinibox_common.settings_loader import (
    ConfigError,
    in_range,
    installed,
    one_of,
    setting,
    toml_value,
)
from firmware_app.settings.checks import (
    check_absolute_or_empty,
    check_name,
    is_plain_http_url,
    load_tables,
)


class RecordsProtocol(Word):
    """How a receiver is sent the results."""

    HL7_MLLP = "hl7-mllp"  # HL7 v2.5.1 ORU^R01 over MLLP (TCP), answered by an ACK
    FHIR = "fhir"  # a FHIR R4 transaction Bundle POSTed to the server's base url


#: the languages a report's sentences may be written in ("" follows ``[web] language``)
RECORD_LANGUAGES = ("", "en", "zh_CN")
#: an HL7 v2 HD namespace ID: printable ASCII, none of HL7's delimiters (| ^ ~ \ &)
_HL7_SAFE = frozenset(chr(c) for c in range(0x20, 0x7f)) - set("|^~\\&")


def _hl7_name(value: Any) -> str | None:
    """empty, or 1-20 printable ASCII characters without HL7's delimiters | ^ ~ \\ &."""
    if value and (len(value) > 20 or not set(value) <= _HL7_SAFE):
        return gettext("must be at most 20 printable ASCII characters without | ^ ~ \\ &, "
                       "got %(value)s", value=repr(value))
    return None


def _host_or_empty(value: Any) -> str | None:
    """empty, or a host name or an IPv4 or IPv6 address alone (no port, scheme or space: the
    port goes in port)."""
    if not value:
        return None
    try:
        ipaddress.IPv6Address(value)
        return None
    except ValueError:
        pass
    if any(c.isspace() or c in ":/@" for c in value):
        return gettext("must be a host name or address alone (the port goes in port), got "
                       "%(value)s", value=repr(value))
    return None


def _user(value: Any) -> str | None:
    """empty, or a user name for HTTP Basic: no colon (it ends the name) or control
    character."""
    if value and (":" in value or any(ord(c) < 0x20 or c == "\x7f" for c in value)):
        return gettext("must not hold a colon or a control character, got %(value)s",
                       value=repr(value))
    return None


def _system(value: Any) -> str | None:
    """empty, or a URI naming the issuer of the clinic's patient IDs: no space and none of
    | , $ \\ (they have a meaning in a FHIR search)."""
    if value and any(c.isspace() or c in "|,$\\" for c in value):
        return gettext("must be a URI without spaces or | , $ \\ (e.g. "
                       "urn:oid:1.2.156.112604.1), got %(value)s", value=repr(value))
    return None


def _fhir_url(value: Any) -> str | None:
    """empty, or the FHIR server's http(s):// base address."""
    if value and not is_plain_http_url(value):
        return gettext("must be an http:// or https:// address of the FHIR server's base "
                       "(ASCII, non-ASCII percent-encoded; a port of 1-65535 if any), "
                       "without a user, password, query or fragment (the user goes in "
                       "username, the password in password_file); got %(value)s",
                       value=repr(redact_url(value)))
    return None


@dataclass
class RecordsReceiver:
    """One clinic information system (HIS, RIS, EMR) on the clinic's network that receives
    each study's result."""

    name: str = setting(check_name, "a name for the log and the status (unique)", "his")
    protocol: str = setting(one_of(*RecordsProtocol), 'how results are sent: "hl7-mllp" '
                            '(HL7 v2 ORU^R01 to host and port) or "fhir" (a FHIR R4 '
                            "transaction to url)", RecordsProtocol.HL7_MLLP.value)
    host: str = setting(_host_or_empty, "hl7-mllp: host name or address of the MLLP "
                        "listener", "")
    port: int = setting(in_range(1, 65535), "hl7-mllp: its port", 2575)
    receiving_application: str = setting(_hl7_name, "hl7-mllp: MSH-5, the receiving "
                                         "application (empty: none)", "")
    receiving_facility: str = setting(_hl7_name, "hl7-mllp: MSH-6, the receiving facility "
                                      "(empty: none)", "")
    url: str = setting(_fhir_url, "fhir: the FHIR server's base address (the box POSTs a "
                       "transaction Bundle to it), e.g. https://his.clinic.lan/fhir", "")
    username: str = setting(_user, "fhir: the user the box signs in as (HTTP Basic, over "
                            "https:// only); empty: none", "")
    password_file: str = setting(check_absolute_or_empty, "fhir: a file (mode 0600, read by "
                                 "the service alone) holding username's password; never "
                                 "shown or logged", "")
    ca_file: str = setting(check_absolute_or_empty, "fhir: CA bundle (PEM) that signed the "
                           "server's certificate; empty trusts the system's CAs", "")

    @property
    def fhir(self) -> bool:
        """Sent as FHIR (not HL7 v2)."""
        return self.protocol == RecordsProtocol.FHIR

    def peer(self) -> str:
        """Where the results go, for messages and pages: ``host:port`` or the FHIR base
        address (it holds no password)."""
        return self.url if self.fhir else f"{self.host}:{self.port}"


#: the documentation line of ``[records] receivers``; ``describe_defaults`` replaces that
#: entry with a commented ``[[records.receivers]]`` example
RECEIVERS_DOC = ("the receivers: one [[records.receivers]] table each; none by default "
                 "(nothing is sent)")


@dataclass
class RecordsConfig:
    """Sending each study's result (and the hospital's verdict, as an amended report) to the
    clinic's information system."""

    sending_application: str = setting(_hl7_name, "MSH-3, this box as an application",
                                       "CLINIBOX")
    sending_facility: str = setting(_hl7_name, "MSH-4 and the FHIR report's performer: the "
                                    "clinic as its information system knows it (empty: "
                                    "none)", "")
    patient_id_system: str = setting(_system, "the issuer of the clinic's patient IDs: HL7 "
                                     "PID-3's assigning authority, the FHIR identifier's "
                                     "system (empty: the image's Issuer of Patient ID)", "")
    language: str = setting(one_of(*RECORD_LANGUAGES), 'the language of the report\'s '
                            'sentences: "zh_CN", "en", or "" for [web] language (English '
                            "when that is empty)", "")
    retry_min_seconds: float = setting(in_range(0.05, 3600),
                                       "first wait before a failed report is tried again "
                                       "(doubles with each failure)", 5.0)
    retry_max_seconds: float = setting(in_range(0.1, 86400),
                                       "longest wait between tries of a report", 300.0)
    max_refusals: int = setting(in_range(1, 1000),
                                "refusals (an HL7 AE/AR, a FHIR 4xx) before a report is held "
                                "(network failures do not count)", 5)
    timeout_seconds: float = setting(in_range(1, 3600), "seconds to connect, send a report "
                                     "and read its answer", 30.0)
    receivers: list[RecordsReceiver] = setting(doc=RECEIVERS_DOC, factory=list)


def load_receivers(raw: Any) -> list[RecordsReceiver]:
    """Build and check the ``[[records.receivers]]`` tables; ConfigError naming the key."""
    receivers = load_tables(raw, RecordsReceiver, "records.receivers", _required)
    for number, receiver in enumerate(receivers, start=1):
        _check_receiver(f"records.receivers {number}", receiver)
    return receivers


def _required(table: dict) -> tuple[str, str]:
    """The keys a receiver table needs: its name, and its url (FHIR) or host."""
    return ("name", "url" if table.get("protocol") == RecordsProtocol.FHIR else "host")


def _check_receiver(where: str, receiver: RecordsReceiver) -> None:
    if not receiver.fhir:
        for key in ("url", "username", "password_file", "ca_file"):
            if getattr(receiver, key):
                raise ConfigError(gettext('[%(where)s] %(key)s: only for protocol = "fhir"',
                                          where=where, key=key))
        if not receiver.host.strip():
            raise ConfigError(gettext("[%(where)s] host: must be a host name or address, got "
                                      "%(value)s", where=where, value=repr(receiver.host)))
        return
    for key in ("host", "receiving_application", "receiving_facility"):
        if getattr(receiver, key):
            raise ConfigError(gettext('[%(where)s] %(key)s: only for protocol = "hl7-mllp"',
                                      where=where, key=key))
    if bool(receiver.username) != bool(receiver.password_file):
        raise ConfigError(gettext("[%(where)s] password_file: username and password_file "
                                  "go together", where=where))
    https = urlsplit(receiver.url).scheme == "https"
    if not https and (receiver.username or receiver.ca_file):
        raise ConfigError(gettext("[%(where)s] url: a username or ca_file needs an https:// "
                                  "url (a password is never sent in clear)", where=where))


def check_records(config: RecordsConfig) -> None:
    """The section as a whole: the retry waits in order, the libraries installed."""
    if config.retry_min_seconds > config.retry_max_seconds:
        raise ConfigError(gettext("%(section)s retry_min_seconds: larger than "
                                  "retry_max_seconds", section="[records]"))
    for protocol, module, extra in ((RecordsProtocol.HL7_MLLP, "hl7apy", "records"),
                                    (RecordsProtocol.FHIR, "fhir.resources", "records")):
        if any(r.protocol == protocol for r in config.receivers) and not installed(module):
            raise ConfigError(gettext(
                '[records] receivers: protocol = "%(protocol)s" needs the Python package '
                "%(module)s, which is not installed here; install clinibox[%(extra)s] (make "
                "install-system EXTRAS=%(extra)s)", protocol=protocol.value, module=module,
                extra=extra))



def describe_receiver_example() -> str:
    """A commented ``[[records.receivers]]`` table with every key (a part of the example
    config)."""
    lines = ["# Clinic information systems: none by default, so nothing is sent. One table",
             "# per receiver; uncomment and edit (name and host, or name and url for fhir,",
             "# are required):", "# [[records.receivers]]"]
    example = RecordsReceiver(host="192.0.2.20")
    for spec in dataclasses.fields(example):
        lines.append(f"# # {spec.metadata.get('doc', '')}")
        lines.append(f"# {spec.name} = {toml_value(getattr(example, spec.name))}")
    return "\n".join(lines)
