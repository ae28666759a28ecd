"""What a hostile peer on the clinic LAN sends, shared by the attack tests and
``bench/hostile.py``: a C-STORE's PDUs to stream by hand, an association request and
random damage to any PDU (``mutated``), and an HTTPS client that sends the attacker's
bytes exactly, from a chosen source address."""

from __future__ import annotations

import http.client
import random
import ssl
from http.cookies import SimpleCookie
from io import BytesIO
from pathlib import Path
from urllib.parse import urlencode

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context

from tests.web_client import csrf_token


def store_pdus(assoc, size: int) -> list[bytes]:
    """The P-DATA-TF PDUs of a C-STORE of a ``size``-byte data set, encoded by pynetdicom."""
    context = assoc.accepted_contexts[0]
    primitive = C_STORE()
    primitive.MessageID = 1
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    primitive.Priority = 0
    primitive.DataSet = BytesIO(bytes(size))  # encoded data set: zeros, the size is what counts
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    pdus = []
    for primitive in message.encode_msg(context.context_id, 16 * 1024):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        pdus.append(pdu.encode())
    return pdus


def association_request(called: str = "CLINIBOX", calling: str = "ATTACKER") -> bytes:
    """An encoded A-ASSOCIATE-RQ proposing CT Image Storage, for damaging by hand."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title, primitive.called_ae_title = calling, called
    context = build_context(CTImageStorage, ExplicitVRLittleEndian)
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.8.498.99"
    primitive.user_information = [length, implementation]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def mutated(data: bytes, rng: random.Random) -> bytes:
    """``data`` with 1-8 random injuries: bytes overwritten, cut short, garbage appended,
    stretches repeated (lengths that lie, fields that run over)."""
    damaged = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        roll = rng.random()
        if roll < 0.5 and damaged:
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        elif roll < 0.7:
            damaged = damaged[: rng.randrange(len(damaged) + 1)]
        elif roll < 0.85:
            damaged += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif damaged:
            at = rng.randrange(len(damaged))
            damaged[at:at] = damaged[at:at + rng.randint(1, 32)] * rng.randint(1, 4)
    return bytes(damaged)


class Browser:
    """Cookies and CSRF tokens over one HTTPS origin, from a chosen source address."""

    def __init__(self, port: int, cert: Path, source: str = "127.0.0.1") -> None:
        self.port, self.source = port, source
        self.context = ssl.create_default_context(cafile=str(cert))
        self.cookies: dict[str, str] = {}

    def request(self, method: str, target: str, form: dict | None = None
                ) -> tuple[int, dict[str, str], str]:
        """Send ``target`` as the request line's path, exactly; (status, headers, body)."""
        conn = http.client.HTTPSConnection("localhost", self.port, context=self.context,
                                           timeout=30, source_address=(self.source, 0))
        headers, body = self.prepared(form)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            for key, value in headers.items():
                conn.putheader(key, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body.encode() if body is not None else None)
            answer = conn.getresponse()
            text = answer.read().decode("utf-8", "replace")
            self.remember(answer.headers)
            return answer.status, dict(answer.headers.items()), text
        finally:
            conn.close()

    def prepared(self, form: dict | None) -> tuple[dict[str, str], str | None]:
        """A request's headers (the origin, the cookies, a form's type) and its body."""
        headers = {"Referer": f"https://localhost:{self.port}/login"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return headers, body

    def remember(self, headers: http.client.HTTPMessage) -> None:
        """Keep the cookies an answer sets."""
        for header in headers.get_all("Set-Cookie") or []:
            for key, morsel in SimpleCookie(header).items():
                self.cookies[key] = morsel.value

    def login(self, name: str, password: str, target: str = "") -> tuple[int, dict, str]:
        """The login form, posted with the page's CSRF token."""
        status, _, page = self.request("GET", "/login")
        assert status == 200
        return self.request("POST", "/login", {"csrf_token": csrf_token(page), "name": name,
                                               "password": password, "next": target})
