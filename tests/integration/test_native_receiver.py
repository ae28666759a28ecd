"""The native DICOM receiver (clinibox-receiver) as a process of the running box: it ends
with the service (even on SIGKILL), it is started again when it dies, and an association
process that crashes mid-transfer leaves nothing behind; damaged upper-layer traffic
ends only its own association. (What it answers to modalities
and hostile peers is tested for both receivers in test_dicom_ingest, test_dicom_tls and
test_hostile_peers.)"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE

from clinibox_common.fs import _pid_namespace
from firmware_app.ingest.native_receiver import SOCKET_FOLDER_PREFIX
from tests.hostile import association_request, mutated, store_pdus
from tests.integration.conftest import receiver_processes, storescu, wait_for
from tests.integration.test_dicom_ingest import phantom_dicoms

pytestmark = pytest.mark.integration

def association_processes(receiver: psutil.Process) -> list[psutil.Process]:
    """The receiver's children: one per open association."""
    return receiver.children()


@pytest.fixture
def box(box_factory):
    return box_factory(dicom={"receiver": "native"})


def landing_folders(pid: int) -> list[Path]:
    """The landing socket folders of the service ``pid`` in the temp folder."""
    return list(Path(tempfile.gettempdir()).glob(
        f"{SOCKET_FOLDER_PREFIX}{_pid_namespace()}_{pid}-*"))


def test_the_receiver_ends_with_the_service_even_on_a_power_cut_stand_in(box, tmp_path):
    [receiver] = receiver_processes(box.process.pid)
    [left] = landing_folders(box.process.pid)
    assert (left / "landing.sock").exists()
    box.kill9()
    wait_for(lambda: not receiver.is_running() or receiver.status() == psutil.STATUS_ZOMBIE,
             10, "the receiver to end with its service")
    # the port is free again: a new service can listen on it at once
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", box.port))
    assert left.exists()  # nothing of the killed service cleaned up after it
    box.start()
    assert not left.exists()  # the next start removed it; its own is there
    assert len(landing_folders(box.process.pid)) == 1
    files = phantom_dicoms(tmp_path / "phantoms", 1)
    assert storescu(box.port, files).returncode == 0
    box.wait_idle(1)


def test_a_receiver_that_dies_is_started_again(box, tmp_path):
    [receiver] = receiver_processes(box.process.pid)
    receiver.send_signal(signal.SIGKILL)
    wait_for(lambda: [p.pid for p in receiver_processes(box.process.pid)
                      if p.pid != receiver.pid and p.is_running()] != [],
             30, "a new receiver")
    files = phantom_dicoms(tmp_path / "phantoms", 2)
    wait_for(lambda: storescu(box.port, files).returncode == 0, 30, "C-STORE to work again")
    box.wait_idle(2)
    assert "clinibox-receiver ended (exit status -9); starting it again" in box.log.read_text()


def test_an_association_process_that_crashes_mid_transfer_leaves_nothing(box):
    [receiver] = receiver_processes(box.process.pid)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", box.port, ae_title="CLINIBOX")
    assert assoc.is_established
    raw = assoc.dul.socket.socket
    for pdu in store_pdus(assoc, 4 * 2**20)[:20]:  # part of a data set, never its end
        raw.sendall(pdu)
    tmp = box.state / "spool" / "tmp"
    wait_for(lambda: any(tmp.iterdir()), 10, "the data set to arrive in the spool's tmp")
    [child] = association_processes(receiver)
    child.send_signal(signal.SIGSEGV)  # as if a hostile data set crashed the parser
    wait_for(lambda: not any(tmp.iterdir()), 10, "the partial data set to be removed")
    wait_for(lambda: not assoc.is_established, 30, "the association to be dropped")
    ae.shutdown()
    assert receiver.is_running()  # only that association ended
    # the receiver removes the leftovers, then says so; its line reaches the log through
    # the service's forwarding thread, a moment later
    wait_for(lambda: f"ended with signal {int(signal.SIGSEGV)}" in box.log.read_text(), 10,
             "the crash to be logged")
    assert box.db_rows("SELECT COUNT(*) FROM instances")[0][0] == 0
    time.sleep(0.5)
    assert storescu(box.port, phantom_dicoms(box.root / "phantoms", 1)).returncode == 0
    box.wait_idle(1)


def test_damaged_upper_layer_traffic_ends_only_its_own_association(box, tmp_path):
    """Association requests and P-DATA PDUs damaged at random (seeded), 150 connections:
    the receiver's listening process survives every one, no association process crashes,
    nothing is left half written, and a modality stores right after."""
    [receiver] = receiver_processes(box.process.pid)
    rng = random.Random(17)
    request = association_request()
    ae = AE(ae_title="ATTACKER")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", box.port, ae_title="CLINIBOX")
    pdus = store_pdus(assoc, 20_000)
    assoc.release()
    for _ in range(150):
        with contextlib.suppress(OSError), \
                socket.create_connection(("127.0.0.1", box.port), timeout=2) as attack:
            if rng.random() < 0.5:
                attack.sendall(mutated(request, rng))
            else:
                attack.sendall(request)
                attack.recv(65536)  # the association is accepted
                for pdu in pdus[: rng.randint(1, len(pdus))]:
                    attack.sendall(mutated(pdu, rng) if rng.random() < 0.5 else pdu)
            attack.settimeout(0.2)
            attack.recv(65536)
    wait_for(lambda: not association_processes(receiver), 30, "every association to end")
    assert receiver.is_running() and receiver_processes(box.process.pid) == [receiver]
    log = box.log.read_text()
    assert "ended with signal" not in log and "starting it again" not in log
    assert list((box.state / "spool" / "tmp").iterdir()) == []
    files = phantom_dicoms(tmp_path / "phantoms", 2)
    assert storescu(box.port, files).returncode == 0
    box.wait_idle(2)
    ae.shutdown()
