"""The box's studies read over DICOMweb by a client nobody here wrote (``dicomweb-client``),
on a running box (``clinibox serve`` with its viewer over TLS) that a modality filled with
dcmtk's ``storescu``: the study found by a search, its series with the SR and SEG the box
and key image the box made, each object retrieved as the box holds it; no account, no answer.

CT phantoms analysed by the bundled demo model (phantom-trained, not for clinical use).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid
from requests.auth import HTTPBasicAuth

from phantoms.dicom import ct_dataset, write_dicom
from phantoms.images import generate
from tests.box_harness import add_viewer_account
from tests.integration.conftest import REPO, send_as_modality, wait_for
from tests.ports import free_port

pytestmark = pytest.mark.integration

NURSE = ("nadia", "the-clinic-nurse-1")
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def _client(port: int, cert, auth: tuple[str, str]) -> DICOMwebClient:
    """dicomweb-client over HTTPS, trusting the box's certificate, with Basic credentials."""
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
    session.auth = HTTPBasicAuth(*auth)
    session.verify = str(cert)
    return DICOMwebClient(f"https://localhost:{port}/dicomweb", session=session)


@pytest.fixture
def box(box_factory, tmp_path):
    """A running box with DICOMweb on, a nurse's account, and a three-slice CT study with a
    lesion sent by storescu, analysed and completed (its documents kept)."""
    port = free_port()
    box = box_factory(web={"enabled": True, "port": port}, dicomweb={"enabled": True},
                      studies={"stable_seconds": 1.0})
    cert = box.state / "keys" / "web-cert.pem"
    study, series = generate_uid(), generate_uid()
    files = []
    for n in range(3):
        ds = ct_dataset(generate("ct", np.random.default_rng(n), size=256, lesion=True),
                        {"StudyInstanceUID": study, "SeriesInstanceUID": series,
                         "PatientID": "DWEB-1", "PatientName": "DICOMWEB^NADIA"})
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], 5.0 * n]  # one volume
        ds.InstanceNumber = n + 1
        files.append(write_dicom(ds, tmp_path / f"slice{n}.dcm"))
    wait_for(cert.exists, 90, "the viewer's certificate")
    add_viewer_account(box, *NURSE, "clinician")
    sent, output = send_as_modality(box.port, files)
    assert sent == 3, output
    box.wait_idle(3)
    wait_for(lambda: {k for (k,) in box.db_rows("SELECT kind FROM kept_documents")} ==
             {"sr", "seg", "key_image"}, 120,
             "the study's documents to be kept")
    return box, port, cert, study, files


def test_a_dicomweb_client_finds_the_study_its_sr_and_seg_and_retrieves_them(box):
    box, port, cert, study, files = box
    client = _client(port, cert, NURSE)
    [found] = client.search_for_studies(search_filters={"PatientID": "DWEB-1"})
    assert found["0020000D"]["Value"] == [study]
    assert found["00100010"]["Value"][0]["Alphabetic"] == "DICOMWEB^NADIA"
    # the images, the SR, the SEG and the key image (a secondary capture: OT)
    assert sorted(found["00080061"]["Value"]) == ["CT", "OT", "SEG", "SR"]
    series = client.search_for_series(study)
    by_modality = {s["00080060"]["Value"][0]: s["0020000E"]["Value"][0] for s in series}
    assert set(by_modality) == {"CT", "OT", "SEG", "SR"}
    sent = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    segs = client.search_for_instances(study, by_modality["SEG"])
    assert segs  # one a slice: single images, not a volume
    referenced: set[str] = set()
    for match in segs:
        seg = client.retrieve_instance(study, by_modality["SEG"], match["00080018"]["Value"][0])
        assert seg.SOPClassUID == SEGMENTATION and seg.StudyInstanceUID == study
        referenced |= {item.ReferencedSOPInstanceUID for item in
                       seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
        assert seg.pixel_array.any()  # the lesion's outline
    assert referenced and referenced <= sent
    [sr_match] = client.search_for_instances(study, by_modality["SR"])
    sr = client.retrieve_instance(study, by_modality["SR"], sr_match["00080018"]["Value"][0])
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR
    images = client.retrieve_series(study, by_modality["CT"])
    assert sorted(i.SOPInstanceUID for i in images) == sorted(sent)
    original = {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f) for f in files}
    for image in images:
        assert image.PixelData == original[image.SOPInstanceUID].PixelData
    [frame] = client.retrieve_instance_frames(  # one frame, as a viewer that shows it asks
        study, by_modality["CT"], images[0].SOPInstanceUID, [1],
        media_types=(("application/octet-stream", "*"),))
    assert frame == original[images[0].SOPInstanceUID].PixelData
    meta = client.retrieve_instance_metadata(study, by_modality["SR"],
                                             sr_match["00080018"]["Value"][0])
    assert meta["00080016"]["Value"] == [COMPREHENSIVE_3D_SR]
    assert "Traceback" not in box.log.read_text()


def test_the_pages_python_block_runs_as_written(box, tmp_path):
    """docs/integration/dicomweb.md: its environment, then its Python block, on the box."""
    box, port, cert, study, _files = box
    page = (REPO / "docs" / "integration" / "dicomweb.md").read_text()
    [block] = re.findall(r"```python\n(.*?)```", page, re.S)
    script = tmp_path / "read_the_box.py"
    script.write_text(block)
    environment = {**os.environ, "BOX_DICOMWEB": f"https://localhost:{port}/dicomweb",
                   "BOX_ACCOUNT": NURSE[0], "BOX_PASSWORD": NURSE[1], "BOX_CERT": str(cert)}
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # the page says why
        environment.pop(name, None)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=environment, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{study} DICOMWEB^NADIA ['CT', 'OT', 'SEG', 'SR']" in done.stdout
    assert "lesion outlines for" in done.stdout


def test_no_account_no_answer(box):
    _box, port, cert, _study, _files = box
    with pytest.raises(requests.HTTPError) as refused:
        _client(port, cert, ("nadia", "not-her-password")).search_for_studies()
    assert refused.value.response.status_code == 401
    bare = requests.Session()
    bare.trust_env = False
    answer = bare.get(f"https://localhost:{port}/dicomweb/studies", verify=str(cert),
                      allow_redirects=False, timeout=30)
    assert answer.status_code == 401 and "Basic" in answer.headers["WWW-Authenticate"]
