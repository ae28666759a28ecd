"""The seam between the records sender and a receiver's protocol: a link, opened to one
receiver for one pass, sends one message at a time and says what became of it.

``mllp.MllpLink`` (HL7 v2) and ``fhir_link.FhirLink`` (FHIR over HTTP(S)) are the two; the
sender picks one by the receiver's ``protocol`` (``sender.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from clinibox_common.errors import CliniboxError


class LinkFailed(CliniboxError):
    """The receiver could not be reached or the link broke: every report waiting for it
    stays pending. ``failure`` is the code the event records (``storage/event_codes``)."""

    def __init__(self, message: str, failure: str) -> None:
        super().__init__(message)
        self.failure = failure


@dataclass(frozen=True)
class Delivered:
    """The receiver accepted the message (``answer``: AA, CA or the HTTP status)."""

    answer: str


@dataclass(frozen=True)
class Refused:
    """The receiver answered and refused the message (``status``: AE, AR, an HTTP status),
    ``detail`` saying why as it said it."""

    status: str
    detail: str


Outcome = Delivered | Refused


class Link(Protocol):
    """An open link to one receiver."""

    def send(self, message: bytes, control_id: str) -> Outcome:
        """Send one message; LinkFailed when the link cannot go on."""

    def close(self) -> None:
        """Close the link."""
