"""dcmtk's storescu/echoscu against a running `clinibox serve`: every image gets a
result, every non-image a quarantine reason, duplicates are not processed twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from clinibox_common.contracts.reasons import Reason, ReasonCode, decode
from tests.integration.conftest import REPO, echoscu, send_as_modality, storescu, wait_for

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
        [sys.executable, "-m", "phantoms", "--out", str(out), "--count", str(count),
         "--kind", kind, "--format", "dicom", "--seed", str(seed)],
        check=True, cwd=REPO, capture_output=True,
    )
    return sorted(out.rglob("*.dcm"))


@pytest.fixture
def box(box_factory, receiver):
    """A running clinibox with default settings, for each DICOM receiver."""
    return box_factory(dicom={"receiver": receiver})


def test_echo_answers_and_wrong_called_ae_is_refused(box):
    assert echoscu(box.port)
    assert not echoscu(box.port, ae_title="SOMEONEELSE")


def test_every_image_gets_a_result_every_non_image_a_reason(box, tmp_path):
    images = [Path(get_testdata_file(n)) for n in IMAGE_FILES]
    images += phantom_dicoms(tmp_path / "phantoms", 6)
    others = [Path(get_testdata_file(n)) for n in NON_IMAGE_FILES]
    acked, output = send_as_modality(box.port, images + others)
    assert acked == len(images) + len(others), output[-3000:]

    # pydicom's variants of one image share a SOP Instance UID: one instance each
    uid_of = {p: str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in images + others}
    modality_of = {p: str(dcmread(p, stop_before_pixels=True).get("Modality", ""))
                   for p in images}
    box.wait_idle(len(set(uid_of.values())))
    results = {r["sop_instance_uid"]: r for r in box.cli_json("results")}
    accepted = box.cli_json("status")
    model_modalities = {"CT", "US", "MR", "CR", "DX", "MG", "OT"}
    for path in images:
        row = results[uid_of[path]]
        if modality_of[path] in model_modalities:
            assert row["status"] == "processed", (path.name, row)
            judged = row["assessment"] in ("finding", "no_finding")
            # a probability only where the model gave a result; its answer kept otherwise
            shown, kept = ((row["probability"], row["probability_not_shown"]) if judged
                           else (row["probability_not_shown"], row["probability"]))
            assert 0.0 <= shown <= 1.0 and kept is None, (path.name, row)
            assert isinstance(row["findings"], list)
            assert isinstance(row["warnings"], list)
            assert row["model_id"].startswith("clinibox-demo-lesion@")
        else:  # good input no model here is meant for (NM): not analysed, not quarantined
            assert row["status"] == "not_analysed", (path.name, row)
            [reason] = row["reason"]
            assert reason["code"] == "modality_not_accepted"
            assert reason["params"]["modality"] == modality_of[path]
    for path in others:
        row = results[uid_of[path]]
        assert row["status"] == "quarantined", (path.name, row)
        [reason] = row["reason"]
        assert reason["code"] == "decode_failed"
        assert "no pixel data" in reason["params"]["detail"].lower()

    assert accepted["received"] == len(set(uid_of.values()))
    assert accepted["not_analysed"] == sum(
        1 for u in set(uid_of.values()) if results[u]["status"] == "not_analysed") > 0
    # the variants (same SOP Instance UID, another transfer syntax: different bytes) are
    # conflicting duplicates, kept aside with an event; none is silently dropped
    conflicts = sorted((box.state / "quarantine" / "conflicts").glob("*.dcm"))
    assert accepted["duplicates_ignored"] + len(conflicts) == len(uid_of) - len(
        set(uid_of.values()))
    assert len(conflicts) >= 1
    # what a modality sent is never readable by other users, whichever receiver wrote it
    # (0640: the service's user, and its group for the viewer)
    spooled = [p for p in (box.state / "spool").rglob("*.dcm") if p.parent.name != "tmp"]
    assert spooled and all(p.stat().st_mode & 0o777 == 0o640 for p in spooled)
    notes = [r[0] for r in box.db_rows("SELECT message FROM events WHERE component = 'ingest'")]
    assert len([n for n in notes if n.startswith("conflicting duplicate")]) == len(conflicts)
    assert not any(uid in n for n in notes for uid in uid_of.values())
    assert accepted["queued"] == 0 and accepted["failed"] == 0
    assert accepted["processed"] == len({uid_of[p] for p in images
                                        if modality_of[p] in model_modalities})


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


def test_a_different_object_with_a_known_uid_is_kept_aside_and_told(box, tmp_path):
    first = phantom_dicoms(tmp_path / "phantoms", 1)[0]
    assert storescu(box.port, [first]).returncode == 0
    box.wait_idle(1)
    changed = dcmread(first)
    changed.PixelData = bytes(len(changed.PixelData))  # same SOP Instance UID, other pixels
    other = tmp_path / "other.dcm"
    changed.save_as(other)
    sent = storescu(box.port, [other])
    assert sent.returncode == 0 and "Success" in sent.stdout + sent.stderr  # it is stored
    kept = sorted((box.state / "quarantine" / "conflicts").glob("*.dcm"))
    assert len(kept) == 1 and dcmread(kept[0]).PixelData == changed.PixelData
    note = json.loads(kept[0].with_suffix(".reason.json").read_text())
    assert decode(note["reason"]) == [Reason(ReasonCode.CONFLICTING_DUPLICATE,
                                             {"instance": 1, "origin": "MODALITY"})]
    events = box.db_rows("SELECT level, message FROM events WHERE component = 'ingest'")
    assert [tuple(e) for e in events] == [
        ("WARNING", f"conflicting duplicate of instance 1 kept aside as {kept[0].stem} "
                    "(from MODALITY)")]
    assert storescu(box.port, [first]).returncode == 0  # the identical resend: a duplicate
    assert len(list((box.state / "quarantine" / "conflicts").glob("*.dcm"))) == 1
    assert box.cli_json("status")["duplicates_ignored"] == 1
    assert len(box.cli_json("results")) == 1


def test_calling_ae_allow_list(box_factory, tmp_path, receiver):
    box = box_factory(dicom={"allowed_calling_aets": ["CT_ROOM_1"], "receiver": receiver},
                      start=False)
    box.start(wait=False)
    wait_for(lambda: echoscu(box.port, calling="CT_ROOM_1"), 120, "echo from allowed AE")
    assert not echoscu(box.port, calling="INTRUDER")
    files = phantom_dicoms(tmp_path / "phantoms", 1)
    refused = storescu(box.port, files, calling="INTRUDER")
    assert refused.returncode != 0
    assert storescu(box.port, files, calling="CT_ROOM_1").returncode == 0
    box.wait_idle(1)


def test_disk_below_floor_answers_out_of_resources(box_factory, tmp_path, receiver):
    box = box_factory(storage={"min_free_mb": 9_000_000}, dicom={"receiver": receiver})
    files = phantom_dicoms(tmp_path / "phantoms", 2)
    result = storescu(box.port, files)
    output = result.stdout + result.stderr
    assert output.count("Refused: OutOfResources") == 2
    assert "Received Store Response (Success)" not in output
    assert box.cli_json("status")["received"] == 0
