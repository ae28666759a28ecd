"""Hostile peers on the clinic LAN against a running `clinibox serve`.

The attacker is another computer (a second loopback address, 127.0.0.2):
raw TCP connections that never speak, an association that streams a data set
past the object limit and never sends its last fragment, a PDU that claims
1.5 GB. Meanwhile a real modality (dcmtk's storescu, from 127.0.0.1) must
still store, the box's memory must not follow the attacker's bytes, and no
partial file may stay behind.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import time

import psutil
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE

from tests.corpus import image_dataset, write
from tests.hostile import store_pdus
from tests.integration.conftest import (
    assert_rejected_as_busy,
    dcmtk,
    dcmtk_env,
    echoscu,
    receiver_processes,
    storescu,
    wait_for,
)

pytestmark = pytest.mark.integration

ATTACKER = "127.0.0.2"
LIMIT_MB = 8


def rss_mb(pid: int) -> float:
    """Resident memory of the service and, where the native receiver has the port, of the
    receiver and its association processes, in MB (the service's other children, the
    decoder's sandbox and the runtime timing, grow with start-up, not with a peer)."""
    service = psutil.Process(pid)
    processes = [service]
    for receiver in receiver_processes(pid):
        processes += [receiver, *receiver.children()]
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):  # an association just ended
            total += process.memory_info().rss
    return total / 2**20


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the box closes ``sock`` within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) in (b"",)
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


@pytest.fixture
def box(box_factory, receiver):
    return box_factory(dicom={"receiver": receiver, "max_associations": 8,
                              "max_associations_per_peer": 4, "acse_timeout": 3,
                              "network_timeout": 5, "max_pdu_kb": 64},
                       storage={"max_object_mb": LIMIT_MB})


def test_silent_connections_cannot_lock_a_modality_out(box, tmp_path):
    silent = []
    for _ in range(8):
        sock = socket.create_connection(("127.0.0.1", box.port), timeout=5,
                                        source_address=(ATTACKER, 0))
        silent.append(sock)
    time.sleep(0.5)
    refused = sum(closed_by_peer(s, 0.5) for s in silent)
    assert refused == 4  # one address holds at most max_associations_per_peer slots
    image = write(image_dataset("modality-while-attacked"), tmp_path, "ct.dcm")
    started = time.monotonic()
    result = storescu(box.port, [image])
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10
    # the silent ones that were let in are dropped after acse_timeout
    assert all(closed_by_peer(s, 10) for s in silent if s.fileno() != -1)
    for sock in silent:
        sock.close()
    box.wait_idle(1)


def test_an_endless_data_set_is_cut_off_at_the_object_limit(box):
    ae = AE(ae_title="ATTACKER")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", box.port, ae_title="CLINIBOX",
                         bind_address=(ATTACKER, 0))
    assert assoc.is_established
    before = rss_mb(box.process.pid)
    raw = assoc.dul.socket.socket
    pdus = store_pdus(assoc, 3 * LIMIT_MB * 2**20)
    sent = 0
    try:
        for pdu in pdus[:-1]:  # never the last fragment
            raw.sendall(pdu)
            sent += len(pdu)
    except OSError:
        pass  # the box hung up: what we want
    assert sent < 2 * LIMIT_MB * 2**20  # cut off well before the attacker was done
    wait_for(lambda: not assoc.is_established, 30, "the box to drop the association")
    assert rss_mb(box.process.pid) - before < 40
    # the box removes the half-written data set when it closes the connection, a moment
    # after the attacker sees it closed
    tmp = box.state / "spool" / "tmp"
    wait_for(lambda: not any(tmp.iterdir()), 10, "the box to remove the partial data set")
    assert box.db_rows("SELECT COUNT(*) FROM instances")[0][0] == 0
    ae.shutdown()


def test_a_pdu_claiming_gigabytes_is_refused_before_it_is_read(box):
    before = rss_mb(box.process.pid)
    sock = socket.create_connection(("127.0.0.1", box.port), timeout=5,
                                    source_address=(ATTACKER, 0))
    sock.sendall(struct.pack(">BBL", 0x04, 0, 1536 * 2**20) + bytes(64 * 1024))
    assert closed_by_peer(sock, 10)
    sock.close()
    assert rss_mb(box.process.pid) - before < 40


def test_a_full_box_rejects_an_association_and_the_modality_learns_why(box_factory, receiver):
    """Over the box's association limit a modality gets an A-ASSOCIATE-RJ it can act on
    (rejected transient, local limit exceeded: retry later), from either receiver, not a
    dropped connection; once a slot frees, the same modality stores. (Two other addresses
    hold the slots: the last free one goes only to an address that holds none,
    test_fair_slots.)"""
    box = box_factory(dicom={"receiver": receiver, "max_associations": 2,
                             "max_associations_per_peer": 1, "acse_timeout": 5,
                             "network_timeout": 30})
    ae = AE(ae_title="BUSYMOD")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    held = [ae.associate("127.0.0.1", box.port, ae_title="CLINIBOX",
                         bind_address=(source, 0)) for source in (ATTACKER, "127.0.0.3")]
    assert all(assoc.is_established for assoc in held)
    echo = subprocess.run([dcmtk("echoscu"), "-v", "-aec", "CLINIBOX", "127.0.0.1",
                           str(box.port)], capture_output=True, text=True, env=dcmtk_env(),
                          timeout=60)
    assert_rejected_as_busy(echo)
    for assoc in held:
        assoc.release()
    wait_for(lambda: echoscu(box.port), 30, "a free association slot")
    ae.shutdown()
