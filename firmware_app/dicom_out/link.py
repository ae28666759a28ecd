"""The seam between the DICOM outbox's sender and a destination: one link carrying a batch.

A link is opened to one destination for one pass of the sender (an association for
C-STORE, a kept-alive HTTP(S) connection for STOW-RS) and sends one document at a time:
``store`` says whether the destination has it (``StoreOutcome``). Opening it raises
``LinkFailed`` saying why, in plain words, and how (a ``storage.event_codes`` ``PACS_…``
code). Which protocol opens a link is wired in one place: ``sender.LINKS``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pynetdicom.status import GENERAL_STATUS, STORAGE_SERVICE_CLASS_STATUS

from clinibox_common.errors import CliniboxError
from firmware_app.settings.pacs import PacsDestination
from firmware_app.storage import event_codes as codes


class LinkFailed(CliniboxError):
    """No link with the destination; the message says why, in plain words, and ``failure``
    how (a ``storage.event_codes`` ``PACS_…`` code)."""

    kind = "PACS link failed"

    def __init__(self, message: str, failure: str = codes.PACS_UNREACHABLE) -> None:
        super().__init__(message)
        self.failure = failure


@dataclass(frozen=True)
class StoreOutcome:
    """The destination's answer to one document."""

    stored: bool
    detail: str
    #: the link is gone or useless (aborted, timed out, refused our credentials): the rest
    #: of the batch must wait
    association_lost: bool = False
    #: the storage status (C-STORE Status, STOW-RS FailureReason or WarningReason), when
    #: an answer came
    status: int | None = None
    #: how it failed (a ``storage.event_codes`` ``PACS_…`` code; "" when stored)
    failure: str = ""

    @property
    def warning(self) -> bool:
        """Stored, but with a warning status (coercion, elements discarded, SOP class)."""
        return self.stored and self.status not in (None, 0x0000)


@dataclass(frozen=True)
class Document:
    """One document of a batch: its file and the UIDs its answer is matched by."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


class Link(Protocol):
    """An open link to one destination."""

    def store(self, document: Document) -> StoreOutcome:
        """Send one document; OSError or InvalidDicomError when its file cannot be read."""
        ...

    def close(self) -> None:
        """End the link (release the association, close the connection)."""
        ...


def tls_context(destination: PacsDestination) -> ssl.SSLContext:
    """A TLS 1.2+ client context: the destination's CA (or the system's), our certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=destination.ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if destination.cert_file:
        context.load_cert_chain(destination.cert_file, destination.key_file)
    return context


def status_text(code: int) -> str:
    """``0xA700 Refused: Out of Resources``: a storage status and its meaning."""
    meaning = STORAGE_SERVICE_CLASS_STATUS.get(code) or GENERAL_STATUS.get(code)
    return f"0x{code:04X} {meaning[1]}" if meaning else f"0x{code:04X}"
