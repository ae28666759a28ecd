"""The Python side of the native DICOM receiver: the landing socket and the choice of
receiver. (The receiver itself, against dcmtk's storescu and hostile peers, is in
tests/integration.)"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage

from firmware_app.ingest import native_receiver
from firmware_app.ingest.dicom_scp import StorageSCP
from firmware_app.ingest.landing import Lander
from firmware_app.ingest.native_receiver import (
    LandingServer,
    NativeStorageSCP,
    ReceiverFailed,
    parse_request,
    receiver_arguments,
)
from firmware_app.ingest.store_answer import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, SUCCESS
from firmware_app.service.appliance import start_storage_scp
from firmware_app.settings.dicom import DicomConfig
from firmware_app.storage import db
from firmware_app.storage.spool import Spool
from tests.corpus import image_dataset, write
from tests.ports import free_port

UID = "1.2.826.0.1.3680043.8.498.1"


def request(name: str, uid: str = UID, calling: str = "CT_ROOM_1",
            sop_class: str = CTImageStorage) -> bytes:
    return (f"{name}\t{uid.encode().hex()}\t{calling.encode().hex()}\t"
            f"{sop_class.encode().hex()}\n").encode()


def test_a_request_names_a_received_file_and_decodes_its_fields():
    assert parse_request(request("receiving-12-0.dcm")) == (
        "receiving-12-0.dcm", UID, "CT_ROOM_1", CTImageStorage)
    # padding a peer sent is not part of the UID; an empty UID is no UID
    padded = f"receiving-1-2.dcm\t{(UID + chr(0)).encode().hex()}\t\t\n".encode()
    assert parse_request(padded) == ("receiving-1-2.dcm", UID, None, None)


@pytest.mark.parametrize("line", [
    request("../../etc/passwd"),
    request("receiving-1-0.dcm/../../x"),
    request("spool.dcm"),
    b"receiving-1-0.dcm\tzz\t\t\n",        # not hex
    b"receiving-1-0.dcm\t\t\n",            # a field missing (the protocol before the
                                           # SOP Class UID: a receiver out of step)
    request("receiving-1-0.dcm") + b"\textra",
])
def test_a_request_for_anything_else_is_refused(line):
    with pytest.raises(ValueError):
        parse_request(line)


def test_the_receiver_gets_every_bound_of_the_dicom_settings():
    config = DicomConfig(ae_title="BOX", port=104, allowed_calling_aets=["A", "B"],
                         dimse_timeout=90, network_timeout=30.5, tls_enabled=True,
                         tls_cert="c.pem", tls_key="k.pem", tls_ca="ca.pem")
    arguments = receiver_arguments(config, Path("/s/tmp"), Path("/r/l.sock"), 2**20)
    pairs = dict(zip(arguments[::2], arguments[1::2], strict=True))
    assert pairs["--ae-title"] == "BOX" and pairs["--port"] == "104"
    assert pairs["--dimse-timeout"] == "31"  # the shorter of DIMSE and idle, rounded up
    assert pairs["--max-object"] == str(2**20) and pairs["--max-pdu"] == str(256 * 1024)
    assert arguments.count("--allow-calling") == 2
    assert pairs["--tls-ca"] == "ca.pem"


@pytest.fixture
def landing(tmp_path):
    database = tmp_path / "box.db"
    conn = db.connect(database)
    db.initialise(conn)
    conn.close()
    spool = Spool(tmp_path / "spool", tmp_path / "quarantine")
    lander = Lander(spool, database, 2**20)
    stored = threading.Event()
    server = LandingServer(tmp_path / "l.sock", lander, stored.set)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, spool, database, stored
    server.shutdown()
    server.server_close()


def ask(path: Path, line: bytes) -> int:
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))
        client.sendall(line)
        return int(client.makefile("rb").readline())


def test_the_landing_socket_lands_what_the_receiver_wrote(landing, tmp_path):
    server, spool, database, stored = landing
    received = write(image_dataset("landing", sop_instance_uid=UID), spool.tmp, "receiving-7-0.dcm")
    assert ask(Path(server.server_address), request(received.name)) == SUCCESS
    assert stored.is_set()
    assert not received.exists()  # renamed into the spool
    conn = db.connect(database)
    row = conn.execute("SELECT sop_instance_uid, origin, spool_path FROM instances").fetchone()
    assert (row["sop_instance_uid"], row["origin"]) == (UID, "CT_ROOM_1")
    assert Path(row["spool_path"]).is_file()


def test_the_landing_socket_refuses_a_name_outside_what_the_receiver_writes(landing):
    server, spool, _database, stored = landing
    outside = spool.root.parent / "secret.dcm"
    outside.write_bytes(b"not for the box")
    assert ask(Path(server.server_address), request("../../secret.dcm")) == CANNOT_UNDERSTAND
    assert outside.exists() and not stored.is_set()


def test_a_missing_file_is_out_of_resources_so_the_sender_retries(landing):
    server, _spool, _database, stored = landing
    assert ask(Path(server.server_address), request("receiving-9-9.dcm")) == OUT_OF_RESOURCES
    assert not stored.is_set()


@pytest.mark.slow
def test_auto_takes_the_native_receiver_only_where_it_is_built(monkeypatch, tmp_path):
    lander = Lander(Spool(tmp_path / "s", tmp_path / "q"), tmp_path / "db", 2**20)

    def started(receiver: str):
        config = DicomConfig(receiver=receiver, host="127.0.0.1", port=free_port())
        return start_storage_scp(config, lander, lambda: None)

    monkeypatch.setattr(native_receiver, "receiver_binary", lambda: None)
    scp = started("auto")
    assert isinstance(scp, StorageSCP)
    scp.stop()
    with pytest.raises(ReceiverFailed, match="not built"):
        started("native")
    # a stand-in for the built receiver: it says READY and waits to be stopped
    built = tmp_path / "clinibox-receiver"
    built.write_text("#!/bin/sh\necho READY\nexec sleep 60\n")
    built.chmod(0o755)
    monkeypatch.setattr(native_receiver, "receiver_binary", lambda: built)
    scp = started("auto")
    assert isinstance(scp, NativeStorageSCP)
    scp.stop()
    scp = started("pynetdicom")
    assert isinstance(scp, StorageSCP)
    scp.stop()
