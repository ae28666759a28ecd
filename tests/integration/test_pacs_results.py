"""A study pushed by storescu reaches a real PACS (Orthanc) as SR, SEG and key image once
it is stable, with one alert; also after a PACS outage and a ``kill -9`` of the box. The
first test's box has a second destination that takes the same results by DICOMweb STOW-RS
(Orthanc's DICOMweb plugin behind nginx for TLS, with a password: ``tests/tls_front.py``).

The whole path runs in ``clinibox serve``: dcmtk's storescu sends CT slices of
one study (phantoms of the bundled demo model, trained on synthetic images and
not for clinical use) to the box; the worker analyses them; the study
completion waits ``[studies] stable_seconds`` after the last slice, makes the
documents and queues them in the DICOM outbox; the sender delivers them to
Orthanc. What arrived is read from Orthanc's REST API and counted by its Lua
filter (every C-STORE, so "once" means sent once).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from firmware_app.service.appliance import load_runner
from firmware_app.settings.box import Config
from phantoms.dicom import write_dicom
from tests.integration.conftest import Box, storescu, wait_for
from tests.orthanc_server import Orthanc, orthanc_fixture
from tests.tls_certs import make_pki
from tests.tls_front import TlsFront
from tests.viewer_state import ct_phantom

pytestmark = pytest.mark.integration
orthanc = orthanc_fixture
STABLE_SECONDS = 3.0
RESULT_MODALITIES = {"SR", "SEG", "OT"}  # the key image is a secondary capture (OT)
STOW_PASSWORD = "archive-canary-Pw-5521"


@pytest.fixture(scope="module")
def alert_slice(tmp_path_factory) -> Path:
    """A CT phantom on which the demo model alerts (searched with the box's own runner)."""
    config = Config()
    config.runtime.backend = "onnxruntime"
    folder = tmp_path_factory.mktemp("alert")
    return ct_phantom(load_runner(config), folder / "alert.dcm", lesion=True, alert=True,
                      identity={"PatientName": "PACS^TEST", "PatientID": "PACS-1"})


def study_slices(source: Path, folder: Path, count: int, study_uid: str | None = None,
                 first: int = 0) -> list[Path]:
    """``count`` slices of one study (new SOP Instance UIDs, instance numbers and positions,
    from slice ``first`` on)."""
    folder.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(source)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid(entropy_srcs=[study_uid, "series"])
    paths = []
    for n in range(first, first + count):
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid, "frame"])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = n + 1
        x, y, _ = ds.ImagePositionPatient
        ds.ImagePositionPatient = [x, y, float(n) * float(ds.SliceThickness)]
        paths.append(write_dicom(ds, folder / f"{ds.SOPInstanceUID}.dcm"))
    return paths


def pacs_box(root: Path, pacs: Orthanc, *more: dict) -> Box:
    """A box (not started) whose PACS destination is ``pacs`` (and ``more`` tables);
    quick retries."""
    root.mkdir()
    return Box(root, {
        "studies": {"stable_seconds": STABLE_SECONDS},
        "pacs": {"retry_min_seconds": 0.2, "retry_max_seconds": 1.0, "connect_timeout": 5.0,
                 "destinations": [{"name": "pacs", "ae_title": pacs.ae_title,
                                   "host": pacs.host, "port": pacs.dicom_port,
                                   "send": ["sr", "seg", "key_image"]}, *more]}})


@contextlib.contextmanager
def stow_pacs(root: Path) -> Iterator[tuple[Orthanc, dict]]:
    """A second PACS taking results by STOW-RS over TLS with a password, and the box's
    destination table for it."""
    pki = make_pki(root / "pki")
    secret = root / "pacs-password"
    secret.write_text(STOW_PASSWORD + "\n")
    secret.chmod(0o600)
    with Orthanc(root / "orthanc", ae_title="ARCHIVE", dicomweb=True,
                 users={"clinibox": STOW_PASSWORD}) as archive, \
            TlsFront(root / "nginx", archive.http_port, pki.server_cert,
                     pki.server_key) as front:
        yield archive, {"name": "archive", "protocol": "stow-rs",
                        "url": f"https://localhost:{front.port}/dicom-web",
                        "username": "clinibox", "password_file": str(secret),
                        "ca_file": str(pki.ca_cert), "send": ["sr", "seg", "key_image"]}


def results_in_pacs(pacs: Orthanc, study_uid: str) -> dict[str, list[dict]]:
    """The study's result documents Orthanc holds, by modality (SR, SEG, OT)."""
    found = pacs.post("/tools/find", {"Level": "Instance", "Expand": True,
                                      "Query": {"StudyInstanceUID": study_uid}})
    out: dict[str, list[dict]] = {}
    for item in found:
        tags = pacs.instance_tags(item["ID"])
        if tags.get("Modality") in RESULT_MODALITIES:
            out.setdefault(tags["Modality"], []).append(tags)
    return out


def alerts(box: Box) -> int:
    """Alert messages in the box's telemetry outbox."""
    return box.db_rows("SELECT COUNT(*) FROM outbox WHERE kind = 'alert'")[0][0]


def test_a_stable_study_reaches_the_pacs_once_with_one_alert_and_a_late_slice_updates_it(
        tmp_path, orthanc, alert_slice):
    with stow_pacs(tmp_path / "archive") as (archive, by_stow):
        box = pacs_box(tmp_path / "box", orthanc, by_stow)
        box.start()
        try:
            stable_study_reaches_both(tmp_path, box, orthanc, archive, alert_slice)
        finally:
            box.stop()


def stable_study_reaches_both(tmp_path: Path, box: Box, orthanc: Orthanc, archive: Orthanc,
                              alert_slice: Path) -> None:
    """The first test's story, for the C-STORE PACS and the STOW-RS archive alike."""
    slices = study_slices(alert_slice, tmp_path / "study", 3)
    study_uid = str(pydicom.dcmread(slices[0], stop_before_pixels=True).StudyInstanceUID)
    sent = storescu(box.port, slices)
    assert sent.returncode == 0, sent.stderr
    last_slice = time.monotonic()
    box.wait_idle(3)
    assert alerts(box) == 0  # the study is not complete yet: no alert, nothing sent
    wait_for(lambda: set(results_in_pacs(orthanc, study_uid)) == RESULT_MODALITIES, 90,
             "the SR, SEG and key image in the PACS")
    arrived = time.monotonic() - last_slice
    assert arrived >= STABLE_SECONDS - 0.5  # made only once the study was stable
    print(f"last slice to SR in the PACS: {arrived:.2f} s (stable {STABLE_SECONDS} s)")
    documents = results_in_pacs(orthanc, study_uid)
    assert {k: len(v) for k, v in documents.items()} == {"SR": 1, "SEG": 1, "OT": 1}
    sr_uid = documents["SR"][0]["SOPInstanceUID"]
    wait_for(lambda: alerts(box) == 1, 30, "the study's one alert")
    # a slice arriving after the completion updates the study: SR version 2, no new alert
    late = study_slices(alert_slice, tmp_path / "late", 1, study_uid, first=3)
    assert storescu(box.port, late).returncode == 0
    wait_for(lambda: len(results_in_pacs(orthanc, study_uid).get("SR", [])) == 2, 90,
             "the study's second SR")
    second = next(tags for tags in results_in_pacs(orthanc, study_uid)["SR"]
                  if tags["SOPInstanceUID"] != sr_uid)
    full = orthanc.get(f"/instances/{orthanc.find(second['SOPInstanceUID'])[0]}/tags"
                       "?simplify")
    predecessors = full["PredecessorDocumentsSequence"][0]
    referenced = [item["ReferencedSOPInstanceUID"] for series in
                  predecessors["ReferencedSeriesSequence"]
                  for item in series["ReferencedSOPSequence"]]
    assert referenced == [sr_uid]
    evidence = [item["ReferencedSOPInstanceUID"] for study in
                full["CurrentRequestedProcedureEvidenceSequence"]
                for series in study["ReferencedSeriesSequence"]
                for item in series["ReferencedSOPSequence"]]
    slice_uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                  for p in slices + late}
    assert slice_uids <= set(evidence)
    # the STOW-RS archive got the same documents, the second SR too, each once
    wait_for(lambda: len(results_in_pacs(archive, study_uid).get("SR", [])) == 2, 90,
             "both SRs in the STOW-RS archive")
    by_stow = results_in_pacs(archive, study_uid)
    assert set(by_stow) == RESULT_MODALITIES
    assert {t["SOPInstanceUID"] for v in by_stow.values() for t in v} == {
        t["SOPInstanceUID"] for v in results_in_pacs(orthanc, study_uid).values()
        for t in v}
    time.sleep(1.0)
    assert alerts(box) == 1
    assert set(orthanc.receptions().values()) == {1}  # every document sent once
    assert set(archive.receptions().values()) == {1}
    assert STOW_PASSWORD not in box.log.read_text(errors="replace")


def test_results_wait_out_a_pacs_outage_and_a_kill_9_and_arrive_once(
        tmp_path, orthanc, alert_slice):
    orthanc.stop()
    box = pacs_box(tmp_path / "box", orthanc)
    box.start()
    try:
        slices = study_slices(alert_slice, tmp_path / "study", 2)
        study_uid = str(pydicom.dcmread(slices[0], stop_before_pixels=True).StudyInstanceUID)
        assert storescu(box.port, slices).returncode == 0
        box.wait_idle(2)

        def tried_and_waiting() -> bool:
            rows = box.db_rows("SELECT state, attempts FROM dicom_outbox")
            return len(rows) == 3 and all(r[0] == "pending" and r[1] >= 1 for r in rows)

        wait_for(tried_and_waiting, 90, "the study's results to wait for the PACS")
        status = box.cli_json("status")
        (pacs,) = status["pacs"]
        assert pacs["waiting"] == 3 and pacs["last_error"]
        box.kill9()
        orthanc.start()
        box.start()
        wait_for(lambda: set(results_in_pacs(orthanc, study_uid)) == RESULT_MODALITIES, 90,
                 "the results in the PACS after the outage and the restart")
        wait_for(lambda: all(r[0] == "sent" for r in box.db_rows(
            "SELECT state FROM dicom_outbox")), 30, "the outbox rows marked sent")
        received = orthanc.receptions()
        assert len(received) == 3 and set(received.values()) == {1}
        wait_for(lambda: alerts(box) == 1, 30, "the study's one alert")
    finally:
        box.stop()
