"""dcmtk's storescu/echoscu against a running `clinibox serve`: every image gets a
result, every non-image a quarantine reason, duplicates are not processed twice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.integration.conftest import REPO, echoscu, storescu, wait_for

pytestmark = pytest.mark.integration

#: pydicom's test files that are images, across SOP classes and transfer syntaxes
IMAGE_FILES = [
    "CT_small.dcm",                      # CT, explicit little endian
    "MR_small.dcm",                      # MR
    "MR_small_bigendian.dcm",            # explicit big endian
    "JPEG-LL.dcm",                       # JPEG lossless SV1
    "JPGExtended.dcm",                   # JPEG extended 12-bit
    "SC_rgb_jpeg_dcmtk.dcm",             # JPEG baseline, colour
    "MR_small_jpeg_ls_lossless.dcm",     # JPEG-LS
    "emri_small_jpeg_2k_lossless.dcm",   # enhanced MR multi-frame, JPEG 2000
    "MR2_J2KI.dcm",                      # JPEG 2000 lossy
    "emri_small_RLE.dcm",                # RLE
    "image_dfl.dcm",                     # deflated
    "US1_UNCR.dcm",                      # US, colour
    "RG1_UNCI.dcm",                      # CR
]
#: pydicom's test files that carry no image
NON_IMAGE_FILES = ["rtplan.dcm", "test-SR.dcm", "waveform_ecg.dcm"]


def phantom_dicoms(out: Path, count: int, kind: str = "mixed", seed: int = 7) -> list[Path]:
    """Write phantom DICOM files with the project's generator (as the README does)."""
    subprocess.run(
        [sys.executable, "-m", "converters.phantoms", "--out", str(out), "--count", str(count),
         "--kind", kind, "--format", "dicom", "--seed", str(seed)],
        check=True, cwd=REPO, capture_output=True,
    )
    return sorted(out.rglob("*.dcm"))


def test_echo_answers_and_wrong_called_ae_is_refused(box):
    assert echoscu(box.port)
    assert not echoscu(box.port, ae_title="SOMEONEELSE")


def test_every_image_gets_a_result_every_non_image_a_reason(box, tmp_path):
    images = [Path(get_testdata_file(n)) for n in IMAGE_FILES]
    images += phantom_dicoms(tmp_path / "phantoms", 6)
    others = [Path(get_testdata_file(n)) for n in NON_IMAGE_FILES]
    sent = storescu(box.port, images + others)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert sent.stdout.count("Received Store Response (Success)") + sent.stderr.count(
        "Received Store Response (Success)") == len(images) + len(others)

    box.wait_idle(len(images) + len(others))
    results = {r["sop_instance_uid"]: r for r in box.cli_json("results")}
    for path in images:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        row = results[uid]
        assert row["status"] == "processed", (path.name, row)
        assert 0.0 <= row["probability"] <= 1.0
        assert isinstance(row["findings"], list)
        assert isinstance(row["warnings"], list)
        assert row["model_id"].startswith("clinibox-demo-lesion@")
    for path in others:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        row = results[uid]
        assert row["status"] == "quarantined", (path.name, row)
        assert "pixel data" in row["reason"].lower() or "not an image" in row["reason"].lower()

    status = box.cli_json("status")
    assert status["received"] == len(images) + len(others)
    assert status["processed"] == len(images)
    assert status["quarantined"] == len(others)
    assert status["queued"] == 0 and status["failed"] == 0


def test_duplicates_are_recognised_and_not_processed_twice(box, tmp_path):
    files = phantom_dicoms(tmp_path / "phantoms", 3)
    assert storescu(box.port, files).returncode == 0
    box.wait_idle(3)
    first = {r["sop_instance_uid"]: r for r in box.cli_json("results")}

    again = storescu(box.port, files)  # a modality re-sending the same study
    assert again.returncode == 0
    assert "Success" in again.stdout + again.stderr
    box.wait_idle(3)
    rows = box.cli_json("results")
    assert len(rows) == 3
    for row in rows:
        assert row["duplicates"] == 1
        assert row["attempts"] == 1  # processed once, not re-run
        assert row["probability"] == first[row["sop_instance_uid"]]["probability"]
    assert box.cli_json("status")["duplicates_ignored"] == 3


def test_calling_ae_allow_list(box_factory, tmp_path):
    box = box_factory(dicom={"allowed_calling_aets": ["CT_ROOM_1"]}, start=False)
    box.start(wait=False)
    wait_for(lambda: echoscu(box.port, calling="CT_ROOM_1"), 120, "echo from allowed AE")
    assert not echoscu(box.port, calling="INTRUDER")
    files = phantom_dicoms(tmp_path / "phantoms", 1)
    refused = storescu(box.port, files, calling="INTRUDER")
    assert refused.returncode != 0
    assert storescu(box.port, files, calling="CT_ROOM_1").returncode == 0
    box.wait_idle(1)


def test_disk_below_floor_answers_out_of_resources(box_factory, tmp_path):
    box = box_factory(storage={"min_free_mb": 9_000_000})
    files = phantom_dicoms(tmp_path / "phantoms", 2)
    result = storescu(box.port, files)
    output = result.stdout + result.stderr
    assert "Out of Resources" in output or "0xa700" in output.lower()
    assert "Received Store Response (Success)" not in output
    assert box.cli_json("status")["received"] == 0
