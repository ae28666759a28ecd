"""The USB/folder importer on real files, a real DICOMDIR and real SQLite."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet

from clinibox_common.contracts.reasons import Reason, ReasonCode, decode
from firmware_app.ingest.landing import Lander
from firmware_app.ingest.usb import FolderImporter
from firmware_app.storage import db
from firmware_app.storage.spool import Spool

CT = Path(get_testdata_file("CT_small.dcm"))
MR = Path(get_testdata_file("MR_small.dcm"))


@pytest.fixture
def setup(tmp_path):
    database = tmp_path / "state" / "box.db"
    conn = db.connect(database)
    db.initialise(conn)
    spool = Spool(tmp_path / "state" / "spool", tmp_path / "state" / "quarantine")
    lander = Lander(spool, database, 64 * 2**20)
    medium = tmp_path / "import"
    importer = FolderImporter(medium, lander, database, settle_seconds=1.0)
    yield importer, medium, conn
    conn.close()


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()
    }


def _statuses(conn) -> list[tuple[str, str]]:
    return [(r["source"], r["status"]) for r in conn.execute(
        "SELECT source, status FROM instances ORDER BY id")]


def test_file_is_taken_once_after_it_settles(setup):
    importer, medium, conn = setup
    shutil.copy(CT, medium / "IM0001")
    first = importer.scan_once(now=100.0)
    assert (first.accepted, first.waiting) == (0, 1)
    assert importer.scan_once(now=100.5).accepted == 0  # not yet settled
    assert importer.scan_once(now=101.2).accepted == 1
    assert importer.scan_once(now=105.0).accepted == 0  # never taken twice
    assert _statuses(conn) == [("usb", "queued")]
    sop = conn.execute("SELECT sop_instance_uid FROM instances").fetchone()[0]
    assert sop == str(dcmread(CT, stop_before_pixels=True).SOPInstanceUID)


def test_growing_file_waits_until_its_size_is_stable(setup):
    importer, medium, conn = setup
    data = CT.read_bytes()
    target = medium / "growing.dcm"
    target.write_bytes(data[:1000])
    importer.scan_once(now=10.0)
    with open(target, "ab") as handle:  # still being copied
        handle.write(data[1000:5000])
    assert importer.scan_once(now=11.5).accepted == 0
    with open(target, "ab") as handle:
        handle.write(data[5000:])
    assert importer.scan_once(now=12.0).accepted == 0
    assert importer.scan_once(now=13.1).accepted == 1
    stored = Path(conn.execute("SELECT spool_path FROM instances").fetchone()[0])
    assert stored.read_bytes() == data


def test_links_out_of_the_medium_are_not_followed(setup, tmp_path):
    importer, medium, conn = setup
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(CT, outside / "secret.dcm")
    (medium / "escape.dcm").symlink_to(outside / "secret.dcm")
    (medium / "escape_dir").symlink_to(outside, target_is_directory=True)
    shutil.copy(MR, medium / "inside.dcm")
    (medium / "alias.dcm").symlink_to(medium / "inside.dcm")
    importer.scan_once(now=0.0)
    report = importer.scan_once(now=5.0)
    assert report.accepted == 1  # inside.dcm, once, though linked twice
    paths = [r[0] for r in conn.execute("SELECT medium_path FROM imported_files")]
    assert all(str(outside) not in p for p in paths)


def test_dicomdir_media_and_missing_member_reported(setup):
    importer, medium, conn = setup
    fileset = FileSet()
    for source in (CT, MR):
        fileset.add(dcmread(source))
    fileset.write(medium / "cdrom")
    members = [p for p in (medium / "cdrom").rglob("*") if p.is_file() and p.name != "DICOMDIR"]
    assert len(members) == 2
    members[0].unlink()  # a damaged disc: DICOMDIR lists a file that is not there
    before = _tree_digest(medium)
    importer.scan_once(now=0.0)
    report = importer.scan_once(now=5.0)
    assert report.accepted == 1
    assert report.skipped == 1  # the DICOMDIR index itself
    events = [r[0] for r in conn.execute("SELECT message FROM events")]
    assert any("missing on the medium" in m for m in events)
    assert _tree_digest(medium) == before  # the medium is never modified


def test_picture_exports_are_wrapped_with_a_local_id(setup):
    importer, medium, conn = setup
    rng = np.random.default_rng(0)
    pixels = (rng.random((120, 160)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    (medium / "export 1.png").write_bytes(buffer.getvalue())
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buffer, format="JPEG")
    (medium / "photo.jpg").write_bytes(buffer.getvalue())
    (medium / "README.TXT").write_text("viewer software instructions")
    importer.scan_once(now=0.0)
    report = importer.scan_once(now=5.0)
    assert (report.accepted, report.skipped) == (2, 1)
    for row in conn.execute("SELECT spool_path, sop_instance_uid FROM instances"):
        ds = dcmread(row["spool_path"])
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
        assert (ds.Rows, ds.Columns) == (120, 160)
        assert "export" not in str(ds.get("PatientName", "")).lower()


def test_file_named_dicom_but_not_dicom_is_quarantined_with_reason(setup):
    importer, medium, conn = setup
    (medium / "broken.dcm").write_bytes(os.urandom(4000))
    importer.scan_once(now=0.0)
    report = importer.scan_once(now=5.0)
    assert report.quarantined == 1
    row = conn.execute("SELECT status, reason, local_id FROM instances").fetchone()
    assert row["status"] == "quarantined"
    assert decode(row["reason"]) == [Reason(ReasonCode.NOT_AN_IMAGE_FILE)]  # not empty_file
    quarantine = importer.lander.spool.quarantine_root
    assert (quarantine / f"{row['local_id']}.dcm").exists()


def _stored_bytes(root: Path) -> int:
    """What the files under ``root`` really take on disk (sparse holes excluded)."""
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def test_a_sparse_file_is_refused_with_its_reason_and_never_copied(setup, tmp_path):
    importer, medium, conn = setup
    sparse = medium / "IMG0001.dcm"
    with open(sparse, "wb") as handle:  # under this box's 64 MB limit, nothing stored: a hole
        handle.truncate(48 * 2**20)
    assert sparse.stat().st_blocks * 512 < 2**20
    shutil.copy(CT, medium / "IMG0002.dcm")
    importer.scan_once(now=0.0)
    report = importer.scan_once(now=5.0)
    assert report.quarantined == 1 and report.accepted == 1
    rows = conn.execute("SELECT status, reason, size_bytes FROM instances ORDER BY id").fetchall()
    refused = next(r for r in rows if r["status"] == "quarantined")
    [why] = decode(refused["reason"])
    assert why.code == ReasonCode.SPARSE_FILE and why.params["size_mb"] == 48
    assert "not copied" in why.english()
    assert refused["size_bytes"] == 0
    assert sorted(r["status"] for r in rows) == ["quarantined", "queued"]
    assert _stored_bytes(tmp_path / "state") < 16 * 2**20  # the database and one CT slice
    assert importer.scan_once(now=10.0).quarantined == 0  # taken once, not again


def test_a_file_over_the_object_limit_is_refused_without_reading_it(setup, tmp_path):
    importer, medium, conn = setup
    big = medium / "big.dcm"
    with open(big, "wb") as handle:  # over the 64 MB limit of this box (sparse: cheap here)
        handle.truncate(65 * 2**20)
    importer.scan_once(now=0.0)
    assert importer.scan_once(now=5.0).quarantined == 1
    reason = conn.execute("SELECT reason FROM instances").fetchone()["reason"]
    assert decode(reason) == [Reason(ReasonCode.FILE_TOO_LARGE, {"size_mb": 65, "limit_mb": 64})]
    assert decode(reason)[0].english() == "file is 65 MB, over the 64 MB object limit; not copied"
    assert _stored_bytes(tmp_path / "state") < 16 * 2**20


def test_junk_named_like_an_image_keeps_only_an_excerpt(setup):
    importer, medium, conn = setup
    (medium / "junk.dcm").write_bytes(os.urandom(3 * 2**20))
    importer.scan_once(now=0.0)
    assert importer.scan_once(now=5.0).quarantined == 1
    row = conn.execute("SELECT reason, local_id FROM instances").fetchone()
    assert decode(row["reason"]) == [Reason(ReasonCode.NOT_AN_IMAGE_FILE), Reason(
        ReasonCode.EXCERPT_KEPT, {"kept_mb": 1, "size_mb": 3})]
    kept = importer.lander.spool.quarantine_root / f"{row['local_id']}.dcm"
    assert kept.stat().st_size == 2**20
