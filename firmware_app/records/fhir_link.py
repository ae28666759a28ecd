"""FHIR over HTTP(S): each report a transaction Bundle POSTed to the server's base address.

A report is sent when the server answers 200 with a ``transaction-response`` Bundle whose
every entry is 2xx (the FHIR models read it back). Any other 4xx (400, 409, 412, 422 …) is
a refusal (its OperationOutcome's words kept), counted toward ``[records] max_refusals``;
the rest leave the report pending and are retried, never held: 401 or 403 (``auth``), 404, 405 or
a redirect (``no_service``; a redirect is never followed, so the password goes nowhere
else), 5xx, 408 or 429 (``server_error``), a 2xx that does not confirm each entry
(``unconfirmed``). A password is read from ``password_file`` at each connection and sent
as HTTP Basic over https:// only (``settings/records.py`` refuses it over http://). Each
exchange has ``[records] timeout_seconds`` in all: a server that trickles its answer is cut
off.
"""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any
from urllib.parse import urlsplit

from clinibox_common import fs
from firmware_app.dicom_out.stow import Watchdog
from firmware_app.records.link import Delivered, LinkFailed, Outcome, Refused
from firmware_app.settings.records import RecordsReceiver
from firmware_app.storage import event_codes as codes

#: the longest answer read
MAX_ANSWER = 4 * 1024 * 1024
#: the most of the server's own words kept
SAID_AT_MOST = 200


def basic_authorization(receiver: RecordsReceiver) -> str | None:
    """The ``Authorization`` header for the receiver's user (its password read now), None
    without one; LinkFailed where the password file is not usable."""
    try:
        return fs.basic_authorization(receiver.username, receiver.password_file)
    except (OSError, fs.SecretFileUnsafe) as exc:
        said = f"password_file {exc.strerror}" if isinstance(exc, OSError) else \
            f"password_file {exc}"
        raise LinkFailed(said, f"{codes.RECORDS_PASSWORD_FILE}:{fs.secret_reason(exc)}"
                         ) from None


def _said(text: object) -> str:
    clean = "".join(c if c.isprintable() else " " for c in str(text)).strip()
    return clean if len(clean) <= SAID_AT_MOST else clean[:SAID_AT_MOST] + "…"


class FhirLink:
    """POSTs transaction Bundles to one FHIR server for one pass."""

    def __init__(self, receiver: RecordsReceiver, timeout: float) -> None:
        self.receiver = receiver
        self.timeout = timeout
        parts = urlsplit(receiver.url)
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname or "", parts.port
        self.path = parts.path.rstrip("/") or "/"
        self.authorization = basic_authorization(receiver)

    def _connection(self) -> http.client.HTTPConnection:
        if not self.https:
            return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            context = ssl.create_default_context(cafile=self.receiver.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise LinkFailed(f"TLS set-up for {self.receiver.peer()} failed: {exc}",
                             codes.RECORDS_TLS) from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                           context=context)

    def send(self, message: bytes, control_id: str) -> Outcome:
        """POST one Bundle and read the server's answer."""
        del control_id  # the Bundle's identifiers say which report it is
        peer = self.receiver.peer()
        conn = self._connection()
        headers = {"Content-Type": "application/fhir+json; charset=utf-8",
                   "Accept": "application/fhir+json", "Connection": "close"}
        if self.authorization:
            headers["Authorization"] = self.authorization
        try:
            try:
                conn.connect()
            except ssl.SSLError as exc:
                raise LinkFailed(f"{peer}: TLS handshake failed: {_said(exc)}",
                                 codes.RECORDS_TLS) from None
            except TimeoutError:
                raise LinkFailed(f"{peer}: no answer within {self.timeout:g} s",
                                 codes.RECORDS_NO_ANSWER) from None
            except OSError as exc:
                raise LinkFailed(f"{peer}: cannot connect ({exc.strerror or exc})",
                                 codes.RECORDS_UNREACHABLE) from None
            watchdog = Watchdog(conn, self.timeout)
            late = LinkFailed(f"{peer}: no answer within {self.timeout:g} s",
                              codes.RECORDS_NO_ANSWER)
            try:
                conn.request("POST", self.path, body=message, headers=headers)
                response = conn.getresponse()
                data = response.read(MAX_ANSWER + 1)
            except (OSError, http.client.HTTPException) as exc:
                if watchdog.fired or isinstance(exc, TimeoutError):
                    raise late from None
                raise LinkFailed(f"{peer}: connection lost ({_said(exc) or type(exc).__name__})",
                                 codes.RECORDS_LOST) from None
            finally:
                watchdog.cancel()
            if watchdog.fired:  # an answer cut short at its deadline is no answer
                raise late
        finally:
            conn.close()
        return answer_outcome(peer, response.status, response.reason, data,
                              bool(self.receiver.username), entries(message))

    def close(self) -> None:
        """Nothing stays open between two reports."""


def entries(message: bytes) -> int:
    """How many entries the Bundle sent has (its answer must have as many)."""
    return len(json.loads(message.decode("utf-8")).get("entry") or [])


def answer_outcome(peer: str, status: int, reason: str, data: bytes, user: bool,
                   expected: int) -> Outcome:
    """What the server's answer says of the Bundle sent (LinkFailed when it is not about
    the Bundle: the set-up, the server's state)."""
    said = f"{peer} answered {status} {_said(reason)}".rstrip()
    if status in (401, 403):
        why = "" if user else ":no_user"
        raise LinkFailed(f"{said}: the server refused the box's user or password",
                         f"{codes.RECORDS_AUTH}{why}")
    if status in (404, 405) or 300 <= status < 400:
        raise LinkFailed(f"{said}: no FHIR server at this address",
                         codes.RECORDS_NO_SERVICE)
    if status >= 500 or status in (408, 429):
        raise LinkFailed(said, f"{codes.RECORDS_SERVER_ERROR}:{status}")
    if 400 <= status < 500:  # the server read the Bundle and will not take it as it is
        return Refused(str(status), f"{said}: {operation_outcome(data)}".rstrip(": "))
    if not 200 <= status < 300:
        raise LinkFailed(said, f"{codes.RECORDS_SERVER_ERROR}:{status}")
    problem = unconfirmed(data, expected)
    if problem:
        raise LinkFailed(f"{said}, but {problem}", codes.RECORDS_UNCONFIRMED)
    return Delivered(str(status))


def _json(data: bytes) -> Any:
    if len(data) > MAX_ANSWER:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # nesting deep enough to crash
        return None


def operation_outcome(data: bytes) -> str:
    """The diagnostics of an OperationOutcome answer ('' when there is none)."""
    answer = _json(data)
    if not isinstance(answer, dict) or answer.get("resourceType") != "OperationOutcome":
        return ""
    issues = answer.get("issue") if isinstance(answer.get("issue"), list) else []
    words = [str(i.get("diagnostics") or (i.get("details") or {}).get("text") or "")
             for i in issues if isinstance(i, dict)]
    return _said("; ".join(w for w in words if w))


def unconfirmed(data: bytes, expected: int) -> str:
    """Why a 2xx answer does not confirm the whole transaction ('' when it does): it must be
    a transaction-response Bundle (read by the FHIR models) with ``expected`` entries, each
    2xx."""
    from fhir.resources.R4B.bundle import Bundle

    answer = _json(data)
    if not isinstance(answer, dict) or answer.get("resourceType") != "Bundle":
        return "the answer is not a FHIR Bundle"
    try:
        read = Bundle.model_validate(answer)
    except Exception:  # pydantic's ValidationError
        return "the answer is not a valid FHIR Bundle"
    if read.type != "transaction-response":
        return f"the answer is a {read.type!r} Bundle, not a transaction-response"
    answered = read.entry or []
    if len(answered) != expected:
        return f"the transaction-response has {len(answered)} entries, not {expected}"
    for entry in answered:
        status = (entry.response.status if entry.response else "") or ""
        if not status.strip().startswith("2"):
            return f"an entry was answered {_said(status)!r}"
    return ""
