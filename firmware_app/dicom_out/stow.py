"""STOW-RS (DICOMweb Store, PS3.18 10.5) to a destination: a ``link.Link`` over HTTP(S).

One pass of the sender opens one connection (TLS for an ``https://`` url: the
destination's CA, the box's client certificate where one is set) and keeps it alive
for the batch; each document is one ``POST <url>/studies`` of
``multipart/related; type="application/dicom"`` holding its file as it is (its own
transfer syntax), so the answer is about that document alone, as a C-STORE's is. The
user and the password (``password_file``, read when the link opens) go as HTTP Basic
over TLS only; neither is ever in a message. The answer:

- 200 OK or 202 Accepted whose DICOM JSON names the document in its ReferencedSOPSequence
  (PS3.18 Table 10.5.3-3): stored (with its WarningReason, if any);
- the document in the answer's FailedSOPSequence (its FailureReason), or 409, 413, 415
  (0x0110 Processing failure where no reason is named): refused, counted towards
  ``[pacs] max_refusals`` like a C-STORE refusal;
- 401, 403: the credentials refused (``auth``); 404, 405 or a redirect: no DICOMweb store
  at that url (``no_service``, never followed: a redirect would take the password
  elsewhere); 408, 429, 5xx: the service failed or is busy (``server_error``); another
  4xx (a TLS front's 400 for a missing client certificate, a proxy's 407): turned down
  (``rejected``); a 200 or 202 that does not name the document: not proven stored
  (``unconfirmed``: a web page at a wrong url says 200 too). These end the batch; its
  documents are tried again after the backoff, never held.

Each request has ``[pacs] dimse_timeout`` in all, however the answer trickles in (a
watchdog closes the connection then), and nothing the service sends can raise out of
``store``: its words reach messages without control characters, cut short.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import urlsplit

from pydicom.uid import UID

from clinibox_common import fs
from firmware_app.dicom_out.link import (
    Document,
    LinkFailed,
    StoreOutcome,
    status_text,
    tls_context,
)
from firmware_app.settings.pacs import PacsConfig, PacsDestination
from firmware_app.storage import event_codes as codes

#: the most of an answer read (a STOW-RS answer names one instance)
ANSWER_BYTES_AT_MOST = 1 << 20
#: the FailureReason taken when a refusal names none (PS3.18 Table I.2-1 Processing failure)
PROCESSING_FAILURE = 0x0110
#: STOW-RS answer attributes (DICOM JSON keys)
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
#: HTTP answers that end the batch, and how they fail
AUTH_REFUSED = frozenset({401, 403})
NO_SERVICE = frozenset({404, 405})
SERVER_ERROR = frozenset({408, 429})
#: answers without a DICOM FailureReason that still refuse the document itself
REFUSALS = frozenset({409, 413, 415})
#: read the file in pieces of this size
CHUNK = 1 << 16
#: the most characters of the service's own words (reason phrase, error) kept in a message
SAID_AT_MOST = 100


class StowLink:
    """A ``link.Link`` to a STOW-RS service: one kept-alive connection, a POST per document."""

    def __init__(self, destination: PacsDestination, settings: PacsConfig,
                 authorization: str | None) -> None:
        self.destination = destination
        self.settings = settings
        parts = urlsplit(destination.url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.target = parts.path.rstrip("/") + "/studies"
        self.authorization = authorization
        self.used = False
        #: the watchdog of the exchange under way (``exchange``)
        self.watchdog: Watchdog | None = None
        self.conn = self._connection()

    def _connection(self) -> http.client.HTTPConnection:
        timeout = self.settings.connect_timeout
        if self.https:
            try:
                context = tls_context(self.destination)
            except (OSError, ssl.SSLError) as exc:
                raise LinkFailed(f"TLS set-up for {self.destination.peer()} failed: {exc}",
                                 codes.PACS_TLS) from exc
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def connect(self) -> None:
        """Open the connection (and the TLS handshake) now: LinkFailed saying why not."""
        peer = self.destination.peer()
        try:
            self.conn.connect()
        except ssl.SSLError as exc:
            raise LinkFailed(f"cannot connect to {peer}: TLS handshake failed: {exc}",
                             codes.PACS_TLS) from exc
        except TimeoutError as exc:
            raise LinkFailed(f"cannot connect to {peer}: no answer within "
                             f"{self.settings.connect_timeout:g} s",
                             codes.PACS_UNREACHABLE) from exc
        except OSError as exc:
            raise LinkFailed(f"cannot connect to {peer}: {exc.strerror or exc}",
                             codes.PACS_UNREACHABLE) from exc
        self._answer_time()

    def _answer_time(self) -> None:
        """Wait for answers as long as for a C-STORE's (``[pacs] dimse_timeout``)."""
        self.conn.timeout = self.settings.dimse_timeout
        if self.conn.sock is not None:
            self.conn.sock.settimeout(self.settings.dimse_timeout)
            with contextlib.suppress(OSError):
                self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def store(self, document: Document) -> StoreOutcome:
        """POST one document and read the answer within ``[pacs] dimse_timeout`` in all
        (OSError: its file cannot be read)."""
        with open(document.path, "rb") as held:
            try:
                status, reason, answer = self.exchange(held, os.fstat(held.fileno()).st_size)
            except LinkFailed as exc:
                return StoreOutcome(False, str(exc), association_lost=True,
                                    failure=exc.failure)
        return outcome(status, reason, answer, document, bool(self.authorization))

    def exchange(self, held: IO[bytes] | None, size: int) -> tuple[int, str, Any]:
        """POST ``held`` (``size`` bytes; None: a multipart body of no part) within
        ``[pacs] dimse_timeout`` in all: the answer's status, reason and DICOM JSON, or
        LinkFailed saying how the exchange failed, whatever the service did."""
        watchdog = self.watchdog = Watchdog(self.conn, self.settings.dimse_timeout)
        late = LinkFailed(f"{self.destination.peer()} did not answer within "
                          f"{self.settings.dimse_timeout:g} s", codes.PACS_NO_ANSWER)
        try:
            answered = self._post(held, size)
        except Exception as exc:  # whatever the service does, a failure with its code
            if watchdog.fired:
                raise late from exc
            raise LinkFailed(_lost(exc), codes.PACS_TLS if isinstance(exc, ssl.SSLError)
                             else codes.PACS_LOST) from exc
        finally:
            watchdog.cancel()
        if watchdog.fired:  # an answer cut short at its deadline is no answer
            raise late
        return answered

    def _post(self, held: IO[bytes] | None, size: int) -> tuple[int, str, Any]:
        """Send the body (once more on a fresh connection when a kept-alive one was
        closed by the service in between): the answer's status, reason and DICOM JSON."""
        for last_try in (not self.used, True):
            try:
                return self._exchange(held, size)
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError):
                self.conn.close()
                if last_try:
                    raise
                if held is not None:
                    held.seek(0)
        raise AssertionError("unreachable")

    def _exchange(self, held: IO[bytes] | None, size: int) -> tuple[int, str, Any]:
        boundary = uuid.uuid4().hex
        head = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                if held is not None else b"")
        tail = (f"\r\n--{boundary}--\r\n" if held is not None
                else f"--{boundary}--\r\n").encode()
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; '
                            f"boundary={boundary}",
            "Accept": "application/dicom+json",
            "Content-Length": str(len(head) + size + len(tail)),
        }
        if self.authorization:
            headers["Authorization"] = self.authorization
        reconnect = self.conn.sock is None
        self.conn.request("POST", self.target, body=_body(head, held, tail), headers=headers)
        if self.watchdog is not None:
            self.watchdog.note(self.conn.sock)
        if reconnect:
            self._answer_time()
        self.used = True
        response = self.conn.getresponse()
        data = response.read(ANSWER_BYTES_AT_MOST + 1)
        if len(data) > ANSWER_BYTES_AT_MOST or not response.isclosed():
            self.conn.close()  # an answer too long to read: never reused
        return response.status, response.reason, _dicom_json(response, data)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


class Watchdog:
    """Closes a connection's sockets when one request has had its time, so that no answer,
    however slowly it trickles in, holds the sender longer. It shuts every socket it has
    seen the connection use (``note``), not only the one the connection holds now:
    ``http.client`` lets go of a socket whose answer will close the connection, and reads
    that answer from it all the same."""

    def __init__(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        self.conn = conn
        self.fired = False
        self.sockets: list[socket.socket] = []
        self.note(conn.sock)
        self.timer = threading.Timer(seconds, self._cut)
        self.timer.daemon = True
        self.timer.start()

    def note(self, sock: socket.socket | None) -> None:
        """Watch ``sock`` too (the connection opened it for this request)."""
        if sock is not None and sock not in self.sockets:
            self.sockets.append(sock)
            if self.fired:
                self._cut()

    def _cut(self) -> None:
        self.fired = True
        for sock in [*self.sockets, self.conn.sock]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        """The request ended in time (or not): stop watching."""
        self.timer.cancel()
        if self.fired:
            self.conn.close()


def _said(text: object) -> str:
    """The service's own words for a message: printable, at most SAID_AT_MOST characters."""
    clean = "".join(c if c.isprintable() else " " for c in str(text))
    return clean if len(clean) <= SAID_AT_MOST else clean[:SAID_AT_MOST] + "…"


def _lost(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed while sending: {_said(exc)}"
    return f"connection lost: {_said(exc) or type(exc).__name__}"


def _body(head: bytes, held: IO[bytes] | None, tail: bytes) -> Iterator[bytes]:
    yield head
    while held is not None and (chunk := held.read(CHUNK)):
        yield chunk
    yield tail


def _dicom_json(response: http.client.HTTPResponse, data: bytes) -> Any:
    """The answer's data set (DICOM JSON), or None where it is none."""
    if "json" not in (response.getheader("Content-Type") or "").lower():
        return None
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(parsed, list):  # an array of one data set
        parsed = parsed[0] if parsed else None
    return parsed if isinstance(parsed, dict) else None


def _reasons(answer: Any, sequence: str, reason: str) -> dict[str, int | None]:
    """SOP Instance UID → its FailureReason or WarningReason, from one of the answer's
    sequences; an item that is not as the standard says is passed over."""
    found: dict[str, int | None] = {}
    element = answer.get(sequence) if isinstance(answer, dict) else None
    items = element.get("Value") if isinstance(element, dict) else None
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        uid = _first(item.get(REFERENCED_SOP_INSTANCE_UID))
        if isinstance(uid, str):
            code = _first(item.get(reason))
            found[uid] = code if isinstance(code, int) and 0 <= code <= 0xFFFF else None
    return found


def _first(element: Any) -> Any:
    value = element.get("Value") if isinstance(element, dict) else None
    return value[0] if isinstance(value, list) and value else None


def outcome(status: int, reason: str, answer: Any, document: Document,
            user: bool = True) -> StoreOutcome:
    """What the service's answer (HTTP status and reason, its DICOM JSON or None) says of
    ``document``; ``user``: whether the box signed in. A failure of the link, not of the
    document, names no document: it is one event however many documents meet it."""
    name = UID(document.sop_class_uid).name
    said = _said(f"HTTP {status} {reason}".strip())
    uid = document.sop_instance_uid
    failed = _reasons(answer, FAILED_SOP_SEQUENCE, FAILURE_REASON)
    if uid in failed or status in REFUSALS:
        code = failed.get(uid) or PROCESSING_FAILURE
        return StoreOutcome(False, f"STOW-RS of {name} refused: {said}, {status_text(code)}",
                            status=code, failure=codes.PACS_REFUSED)
    stored = _reasons(answer, REFERENCED_SOP_SEQUENCE, WARNING_REASON)
    if status in (200, 202) and uid in stored:
        code = stored[uid] or 0x0000
        return StoreOutcome(True, f"{said}, {status_text(code)}", status=code)
    if status in (200, 202):
        failure, why = codes.PACS_UNCONFIRMED, "the answer does not say it was stored"
    else:
        failure, why = link_failure(status, user)
    return StoreOutcome(False, f"STOW-RS: {said} ({why})", association_lost=True,
                        failure=failure)


def link_failure(status: int, user: bool) -> tuple[str, str]:
    """A failing answer's code and plain words, when it is about the service or the box's
    credentials rather than a document."""
    if status in AUTH_REFUSED:
        if not user:
            return f"{codes.PACS_AUTH}:no_user", "it asks for a user; none is set"
        return codes.PACS_AUTH, "user name or password refused"
    if status in NO_SERVICE or 300 <= status < 400:
        return codes.PACS_NO_SERVICE, "no DICOMweb store at this address"
    if 400 <= status < 500 and status not in SERVER_ERROR:
        return codes.PACS_REJECTED, "turned down"
    return codes.PACS_SERVER_ERROR, "the service failed or is busy"


def basic_authorization(destination: PacsDestination) -> str | None:
    """The ``Authorization`` header's value for the destination's user (its password read
    from password_file now), None without a user: LinkFailed where the file is not usable."""
    try:
        return fs.basic_authorization(destination.username, destination.password_file)
    except (OSError, fs.SecretFileUnsafe) as exc:
        said = f"password_file {exc.strerror}" if isinstance(exc, OSError) else \
            f"password_file {exc}"
        raise LinkFailed(said, f"{codes.PACS_PASSWORD_FILE}:{fs.secret_reason(exc)}") from exc


def open_link(destination: PacsDestination, settings: PacsConfig, calling_ae: str,
              batch: list[Document]) -> StowLink:
    """A connection to the destination's STOW-RS service (LinkFailed saying why not);
    ``calling_ae`` and the batch's classes play no part in HTTP."""
    del calling_ae, batch
    link = StowLink(destination, settings, basic_authorization(destination))
    link.connect()
    return link


def probe(destination: PacsDestination, settings: PacsConfig, calling_ae: str) -> str:
    """Try the destination as the sender would, storing nothing: connect (TLS, the
    password file), then POST a multipart body of no part, which a STOW-RS service
    answers without storing anything. LinkFailed saying why it would not take results;
    the answer's words when it would."""
    link = open_link(destination, settings, calling_ae, [])
    try:
        status, reason, _answer = link.exchange(None, 0)
    finally:
        link.close()
    said = _said(f"HTTP {status} {reason}".strip())
    if 200 <= status < 300 or status in (400, 409, 415):
        return said  # a store service that found nothing to store
    failure, why = link_failure(status, bool(link.authorization))
    raise LinkFailed(f"STOW-RS: {said} ({why})", failure)
