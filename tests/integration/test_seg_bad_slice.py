"""One bad slice never takes its series' SEG with it (issue 56).

A CT series of four slices on which the bundled demo model alerts (phantoms, not for
clinical use), one of them with five Image Orientation (Patient) cosines instead of six, is
sent by dcmtk's storescu to `clinibox serve`, whose PACS is a real Orthanc. Before, the
whole series' SEG was lost ('FileDataset' object has no attribute
'ImageOrientationPatient'). Now Orthanc receives a SEG of the three good slices only, the
SR still names all four, and the box's event log says which slice was left out of the SEG
and why (``study_seg_left_out``, its words on the device page).
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from phantoms.dicom import write_dicom
from tests.integration.conftest import storescu, wait_for
from tests.integration.test_pacs_results import (
    alert_slice,
    pacs_box,
    results_in_pacs,
    study_slices,
)
from tests.orthanc_server import Orthanc, orthanc_fixture

pytestmark = pytest.mark.integration
orthanc = orthanc_fixture
__all__ = ["alert_slice"]  # a fixture, used by name


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _full_tags(pacs: Orthanc, sop_instance_uid: str) -> dict:
    return pacs.get(f"/instances/{pacs.find(sop_instance_uid)[0]}/tags?simplify")


def test_a_slice_with_five_orientation_cosines_is_left_out_of_the_seg_and_the_rest_go(
        tmp_path, orthanc, alert_slice):
    slices = study_slices(alert_slice, tmp_path / "study", 4)
    bad = slices[2]
    ds = pydicom.dcmread(bad)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1]  # five cosines
    write_dicom(ds, bad)
    study_uid = str(ds.StudyInstanceUID)
    good = {_uid(p) for p in slices} - {_uid(bad)}

    box = pacs_box(tmp_path / "box", orthanc)
    box.start()
    try:
        sent = storescu(box.port, slices)
        assert sent.returncode == 0, sent.stderr
        assert (sent.stdout + sent.stderr).count("Received Store Response (Success)") == 4
        wait_for(lambda: {"SR", "SEG"} <= set(results_in_pacs(orthanc, study_uid)), 90,
                 "the SR and the SEG in the PACS")
        documents = results_in_pacs(orthanc, study_uid)
        (seg,) = documents["SEG"]
        full = _full_tags(orthanc, seg["SOPInstanceUID"])
        (series,) = full["ReferencedSeriesSequence"]
        referenced = {item["ReferencedSOPInstanceUID"]
                      for item in series["ReferencedInstanceSequence"]}
        assert referenced == good
        frames = [frame["DerivationImageSequence"][0]["SourceImageSequence"][0]
                  ["ReferencedSOPInstanceUID"]
                  for frame in full["PerFrameFunctionalGroupsSequence"]]
        assert set(frames) == good  # masks on every good slice, none on the bad one

        (sr,) = documents["SR"]  # the bad slice's finding still reaches the PACS
        evidence = {item["ReferencedSOPInstanceUID"] for study in
                    _full_tags(orthanc, sr["SOPInstanceUID"])[
                        "CurrentRequestedProcedureEvidenceSequence"]
                    for each in study["ReferencedSeriesSequence"]
                    for item in each["ReferencedSOPSequence"]}
        assert good | {_uid(bad)} <= evidence

        (instance_id,) = [row[0] for row in box.db_rows(
            "SELECT id FROM instances WHERE sop_instance_uid = ?", (_uid(bad),))]
        (event,) = box.db_rows(
            "SELECT level, message FROM events WHERE code LIKE 'study_seg_left_out:%'")
        assert event[0] == "WARNING"
        assert f"not-in-seg {instance_id}=no-image-orientation" in event[1]
    finally:
        box.stop()
