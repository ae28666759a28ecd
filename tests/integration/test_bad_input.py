"""A corpus of malformed files through DICOM and USB: each is quarantined with its
reason (or processed, for files that are odd but valid), and the box keeps going. A file
whose SOP Instance UID is not a valid UID (``../../etc/passwd``) is refused over DICOM
(nothing stored, as tests/integration/test_ingest_refusals.py) and quarantined from USB
with the reason ``invalid_uid``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydicom import dcmread

from clinibox_common.contracts.reasons import english, from_records
from engine.imaging.dataset_values import valid_uid
from tests.corpus import SENDABLE_BY_STORESCU, build_malformed_corpus
from tests.integration.conftest import echoscu, storescu, wait_for
from tests.integration.test_dicom_ingest import phantom_dicoms

pytestmark = pytest.mark.integration


def _sop_uid(path):
    try:
        return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    except Exception:
        return None


def _invalid_uid(path) -> bool:
    uid = _sop_uid(path)
    return uid is not None and not valid_uid(uid)


def _words(row: dict) -> str:
    """A ``clinibox results --json`` row's reasons (codes) in English, lower-case."""
    return english(from_records(row["reason"])).lower()


def test_malformed_objects_over_dicom_are_quarantined_with_reasons(box, tmp_path):
    expected = build_malformed_corpus(tmp_path / "corpus")
    everything = sorted(n for n in expected if n in SENDABLE_BY_STORESCU)
    refused = {n for n in everything if _invalid_uid(tmp_path / "corpus" / n)}
    assert len(refused) == 2  # the path-like UIDs
    sendable = [n for n in everything if n not in refused]
    assert len(sendable) >= 5, "the corpus must exercise the network path"
    files = [tmp_path / "corpus" / n for n in everything]
    result = storescu(box.port, files)
    acked = (result.stdout + result.stderr).count("Received Store Response (Success)")
    assert acked == len(sendable), result.stdout[-3000:]
    box.wait_idle(len(sendable))
    files = [tmp_path / "corpus" / n for n in sendable]

    # the service is still up and still processes good images afterwards
    assert echoscu(box.port)
    good = phantom_dicoms(tmp_path / "good", 2)
    assert storescu(box.port, good).returncode == 0
    box.wait_idle(len(files) + 2)

    rows = box.cli_json("results")
    by_uid = {r["sop_instance_uid"]: r for r in rows}
    assert not {_sop_uid(tmp_path / "corpus" / n) for n in refused} & set(by_uid)
    for name in sendable:
        row = by_uid[_sop_uid(tmp_path / "corpus" / name)]
        reason = expected[name]
        if reason:
            assert row["status"] == "quarantined", (name, row)
            assert reason in _words(row), (name, row["reason"])
        else:
            assert row["status"] == "processed", (name, row)
    for path in good:
        assert by_uid[_sop_uid(path)]["status"] == "processed"
    status = box.cli_json("status")
    assert status["quarantined"] == sum(1 for n in sendable if expected[n])
    assert status["failed"] == 0
    # the quarantine keeps each object with its reason, named by local id only
    quarantine = box.state / "quarantine"
    assert len(list(quarantine.glob("*.reason.json"))) == status["quarantined"]
    assert all(len(p.stem.split(".")[0]) == 32 for p in quarantine.iterdir())


def test_malformed_files_on_usb_are_quarantined_and_medium_untouched(box, tmp_path):
    staging = tmp_path / "staging"
    expected = build_malformed_corpus(staging)
    medium = box.import_dir / "usbstick"
    shutil.copytree(staging, medium)  # as a stick is plugged in
    before = {p.name: p.read_bytes() for p in medium.iterdir()}

    def every_file_looked_at() -> bool:
        rows = box.db_rows("SELECT COUNT(*) FROM imported_files")
        return rows[0][0] >= len(expected)

    wait_for(every_file_looked_at, 120, "every file on the medium to be taken")
    box.wait_idle(len(expected))
    assert echoscu(box.port)  # still serving

    taken = {Path(r["medium_path"]).name: r["instance_id"] for r in box.db_rows(
        "SELECT medium_path, instance_id FROM imported_files")}
    rows = {r["id"]: r for r in box.cli_json("results")}
    for name, reason in expected.items():
        row = rows[taken[name]]
        if _invalid_uid(staging / name):  # refused as the DICOM port refuses it, by its code
            assert row["status"] == "quarantined", (name, row)
            assert [r["code"] for r in row["reason"]] == ["invalid_uid"], (name, row)
            continue
        if reason:
            assert row["status"] == "quarantined", (name, row)
            assert reason in _words(row), (name, row["reason"])
        else:
            assert row["status"] == "processed", (name, row)
    assert box.cli_json("status")["failed"] == 0
    # the medium is never modified
    assert {p.name: p.read_bytes() for p in medium.iterdir()} == before
