"""A PACS nobody here wrote sends real scans to the box: Orthanc, given pydicom's test
files (real CT, MR, ultrasound, compressed), pushes them with its own C-STORE SCU to a
running `clinibox serve`, through each of the box's DICOM receivers. Every object must
arrive under its own SOP Instance UID and get a result or a reason."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.integration.conftest import wait_for
from tests.integration.test_dicom_ingest import IMAGE_FILES, NON_IMAGE_FILES
from tests.orthanc_server import Orthanc

pytestmark = pytest.mark.integration


def upload(pacs: Orthanc, data: bytes) -> str:
    """Put a DICOM file into Orthanc over its REST API; its Orthanc id."""
    request = urllib.request.Request(f"http://{pacs.host}:{pacs.http_port}/instances",
                                     data=data, method="POST",
                                     headers={"Content-Type": "application/dicom"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())["ID"]


def test_a_pacs_pushes_real_scans_to_the_box(box_factory, tmp_path, receiver):
    box = box_factory(dicom={"receiver": receiver})
    names = IMAGE_FILES + NON_IMAGE_FILES
    paths = [get_testdata_file(name) for name in names]
    uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}
    modality = {"clinibox": {"AET": "CLINIBOX", "Host": "127.0.0.1", "Port": box.port}}
    with Orthanc(tmp_path / "orthanc", ae_title="HOSPITAL_PACS",
                 extra={"DicomModalities": modality}) as pacs:
        ids = [upload(pacs, Path(p).read_bytes()) for p in paths]
        assert len(set(ids)) == len(uids)
        job = pacs.post("/modalities/clinibox/store", {"Resources": ids, "Synchronous": True},
                        timeout=120)
        assert job.get("FailedInstancesCount", 0) == 0, job
    wait_for(lambda: len(box.db_rows("SELECT 1 FROM instances")) >= len(uids), 60,
             "every object in the box's queue")
    box.wait_idle(len(uids))
    rows = box.db_rows("SELECT sop_instance_uid, origin, status, reason FROM instances")
    assert {r["sop_instance_uid"] for r in rows} == uids
    assert {r["origin"] for r in rows} == {"HOSPITAL_PACS"}
    by_status = {r["status"] for r in rows}
    assert by_status <= {"processed", "not_analysed", "quarantined"}, by_status
    assert all(r["reason"] for r in rows if r["status"] != "processed")
    processed = [r for r in rows if r["status"] == "processed"]
    assert len(processed) >= len(IMAGE_FILES) // 2
