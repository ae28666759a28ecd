"""Fair association slots, on both receivers: no small set of addresses can hold every
slot. With 8 slots and 4 per address, two modalities (127.0.0.1 and 127.0.0.2) open all
they may and hold them: the second gets 3, its 4th is rejected as busy (transient, local
limit exceeded) because the last free slot is kept for an address that holds none, and a
third modality (127.0.0.3) still associates and echoes. Then the box is full: a fourth
address is rejected as busy too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, Association
from pynetdicom.sop_class import Verification

from tests.integration.conftest import Box, wait_for

pytestmark = pytest.mark.integration

SLOTS, PER_ADDRESS = 8, 4


@pytest.fixture(scope="module", params=["native", "pynetdicom"])
def box(request, tmp_path_factory) -> Iterator[Box]:
    instance = Box(tmp_path_factory.mktemp(f"box-{request.param}"),
                   {"dicom": {"receiver": request.param, "max_associations": SLOTS,
                              "max_associations_per_peer": PER_ADDRESS}})
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def modality() -> Iterator[AE]:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    yield ae
    ae.shutdown()


def associate(ae: AE, box: Box, source: str) -> Association:
    return ae.associate("127.0.0.1", box.port, ae_title="CLINIBOX", bind_address=(source, 0))


def assert_busy(assoc: Association) -> None:
    """Rejected transient (0x02), by the service provider's presentation layer (0x03):
    local limit exceeded (0x02) — what a full box answers; the modality retries later."""
    assert assoc.is_rejected and not assoc.is_established
    answer = assoc.acceptor.primitive
    assert (answer.result, answer.result_source, answer.diagnostic) == (0x02, 0x03, 0x02)


def test_a_third_modality_gets_a_slot_while_two_hold_all_they_may(box, modality):
    first = [associate(modality, box, "127.0.0.1") for _ in range(PER_ADDRESS)]
    assert all(assoc.is_established for assoc in first)
    second = [associate(modality, box, "127.0.0.2") for _ in range(PER_ADDRESS)]
    assert [assoc.is_established for assoc in second] == [True] * (PER_ADDRESS - 1) + [False]
    assert_busy(second[-1])

    third = associate(modality, box, "127.0.0.3")
    assert third.is_established
    assert third.send_c_echo().Status == 0x0000
    assert_busy(associate(modality, box, "127.0.0.4"))  # now every slot is taken

    held = [assoc for assoc in (*first, *second, third) if assoc.is_established]
    assert len(held) == SLOTS
    for assoc in held:
        assoc.release()
    # the slots come back once released
    wait_for(lambda: _released(modality, box), 30, "the slots to be free again")
    assert "the last free slot is kept for an address that holds none" in box.log.read_text()


def _released(ae: AE, box: Box) -> bool:
    assoc = associate(ae, box, "127.0.0.2")
    established = assoc.is_established
    if established:
        assoc.release()
    return established
