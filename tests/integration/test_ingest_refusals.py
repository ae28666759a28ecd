"""The box refuses what Orthanc refuses: C-STOREs whose data set does not match the command
(another SOP Instance UID, an MR command for a CT data set), a data set without SOP
Instance UID, without Study or Series Instance UID, UIDs that are not UIDs (5,002
characters, ``../../tmp/x``, a Study Instance UID with a leading zero), and data sets cut
short (a Pixel Data announced 1,000 bytes longer than what was sent; a data set ending
inside the Pixel Data's element header). Each object goes, on one association spoken by
hand (``tests/lying_scu.py``), to a real Orthanc and to `clinibox serve` with each
receiver; the box must answer the failure Orthanc answers (or refuse where Orthanc does
not), store nothing for it, and store the valid object sent right after on the same
association.

Where the box is stricter than Orthanc 1.10, and why:

* Orthanc stores ``../../tmp/x`` and a Study Instance UID with a leading zero (it answers
  Success): the box refuses those as "cannot understand" (0xC000), as it refuses a data
  set without SOP Instance UID (a UID names files and rows downstream).
* Orthanc stores a data set that ends inside the Pixel Data's element header (dcmtk
  drops the broken element: Success, an image without pixels); the box refuses it as
  0xC000: what arrived is not what was sent.
* A Pixel Data longer than the bytes sent: Orthanc ends the association without an
  answer (the sender learns nothing but must send again); the box refuses that object as
  0xC000 and keeps the association, so the objects after it still arrive. Neither
  stores it.

A 5,002-character UID in the command is beyond what dcmtk reads: Orthanc ends the
association without an answer, and so does the box.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom.uid import CTImageStorage, MRImageStorage

from tests.integration.conftest import Box
from tests.lying_scu import CASES, SUCCESS, LyingSCU, encoded
from tests.orthanc_server import Orthanc

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def orthanc(tmp_path_factory) -> Iterator[Orthanc]:
    # a data set cut short leaves Orthanc waiting for the rest until its DIMSE timeout
    # (30 s by default), then it ends the association
    with Orthanc(tmp_path_factory.mktemp("orthanc"), extra={"DicomScpTimeout": 3}) as server:
        yield server


@pytest.fixture(scope="module", params=["native", "pynetdicom"])
def box(request, tmp_path_factory) -> Iterator[Box]:
    instance = Box(tmp_path_factory.mktemp(f"box-{request.param}"),
                   {"dicom": {"receiver": request.param}})
    instance.start()
    yield instance
    instance.stop()


def send_case(port: int, called: str, case: str, serial: int) -> tuple[int | None, str]:
    """Send a case, then a valid object on the same association (a new one where the
    peer ended it); (the case's status, the valid object's SOP Instance UID), asserting
    the valid object was answered Success."""
    data, sop_class, sop_instance = CASES[case][0]()
    scu = LyingSCU(port, called, [CTImageStorage, MRImageStorage])
    try:
        status = scu.store(data, sop_class=sop_class, sop_instance=sop_instance)
        if status is None:  # the peer ended the association
            scu.release()
            scu = LyingSCU(port, called, [CTImageStorage, MRImageStorage])
        valid, uid = encoded(f"valid-after-{case}-{serial}")
        assert scu.store(valid, sop_class=CTImageStorage, sop_instance=uid) == SUCCESS
    finally:
        scu.release()
    return status, uid


@pytest.mark.parametrize("case", list(CASES))
def test_the_box_refuses_what_orthanc_refuses_and_stores_nothing_of_it(box, orthanc, case):
    _, orthanc_answer, box_answer = CASES[case]
    orthanc_case = CASES[case][0]()[2]
    before = {r[0] for r in box.db_rows("SELECT sop_instance_uid FROM instances")}

    answered, _ = send_case(orthanc.dicom_port, orthanc.ae_title, case, 0)
    assert answered == orthanc_answer, f"Orthanc answered {answered!r} for {case}"
    status, valid_uid = send_case(box.port, "CLINIBOX", case, 1)
    assert status == box_answer, f"the box answered {status!r} for {case}"
    if orthanc_answer not in (SUCCESS, None):
        assert status == orthanc_answer
    else:  # at least as strict: refused where Orthanc stores it or ends the association
        assert status != SUCCESS or orthanc_answer == box_answer == SUCCESS
    if orthanc_answer is None and box_answer is not None:
        assert orthanc_case not in orthanc.sop_instance_uids()  # Orthanc did not keep it

    # nothing of the refused object: no row, no file left in the spool's tmp; the valid
    # one after it is stored under its own UID
    after = {r[0] for r in box.db_rows("SELECT sop_instance_uid FROM instances")}
    assert after - before == {valid_uid}
    assert list((box.state / "spool" / "tmp").iterdir()) == []
    if status is not None:
        assert f"C-STORE refused: reason={REASONS[case]}" in box.log.read_text()


REASONS = {"uid_mismatch": "uid_mismatch", "class_mismatch": "class_mismatch",
           "long_uid_in_data_set": "uid_mismatch",
           "no_sop_instance_uid": "no_sop_instance_uid", "path_uid": "invalid_uid",
           "leading_zero_study_uid": "invalid_uid",
           "no_study_instance_uid": "no_study_instance_uid",
           "no_series_instance_uid": "no_series_instance_uid",
           "pixel_data_cut_short": "cut_short", "pixel_data_header_cut": "cut_short"}
