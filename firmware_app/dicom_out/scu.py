"""One association with a PACS destination as a Storage SCU (pynetdicom): open it, C-STORE.

``open_association`` proposes one presentation context per SOP class to be sent
(Explicit VR Little Endian, plus each file's own transfer syntax), optionally over
TLS, and explains in plain words why an association could not be had: connection
refused, TLS handshake failed, association rejected (with the peer's reason), no
answer in time. ``store`` sends one data set and says whether the peer stored it:
Success (0x0000) and the storing warnings (0xB000 coercion of data elements,
0xB006 elements discarded, 0xB007 data set does not match SOP class) count as
stored; anything else, or no answer, does not.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterable

from pydicom import Dataset, dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom import AE, Association, evt

from firmware_app.dicom_out.link import (
    Document,
    LinkFailed,
    StoreOutcome,
    status_text,
    tls_context,
)
from firmware_app.settings.pacs import PacsConfig, PacsDestination
from firmware_app.storage import event_codes as codes

#: C-STORE statuses that mean the destination has the object
STORED_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})
#: the most presentation contexts one association may propose (PS3.8: 128)
MAX_CONTEXTS = 128


def contexts_for(classes: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Transfer syntaxes to propose per SOP class: Explicit VR Little Endian and each file's
    own, from ``(sop_class_uid, transfer_syntax_uid)`` pairs."""
    proposed: dict[str, list[str]] = {}
    for sop_class, syntax in classes:
        syntaxes = proposed.setdefault(sop_class, [ExplicitVRLittleEndian])
        if syntax and syntax not in syntaxes:
            syntaxes.append(syntax)
    if len(proposed) > MAX_CONTEXTS:
        raise LinkFailed(f"{len(proposed)} SOP classes in one batch: more than "
                         f"{MAX_CONTEXTS} presentation contexts", codes.PACS_CANNOT_SEND)
    return proposed


def open_association(destination: PacsDestination, settings: PacsConfig, calling_ae: str,
                     classes: Iterable[tuple[str, str]]) -> Association:
    """Associate with ``destination`` for these ``(SOP class, transfer syntax)`` pairs, or
    raise LinkFailed saying why."""
    ae = AE(ae_title=calling_ae)
    ae.connection_timeout = settings.connect_timeout
    ae.acse_timeout = settings.connect_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    for sop_class, syntaxes in contexts_for(classes).items():
        ae.add_requested_context(sop_class, syntaxes)
    tls_args = None
    if destination.tls:
        try:
            tls_args = (tls_context(destination), destination.host)
        except (OSError, ssl.SSLError) as exc:
            raise LinkFailed(f"TLS set-up for {destination.peer()} failed: {exc}",
                                    codes.PACS_TLS) from exc
    connected: list[bool] = []

    def on_open(event: evt.Event) -> None:
        connected.append(True)
        no_delay(event.assoc)

    handlers = [(evt.EVT_CONN_OPEN, on_open)]
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title,
                         tls_args=tls_args, evt_handlers=handlers)
    if assoc.is_established:
        return assoc
    raise LinkFailed(*_why_not(assoc, destination, settings, bool(connected)))


def no_delay(assoc: Association) -> None:
    """Switch Nagle's algorithm off: each C-STORE is a command PDU then data PDUs, and
    with it on every document waits for the peer's delayed ACK (40 ms or more)."""
    raw = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if raw is not None:
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _why_not(assoc: Association, destination: PacsDestination, settings: PacsConfig,
             connected: bool) -> tuple[str, str]:
    """Plain words for an association that was not established, and how it failed."""
    peer = destination.peer()
    if assoc.is_rejected:
        answer = assoc.acceptor.primitive
        if answer is not None:
            return (f"association rejected by {peer}: {answer.reason_str} "
                    f"({answer.result_str}, {answer.source_str})",
                    codes.pacs_rejection(answer.result_source, answer.diagnostic))
        return f"association rejected by {peer}", codes.PACS_REJECTED
    if not connected:  # pynetdicom calls a connection that never opened "aborted" too
        problem = _connect_problem(destination, settings)
        failure = codes.PACS_TLS if "TLS" in problem else codes.PACS_UNREACHABLE
        return f"cannot connect to {peer}: {problem}", failure
    if assoc.is_aborted:
        if assoc.acceptor.primitive is None:  # no A-ASSOCIATE-AC or -RJ was read
            return (f"{peer} ended the association request without answering it",
                    codes.PACS_ABORTED)
        if not assoc.accepted_contexts:
            return (f"{peer} accepted none of the proposed SOP classes (association aborted)",
                    codes.PACS_CANNOT_SEND)
        return f"association aborted by {peer}", codes.PACS_ABORTED
    return (f"{peer} did not answer the association request within "
            f"{settings.connect_timeout:g} s", codes.PACS_NO_ANSWER)


def _connect_problem(destination: PacsDestination, settings: PacsConfig) -> str:
    """Try the connection (and TLS handshake) again by hand to name what goes wrong."""
    timeout = min(settings.connect_timeout, 10.0)
    try:
        with socket.create_connection((destination.host, destination.port), timeout) as sock:
            if not destination.tls:
                return "the connection failed"
            context = tls_context(destination)
            with context.wrap_socket(sock, server_hostname=destination.host):
                return "the TLS connection failed"
    except ssl.SSLError as exc:
        return f"TLS handshake failed: {exc}"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)


def store(assoc: Association, dataset: Dataset) -> StoreOutcome:
    """C-STORE ``dataset`` on ``assoc`` and say whether the destination stored it."""
    name = UID(str(dataset.SOPClassUID)).name
    try:
        answer = assoc.send_c_store(dataset)
    except (ValueError, AttributeError) as exc:  # no accepted context, or nothing to send
        return StoreOutcome(False, f"cannot send {name}: {exc}", failure=codes.PACS_CANNOT_SEND)
    except RuntimeError as exc:  # the association ended under us
        return StoreOutcome(False, f"association lost: {exc}", association_lost=True,
                            failure=codes.PACS_LOST)
    if "Status" not in answer:
        return StoreOutcome(False, "no C-STORE response (timed out or the association was "
                                   "aborted)", association_lost=True,
                            failure=codes.PACS_NO_ANSWER)
    code = int(answer.Status)
    comment = str(answer.get("ErrorComment", "") or "").strip()
    detail = status_text(code) + (f": {comment}" if comment else "")
    if code in STORED_STATUSES:
        return StoreOutcome(True, detail, status=code)
    return StoreOutcome(False, f"C-STORE of {name} refused: {detail}",
                        association_lost=not assoc.is_established, status=code,
                        failure=codes.PACS_REFUSED)


class DimseLink:
    """A ``link.Link`` over one association: each document read and C-STOREd."""

    def __init__(self, assoc: Association) -> None:
        self.assoc = assoc

    def store(self, document: Document) -> StoreOutcome:
        """C-STORE the document's data set (OSError or InvalidDicomError: unreadable)."""
        return store(self.assoc, dcmread(document.path))

    def close(self) -> None:
        """Release the association."""
        release(self.assoc)


def open_link(destination: PacsDestination, settings: PacsConfig, calling_ae: str,
              batch: list[Document]) -> DimseLink:
    """An association for the batch's SOP classes and transfer syntaxes (LinkFailed)."""
    return DimseLink(open_association(
        destination, settings, calling_ae,
        [(document.sop_class_uid, document.transfer_syntax_uid) for document in batch]))


#: the Verification SOP Class (C-ECHO)
VERIFICATION = "1.2.840.10008.1.1"


def probe(destination: PacsDestination, settings: PacsConfig, calling_ae: str) -> str:
    """Associate as the sender would and C-ECHO, storing nothing: LinkFailed saying why
    the destination would not take results; the answer's words when it would."""
    assoc = open_association(destination, settings, calling_ae, [(VERIFICATION, "")])
    try:
        answer = assoc.send_c_echo()
    finally:
        release(assoc)
    if "Status" not in answer:
        raise LinkFailed(f"{destination.peer()} did not answer the C-ECHO",
                         codes.PACS_NO_ANSWER)
    code = int(answer.Status)
    if code != 0x0000:
        raise LinkFailed(f"C-ECHO refused by {destination.peer()}: {status_text(code)}",
                         codes.pacs_failure(codes.PACS_REFUSED, code))
    return f"C-ECHO {status_text(code)}"


def release(assoc: Association) -> None:
    """Release the association if it is still up (an abort if the release fails)."""
    if assoc.is_established:
        with contextlib.suppress(Exception):
            assoc.release()
    if assoc.is_established:
        assoc.abort()
