"""STOW-RS destinations: their settings, and the link against a scripted HTTP peer.

The peer here answers what a DICOMweb service may answer and Orthanc (the real peer of
``tests/integration/test_stow_orthanc.py``) cannot be made to: a refusal with its
FailureReason, a warning, 401, 404, 503, a redirect, a kept-alive connection closed
between two documents. It reads the request as a STOW-RS service would (the
multipart/related body, the Basic credentials) so the tests can say what was sent.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import threading
import time
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
    """What the scripted service answers, and what it was sent: by default the store
    answer naming what it received (``stored_answer``)."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict | None]] = []
        self.received: list[dict] = []
        #: request numbers after which it closes the connection without saying so (as a
        #: service's keep-alive timeout does)
        self.close_after: set[int] = set()
        self.connections: set[tuple[str, int]] = set()


def stored_answer(uid: str) -> dict:
    return {stow.REFERENCED_SOP_SEQUENCE: {"vr": "SQ", "Value": [{
        stow.REFERENCED_SOP_INSTANCE_UID: {"vr": "UI", "Value": [uid]}}]}}


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
            received = dcmread(io.BytesIO(parts[0])).SOPInstanceUID if parts else ""
            status, answer = (peer.answers[number] if number < len(peer.answers)
                              else (200, stored_answer(received)))
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
    # the box signed in as no one: the words say to set a user, not to check it
    (401, f"{codes.PACS_AUTH}:no_user"), (403, f"{codes.PACS_AUTH}:no_user"),
    (404, codes.PACS_NO_SERVICE),
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

    assert outcome.failure == codes.PACS_AUTH  # signed in, and refused
    secret.chmod(0o644)  # others may read it: refused before anything is sent
    with pytest.raises(LinkFailed) as refused:
        stow.open_link(destination, PacsConfig(), "CLINIBOX", [])
    assert refused.value.failure == f"{codes.PACS_PASSWORD_FILE}:readable_by_others"
    assert "chmod 600" in str(refused.value) and PASSWORD not in str(refused.value)
    secret.unlink()
    with pytest.raises(LinkFailed) as missing:
        stow.open_link(destination, PacsConfig(), "CLINIBOX", [])
    assert missing.value.failure == f"{codes.PACS_PASSWORD_FILE}:missing"
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
def test_an_answer_that_is_not_as_the_standard_says_proves_nothing_stored(tmp_path, answer):
    sent = saved(tmp_path)
    assert stow.outcome(200, "OK", answer, sent).failure == codes.PACS_UNCONFIRMED
    refusal = stow.outcome(409, "Conflict", answer, sent)
    assert (refusal.stored, refusal.status) == (False, stow.PROCESSING_FAILURE)


# -- what a hostile or broken service answers (the red-team pass of 2026-11-28) --------------

def raw_peer(answer) -> int:
    """A service on a free port that reads each request whole, then lets ``answer(conn)``
    write whatever bytes it likes."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            while len(body) < length:
                body += conn.recv(65536)
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


def store_once(port: int, tmp_path: Path, answer_seconds: float = 2.0):
    settings = PacsConfig(connect_timeout=2, dimse_timeout=answer_seconds)
    link = stow.open_link(destination_for(port), settings, "CLINIBOX", [])
    try:
        return link.store(saved(tmp_path))
    finally:
        link.close()


@pytest.mark.slow
def test_an_answer_that_trickles_in_ends_at_the_answer_time_in_all(tmp_path):
    def drip(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            for byte in b"HTTP/1.1 200 OK\r\nX-Drip: " + b"a" * 1000:
                conn.send(bytes([byte]))
                time.sleep(0.5)

    started = time.monotonic()
    outcome = store_once(raw_peer(drip), tmp_path, answer_seconds=2.0)
    assert time.monotonic() - started < 10
    assert (outcome.stored, outcome.failure, outcome.association_lost) == (
        False, codes.PACS_NO_ANSWER, True)
    assert "did not answer within 2 s" in outcome.detail


@pytest.mark.slow
def test_a_closing_answer_whose_body_trickles_in_ends_at_the_answer_time_too(tmp_path):
    """http.client lets go of the socket of an answer that will close the connection: the
    watchdog must still shut it (the red-team pass on the records links found it)."""
    def drip(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
                         b"Connection: close\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(1000):
                conn.send(b" ")
                time.sleep(0.5)

    started = time.monotonic()
    outcome = store_once(raw_peer(drip), tmp_path, answer_seconds=2.0)
    assert time.monotonic() - started < 10
    assert (outcome.stored, outcome.failure) == (False, codes.PACS_NO_ANSWER)


def answer_with(status_line: bytes, content_type: bytes, body: bytes):
    def answer(conn: socket.socket) -> None:
        conn.sendall(status_line + b"\r\nContent-Type: " + content_type
                     + b"\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\nConnection: close\r\n\r\n" + body)
        conn.close()
    return answer


@pytest.mark.parametrize(("status_line", "content_type", "body", "failure"), [
    # a web page at a wrong url, an empty answer, an empty data set, cut-off JSON, JSON
    # nested past Python's recursion limit: none proves the document stored
    (b"HTTP/1.1 200 OK", b"text/html", b"<html>Welcome</html>", codes.PACS_UNCONFIRMED),
    (b"HTTP/1.1 200 OK", b"application/dicom+json", b"", codes.PACS_UNCONFIRMED),
    (b"HTTP/1.1 202 Accepted", b"application/dicom+json", b"{}", codes.PACS_UNCONFIRMED),
    (b"HTTP/1.1 200 OK", b"application/dicom+json", b'{"00081199": {"vr": "SQ", "Val',
     codes.PACS_UNCONFIRMED),
    (b"HTTP/1.1 200 OK", b"application/dicom+json", b"[" * 200000 + b"]" * 200000,
     codes.PACS_UNCONFIRMED),
    # a TLS front's answer to a missing client certificate, a proxy's: turned down, never
    # counted towards holding the document
    (b"HTTP/1.1 400 Bad Request", b"text/html", b"No required SSL certificate was sent",
     codes.PACS_REJECTED),
    (b"HTTP/1.1 407 Proxy Authentication Required", b"text/html", b"", codes.PACS_REJECTED),
    # control characters in the service's words never reach a message
    (b"HTTP/1.1 500 \x1b[2J\x1b[31mSTORED OK " + b"R" * 300, b"text/plain", b"",
     codes.PACS_SERVER_ERROR),
])
def test_answers_that_do_not_prove_the_document_stored_are_never_taken_for_it(
        tmp_path, status_line, content_type, body, failure):
    outcome = store_once(raw_peer(answer_with(status_line, content_type, body)), tmp_path)
    assert (outcome.stored, outcome.status, outcome.failure) == (False, None, failure)
    assert outcome.association_lost  # the batch waits for the backoff: nothing is held
    assert "\x1b" not in outcome.detail and len(outcome.detail) < 250


def test_a_200_naming_another_document_is_not_this_ones_receipt(tmp_path):
    sent = saved(tmp_path)
    other = stored_answer("1.2.3.4.999")
    assert stow.outcome(200, "OK", other, sent).failure == codes.PACS_UNCONFIRMED
    assert stow.outcome(200, "OK", stored_answer(sent.sop_instance_uid), sent).stored


@pytest.mark.parametrize("url", [
    "https://pacs:99999/dw", "https://pacs:abc/dw", "https://pacs:0/dw",
    "https://pacs/dicom-wéb", "https://[::1/dw", "https://pacs/a\tb",
])
def test_an_address_the_box_could_not_send_to_is_refused_by_the_config_check(tmp_path, url):
    path = tmp_path / "bad.toml"
    path.write_text('[[pacs.destinations]]\nname = "web"\nprotocol = "stow-rs"\n'
                    f'url = "{url}"\n')
    with pytest.raises(ConfigError, match=r"\[pacs.destinations 1\] url: must be an http"):
        cfg.load(path)


def test_a_password_written_into_the_url_is_not_repeated_by_the_refusal(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[[pacs.destinations]]\nname = "web"\nprotocol = "stow-rs"\n'
                    f'url = "https://u:{PASSWORD}@pacs.clinic.lan/dicom-web"\n')
    with pytest.raises(ConfigError) as refused:
        cfg.load(path)
    assert PASSWORD not in str(refused.value) and "***" in str(refused.value)


@pytest.mark.parametrize(("content", "said", "why"), [
    (b"", "holds no password", "empty"), (b"\n" + PASSWORD.encode(), "holds no password",
                                          "empty"),
    (b"P\xe4sswort\n", "is not UTF-8 text", "not_utf8"),
])
def test_a_password_file_without_a_usable_password_is_refused_saying_why(tmp_path, content,
                                                                         said, why):
    secret = tmp_path / "password"
    secret.write_bytes(content)
    secret.chmod(0o600)
    destination = destination_for(1, username="u", password_file=str(secret))
    with pytest.raises(LinkFailed, match=said) as refused:
        stow.basic_authorization(destination)
    assert refused.value.failure == f"{codes.PACS_PASSWORD_FILE}:{why}"


def test_a_password_file_s_byte_order_mark_is_no_part_of_the_password(tmp_path):
    secret = tmp_path / "password"
    secret.write_bytes(b"\xef\xbb\xbf" + PASSWORD.encode() + b"\r\n")
    secret.chmod(0o600)
    header = stow.basic_authorization(destination_for(1, username="u",
                                                      password_file=str(secret)))
    assert base64.b64decode(header.split()[1]).decode() == f"u:{PASSWORD}"
    link = tmp_path / "link"
    link.symlink_to(secret)
    with pytest.raises(LinkFailed, match="is a symbolic link") as linked:
        stow.basic_authorization(destination_for(1, username="u", password_file=str(link)))
    assert linked.value.failure == f"{codes.PACS_PASSWORD_FILE}:link"


def test_a_destination_whose_pass_fails_unexpectedly_holds_back_no_other(tmp_path,
                                                                         monkeypatch, peer):
    from firmware_app.dicom_out import sender as sender_module
    from firmware_app.dicom_out.outbox import enqueue_documents
    from firmware_app.settings.pacs import PacsProtocol
    from firmware_app.storage import db

    service, port = peer
    config = cfg.Config()
    config.storage.state_dir = str(tmp_path / "state")
    good = destination_for(port)
    good.name = "pacs"
    broken = destination_for(port)
    broken.name = "archive"  # sorts first
    config.pacs.destinations = [broken, good]
    db.open_database(config.database_path).close()
    opened = sender_module.LINKS[PacsProtocol.STOW_RS]

    def failing_for_archive(destination, *args):
        if destination.name == "archive":
            raise RuntimeError("a bug the service never expected")
        return opened(destination, *args)

    monkeypatch.setitem(sender_module.LINKS, PacsProtocol.STOW_RS, failing_for_archive)
    conn = db.connect(config.database_path)
    made = document("sr")
    enqueue_documents(conn, config.dicom_out_dir, [made], config.pacs.destinations)
    conn.close()
    done = sender_module.DicomSender(config).send_due()
    assert done["pacs"].sent == 1 and "archive" not in done
    conn = db.connect(config.database_path)
    rows = {r["destination"]: dict(r) for r in conn.execute("SELECT * FROM dicom_outbox")}
    events = [r["code"] for r in conn.execute("SELECT code FROM events")]
    conn.close()
    assert rows["pacs"]["state"] == "sent"
    archive = rows["archive"]
    assert (archive["state"], archive["attempts"]) == ("pending", 1)  # waits its backoff
    assert "the box failed while sending" in archive["last_error"]
    assert "pacs_failed:lost" in events
    assert len(service.received) == 1


@pytest.mark.slow
def test_a_service_that_never_answers_delays_no_other_destination(tmp_path, peer):
    """Each destination has its sender thread: the good one's result goes at once while
    the silent one's request waits out its answer time."""
    from firmware_app.dicom_out import sender as sender_module
    from firmware_app.dicom_out.outbox import enqueue_documents
    from firmware_app.storage import db

    def silent(conn: socket.socket) -> None:
        time.sleep(60)
        conn.close()

    _service, port = peer
    config = cfg.Config()
    config.storage.state_dir = str(tmp_path / "state")
    config.pacs.dimse_timeout = 10.0
    quiet = destination_for(raw_peer(silent))
    quiet.name = "archive"  # sorts first: one thread for both would serve it first
    good = destination_for(port)
    good.name = "pacs"
    config.pacs.destinations = [quiet, good]
    db.open_database(config.database_path).close()
    conn = db.connect(config.database_path)
    enqueue_documents(conn, config.dicom_out_dir, [document("sr")], config.pacs.destinations)
    conn.close()

    def sent_to(name: str) -> bool:
        check = db.connect(config.database_path)
        try:
            return check.execute("SELECT state FROM dicom_outbox WHERE destination = ?",
                                 (name,)).fetchone()[0] == "sent"
        finally:
            check.close()

    stop, wake = threading.Event(), threading.Event()
    thread = threading.Thread(target=sender_module.DicomSender(config).run, args=(stop, wake),
                              daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        while not sent_to("pacs") and time.monotonic() - started < 20:
            time.sleep(0.05)
        took = time.monotonic() - started
        assert sent_to("pacs") and took < 5, took  # not behind the silent one's 10 s
        assert not sent_to("archive")
    finally:
        stop.set()
        wake.set()
        thread.join(30)
    assert not thread.is_alive()
