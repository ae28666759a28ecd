"""The pynetdicom front's slot count (bounded_server) in this process: a connection told
"busy" gives its place back when it closes, so a modality retrying against a full box is
answered A-ASSOCIATE-RJ every time, never a dropped connection once the count leaks.
(Both receivers over the network: tests/integration/test_fair_slots.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE

from firmware_app.ingest.dicom_scp import StorageSCP
from firmware_app.ingest.landing import Lander
from firmware_app.settings.dicom import DicomConfig
from firmware_app.storage.spool import Spool
from tests.ports import free_port


def wait_for(predicate, timeout: float, what: str) -> None:
    """Poll ``predicate`` until true, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def scp(tmp_path) -> Iterator[StorageSCP]:
    config = DicomConfig(host="127.0.0.1", port=free_port(), max_associations=2,
                         max_associations_per_peer=2, receiver="pynetdicom")
    server = StorageSCP(config, Lander(Spool(tmp_path / "s", tmp_path / "q"),
                                       tmp_path / "box.db", 2**20))
    server.start()
    yield server
    server.stop()


def test_busy_answers_give_their_place_back(scp):
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)

    def associate(source: str):
        return ae.associate("127.0.0.1", scp.config.port, ae_title="CLINIBOX",
                            bind_address=(source, 0))

    held = associate("127.0.0.2")
    assert held.is_established
    for _ in range(3 * scp.config.max_associations):  # more than busy answers at once
        retry = associate("127.0.0.2")  # the last slot is kept for another address
        assert retry.is_rejected and not retry.is_aborted
    server = scp.server
    assert server is not None
    wait_for(lambda: server._refusing == 0, 10, "the busy answers to end")
    other = associate("127.0.0.3")
    assert other.is_established
    held.release()
    other.release()
    wait_for(lambda: server._held == {}, 10, "every slot to be free")
    ae.shutdown()
