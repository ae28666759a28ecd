"""STOW-RS destinations: their settings, and the link against a scripted HTTP peer.

The peer here answers what a DICOMweb service may answer and Orthanc (the real peer of
``tests/integration/test_stow_orthanc.py``) cannot be made to: a refusal with its
FailureReason, a warning, 401, 404, 503, a redirect, a kept-alive connection closed
between two documents. It reads the request as a STOW-RS service would (the
multipart/related body, the Basic credentials) so the tests can say what was sent.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydicom import dcmread

from clinibox_common.settings_loader import ConfigError
from firmware_app.dicom_out import stow
from firmware_app.dicom_out.link import Document, LinkFailed
from firmware_app.settings import box as cfg
from firmware_app.settings.pacs import PacsConfig, PacsDestination
from firmware_app.storage import event_codes as codes
from tests.unit.firmware_app.test_dicom_outbox import document

PASSWORD = "stow-canary-Pw-4471"


# -- settings ------------------------------------------------------------------------------

def test_a_stow_rs_destination_is_read_with_its_url_user_and_password_file(tmp_path):
    path = tmp_path / "box.toml"
    path.write_text('[[pacs.destinations]]\nname = "web"\nprotocol = "stow-rs"\n'
                    'url = "https://pacs.clinic.lan/dicom-web/"\nusername = "clinibox"\n'
                    'password_file = "/etc/clinibox/pacs-password"\nca_file = "/etc/ca.pem"\n'
                    '[[pacs.destinations]]\nname = "dimse"\nhost = "192.0.2.10"\n')
    web, dimse = cfg.load(path).pacs.destinations
    assert (web.stow, web.url, web.username, web.password_file) == (
        True, "https://pacs.clinic.lan/dicom-web/", "clinibox", "/etc/clinibox/pacs-password")
    assert web.peer() == "https://pacs.clinic.lan/dicom-web/"  # no password in it
    assert (dimse.stow, dimse.protocol, dimse.peer()) == (False, "dimse", "PACS@192.0.2.10:104")


@pytest.mark.parametrize(("table", "message"), [
    ('protocol = "stow-rs"\n', "[pacs.destinations 1]: needs at least name and url"),
    ('protocol = "stow"\nhost = "h"\n', '[pacs.destinations 1] protocol: must be one of'),
    ('protocol = "stow-rs"\nurl = "ftp://pacs/dicom-web"\n', "url: must be an http:// or"),
    ('protocol = "stow-rs"\nurl = "https://user:pw@pacs/dicom-web"\n',
     "without a user, password, query or fragment"),
    ('protocol = "stow-rs"\nurl = "https://pacs/dicom-web?key=1"\n', "url: must be an"),
    ('protocol = "stow-rs"\nurl = "http://pacs/dicom-web"\nusername = "u"\n'
     'password_file = "/etc/p"\n', "a password is never sent in clear"),
    ('protocol = "stow-rs"\nurl = "http://pacs/dicom-web"\nca_file = "/etc/ca.pem"\n',
     "needs an https:// url"),
    ('protocol = "stow-rs"\nurl = "https://pacs/dicom-web"\nusername = "u"\n',
     "username and password_file go together"),
    ('protocol = "stow-rs"\nurl = "https://pacs/dicom-web"\npassword_file = "p"\n',
     "password_file: must be an absolute path"),
    ('protocol = "stow-rs"\nurl = "https://pacs/dicom-web"\ntls = true\n',
     'for protocol = "stow-rs" TLS is an https:// url'),
    ('host = "h"\nurl = "https://pacs/dicom-web"\n',
     '[pacs.destinations 1] url: only for protocol = "stow-rs"'),
    ('host = "h"\nusername = "u"\n', 'username: only for protocol = "stow-rs"'),
])
def test_a_wrong_stow_rs_destination_is_refused_naming_the_key(tmp_path, table, message):
    path = tmp_path / "bad.toml"
    path.write_text('[[pacs.destinations]]\nname = "web"\n' + table)
    with pytest.raises(ConfigError) as excinfo:
        cfg.load(path)
    assert message in str(excinfo.value)


# -- a scripted STOW-RS service ------------------------------------------------------------

class Peer:
    """What the scripted service answers, and what it was sent."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict | None]] = []
        self.received: list[dict] = []
        #: request numbers after which it closes the connection without saying so (as a
        #: service's keep-alive timeout does)
        self.close_after: set[int] = set()
        self.connections: set[tuple[str, int]] = set()


def failed_answer(uid: str, reason: int) -> dict:
    return {stow.FAILED_SOP_SEQUENCE: {"vr": "SQ", "Value": [{
        stow.REFERENCED_SOP_INSTANCE_UID: {"vr": "UI", "Value": [uid]},
        stow.FAILURE_REASON: {"vr": "US", "Value": [reason]}}]}}


def warned_answer(uid: str, reason: int) -> dict:
    return {stow.REFERENCED_SOP_SEQUENCE: {"vr": "SQ", "Value": [{
        stow.REFERENCED_SOP_INSTANCE_UID: {"vr": "UI", "Value": [uid]},
        stow.WARNING_REASON: {"vr": "US", "Value": [reason]}}]}}


@pytest.fixture(name="peer")
def peer_fixture() -> Iterator[tuple[Peer, int]]:
    """A STOW-RS service on a free port of 127.0.0.1 answering ``peer.answers`` in turn."""
    peer = Peer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            peer.connections.add(self.client_address)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            message = BytesParser(policy=HTTP).parsebytes(
                b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
            parts = [part.get_payload(decode=True) for part in message.iter_parts()]
            number = len(peer.received)
            peer.received.append({"path": self.path, "parts": parts,
                                  "authorization": self.headers.get("Authorization"),
                                  "accept": self.headers.get("Accept")})
            status, answer = peer.answers[number] if number < len(peer.answers) else (200, None)
            data = json.dumps(answer).encode() if answer is not None else b""
            self.send_response(status)
            if status in (301, 302, 307):
                self.send_header("Location", "https://elsewhere.example/dicom-web/studies")
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            if number in peer.close_after:
                self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield peer, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def destination_for(port: int, **kwargs) -> PacsDestination:
    return PacsDestination(name="web", protocol="stow-rs",
                           url=f"http://127.0.0.1:{port}/dicom-web/", **kwargs)


def saved(tmp_path: Path, kind: str = "sr") -> Document:
    made = document(kind)
    path = tmp_path / f"{made.sop_instance_uid}.dcm"
    made.dataset.save_as(path, enforce_file_format=True)
    return Document(path, str(made.dataset.SOPClassUID), made.sop_instance_uid,
                    str(made.dataset.file_meta.TransferSyntaxUID))


def test_each_document_is_one_post_of_its_file_on_one_kept_connection(tmp_path, peer):
    service, port = peer
    documents = [saved(tmp_path, kind) for kind in ("sr", "seg", "key_image")]
    link = stow.open_link(destination_for(port), PacsConfig(), "CLINIBOX", documents)
    try:
        outcomes = [link.store(d) for d in documents]
    finally:
        link.close()
    assert [o.stored for o in outcomes] == [True, True, True]
    assert not any(o.warning for o in outcomes)
    assert [r["path"] for r in service.received] == ["/dicom-web/studies"] * 3
    assert {r["accept"] for r in service.received} == {"application/dicom+json"}
    for request, sent in zip(service.received, documents, strict=True):
        (part,) = request["parts"]
        assert part == sent.path.read_bytes()  # the file as it is, its own transfer syntax
        assert dcmread(sent.path).SOPInstanceUID == sent.sop_instance_uid
    assert len(service.connections) == 1  # one connection carried the batch
    assert {r["authorization"] for r in service.received} == {None}  # no user: no header


def test_a_refusal_a_warning_and_a_conflict_are_told_apart(tmp_path, peer):
    service, port = peer
    first, second, third = (saved(tmp_path) for _ in range(3))
    service.answers = [(202, failed_answer(first.sop_instance_uid, 0xA700)),
                       (202, warned_answer(second.sop_instance_uid, 0xB000)),
                       (409, None)]
    link = stow.open_link(destination_for(port), PacsConfig(), "CLINIBOX", [])
    refused, warned, conflict = (link.store(d) for d in (first, second, third))
    link.close()
    assert (refused.stored, refused.status, refused.failure) == (False, 0xA700, codes.PACS_REFUSED)
    assert not refused.association_lost  # the next document goes on
    assert "0xA700" in refused.detail and "HTTP 202" in refused.detail
    assert (warned.stored, warned.warning, warned.status) == (True, True, 0xB000)
    # a refusal naming no reason: Processing failure, counted towards max_refusals
    assert (conflict.stored, conflict.status, conflict.failure) == (
        False, stow.PROCESSING_FAILURE, codes.PACS_REFUSED)
    assert "HTTP 409" in conflict.detail


@pytest.mark.parametrize(("status", "failure"), [
    (401, codes.PACS_AUTH), (403, codes.PACS_AUTH), (404, codes.PACS_NO_SERVICE),
    (405, codes.PACS_NO_SERVICE), (307, codes.PACS_NO_SERVICE),
    (503, codes.PACS_SERVER_ERROR), (500, codes.PACS_SERVER_ERROR),
    (429, codes.PACS_SERVER_ERROR),
])
def test_answers_about_the_service_end_the_batch_and_never_count_as_refusals(
        tmp_path, peer, status, failure):
    service, port = peer
    service.answers = [(status, None)]
    link = stow.open_link(destination_for(port), PacsConfig(), "CLINIBOX", [])
    outcome = link.store(saved(tmp_path))
    link.close()
    assert (outcome.stored, outcome.status, outcome.failure) == (False, None, failure)
    assert outcome.association_lost  # the rest of the batch waits for the backoff
    assert len(service.received) == 1  # a redirect is not followed


def test_a_connection_the_service_closed_between_documents_is_opened_again(tmp_path, peer):
    service, port = peer
    service.close_after = {0}
    documents = [saved(tmp_path) for _ in range(3)]
    link = stow.open_link(destination_for(port), PacsConfig(), "CLINIBOX", documents)
    assert [link.store(d).stored for d in documents] == [True, True, True]
    link.close()
    assert len(service.received) == 3
    assert len(service.connections) == 2


def test_the_password_goes_as_basic_credentials_and_never_into_a_message(tmp_path, peer):
    service, port = peer
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    destination = destination_for(port, username="clinibox", password_file=str(secret))
    service.answers = [(401, None)]
    link = stow.open_link(destination, PacsConfig(), "CLINIBOX", [])
    outcome = link.store(saved(tmp_path))
    link.close()
    (request,) = service.received
    scheme, token = request["authorization"].split()
    assert (scheme, base64.b64decode(token).decode()) == ("Basic", f"clinibox:{PASSWORD}")
    assert PASSWORD not in outcome.detail and PASSWORD not in destination.peer()

    secret.chmod(0o644)  # others may read it: refused before anything is sent
    with pytest.raises(LinkFailed) as refused:
        stow.open_link(destination, PacsConfig(), "CLINIBOX", [])
    assert refused.value.failure == codes.PACS_PASSWORD_FILE
    assert "chmod 600" in str(refused.value) and PASSWORD not in str(refused.value)
    secret.unlink()
    with pytest.raises(LinkFailed) as missing:
        stow.open_link(destination, PacsConfig(), "CLINIBOX", [])
    assert missing.value.failure == codes.PACS_PASSWORD_FILE
    assert len(service.received) == 1


def test_a_service_that_is_not_there_is_said_when_the_link_opens(tmp_path):
    from tests.ports import free_ports

    (port,) = free_ports(1)
    with pytest.raises(LinkFailed) as refused:
        stow.open_link(destination_for(port), PacsConfig(connect_timeout=2), "CLINIBOX", [])
    assert refused.value.failure == codes.PACS_UNREACHABLE
    assert f"cannot connect to http://127.0.0.1:{port}/dicom-web/" in str(refused.value)


@pytest.mark.parametrize("answer", [
    {stow.FAILED_SOP_SEQUENCE: {"vr": "SQ", "Value": ["not an item"]}},
    {stow.FAILED_SOP_SEQUENCE: {"vr": "SQ", "Value": [{stow.FAILURE_REASON: {"Value": [7]}}]}},
    {stow.REFERENCED_SOP_SEQUENCE: "garbage"},
    ["not", "a", "data set"],
    [],
])
def test_an_answer_that_is_not_as_the_standard_says_is_read_by_its_status(tmp_path, answer):
    sent = saved(tmp_path)
    assert stow.outcome(200, "OK", answer, sent).stored
    refusal = stow.outcome(409, "Conflict", answer, sent)
    assert (refusal.stored, refusal.status) == (False, stow.PROCESSING_FAILURE)
