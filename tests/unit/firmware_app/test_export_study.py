"""``clinibox export-study`` and the viewer's "Export de-identified" on a box the worker filled.

A study of five real images full of canaries (tests/export_canaries.py) is
landed and processed by the real Lander and Worker with the demo model; the
export (folder, zip, command line, viewer download) must carry no canary in
any byte, keep one replaced Study Instance UID, let a report's references
resolve, blank ultrasound text, say what retention deleted, and be recorded.
"""

from __future__ import annotations

import io
import os
import pwd
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

from clinibox.table import main
from clinibox_common.contracts.study_reference import study_ref
from firmware_app.dicom_out.export import ExportError, export_study
from firmware_app.settings.box import Config
from firmware_app.storage import db
from firmware_app.storage.accounts import Accounts
from firmware_app.storage.audit_query import AuditQuery, read_rows
from firmware_app.storage.exports import exports_of_study
from firmware_app.telemetry.identity import study_ref as telemetry_study_ref
from tests.export_canaries import STUDY_UID, US_FRAMES_REGION, CanaryStudy, write_canary_study
from tests.unit.firmware_app.test_deidentify import structured_report
from tests.viewer_state import CLINICIAN, TECHNICIAN, local_box
from tests.web_client import ViewerClient, csrf_token


@dataclass
class CanaryBox:
    """A box holding the canary study, processed."""

    config: Config
    study: CanaryStudy
    study_id: int


@pytest.fixture(scope="module")
def template(tmp_path_factory, demo_runner) -> CanaryBox:
    root = tmp_path_factory.mktemp("canary-box")
    study = write_canary_study(root / "sources")
    box = local_box(Config(), root / "state", demo_runner)
    config, conn, lander, worker = box.config, box.conn, box.lander, box.worker
    for path in study.files.values():
        lander.land(path.read_bytes(), sop_instance_uid=None, source="dicom", origin="TEST")
        assert worker.run_once()
    statuses = [row[0] for row in conn.execute("SELECT status FROM instances")]
    assert statuses == ["processed"] * len(study.files)
    study_id = conn.execute("SELECT id FROM studies WHERE study_key = ?",
                            (STUDY_UID,)).fetchone()[0]
    accounts = Accounts(conn)
    accounts.add(*TECHNICIAN, "technician")
    accounts.add(*CLINICIAN, "clinician")
    conn.close()
    return CanaryBox(config, study, int(study_id))


@pytest.fixture
def box(template, tmp_path) -> CanaryBox:
    """A private copy of the canary box (paths in the database rewritten)."""
    from tests.viewer_state import ViewerState, copy_viewer_state

    copied = copy_viewer_state(ViewerState(template.config), tmp_path)
    return CanaryBox(copied.config, template.study, template.study_id)


@pytest.fixture
def conn(box):
    connection = db.connect(box.config.database_path)
    yield connection
    connection.close()


def _no_canary(box: CanaryBox, blobs: dict[str, bytes]) -> None:
    for name, data in blobs.items():
        assert box.study.canaries.found_in(data) == [], name


def _datasets(blobs: dict[str, bytes]) -> dict[str, pydicom.Dataset]:
    return {name: pydicom.dcmread(io.BytesIO(data)) for name, data in blobs.items()}


def _check_export(box: CanaryBox, blobs: dict[str, bytes], images: int) -> None:
    """No canary anywhere; one replaced study UID; the ultrasound text blanked."""
    _no_canary(box, blobs)
    sets = _datasets(blobs)
    assert len([n for n in sets if n.startswith("IMAGE")]) == images
    assert {ds.StudyInstanceUID for ds in sets.values()} != {STUDY_UID}
    assert len({ds.StudyInstanceUID for ds in sets.values()}) == 1
    assert all(ds.PatientIdentityRemoved == "YES" for ds in sets.values())
    cine = [ds for ds in sets.values() if int(ds.get("NumberOfFrames", 1) or 1) == 3
            and ds.Modality == "US"]
    assert len(cine) == 1
    pixels = np.asarray(cine[0].pixel_array)
    x0, y0, x1, y1 = US_FRAMES_REGION
    outside = np.ones(pixels.shape[1:3], dtype=bool)
    outside[y0:y1 + 1, x0:x1 + 1] = False
    assert not pixels[:, outside].any() and pixels[:, ~outside].any()


def _check_report(exported: dict) -> None:
    """The study's SR (as its PACS gets it) is in the export, de-identified, its references
    pointing at the exported images."""
    (report,) = [ds for name, ds in exported.items() if name.startswith("DOCUMENT")]
    assert report.Modality == "SR" and report.PatientIdentityRemoved == "YES"
    images = {ds.SOPInstanceUID for name, ds in exported.items() if name.startswith("IMAGE")}
    evidence = {item.ReferencedSOPInstanceUID
                for study in report.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence
                for item in series.ReferencedSOPSequence}
    assert evidence and evidence <= images


def _folder(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out.iterdir())}


@pytest.mark.slow
def test_export_to_a_folder_carries_no_canary_and_is_recorded(box, conn, tmp_path):
    out = tmp_path / "export"
    report = structured_report(pydicom.dcmread(box.study.files["ct"]))
    summary = export_study(conn, str(box.study_id), out, account="cli:tester",
                           address="local", extra_documents=[report])
    blobs = _folder(out)
    assert sorted(blobs) == sorted(summary.files) == [
        "DOCUMENT0001.dcm", *(f"IMAGE{n:04d}.dcm" for n in range(1, 6))]
    assert summary.left_out == []
    _check_export(box, blobs, images=5)
    sets = _datasets(blobs)
    sr = sets.pop("DOCUMENT0001.dcm")
    exported = {ds.SOPInstanceUID for ds in sets.values()}
    referenced = sr.ContentSequence[1].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    assert referenced in exported  # the report points at an exported image
    assert str(report.StudyInstanceUID) == STUDY_UID  # the caller's report is left as it was
    [row] = exports_of_study(conn, STUDY_UID)
    assert (row["account"], row["address"], row["files"], row["target"]) == (
        "cli:tester", "local", 6, str(out))
    assert row["id"] == summary.export_id


def test_the_study_is_found_by_uid_and_by_the_hospitals_reference(box, conn, tmp_path):
    secret = b"s" * 32
    ref = study_ref(secret, STUDY_UID)
    assert ref == telemetry_study_ref(secret, STUDY_UID)  # the same keyed hash as telemetry's
    by_uid = export_study(conn, STUDY_UID, tmp_path / "a", account="t")
    by_ref = export_study(conn, ref.upper(), tmp_path / "b", account="t", secret=secret)
    assert by_uid.study_id == by_ref.study_id == box.study_id
    with pytest.raises(ExportError, match="no study"):
        export_study(conn, ref, tmp_path / "c", account="t", secret=b"x" * 32)
    with pytest.raises(ExportError, match="no study"):
        export_study(conn, "999", tmp_path / "d", account="t")
    assert len(exports_of_study(conn, STUDY_UID)) == 2


def test_images_deleted_by_retention_are_named_and_a_study_without_images_refused(
        box, conn, tmp_path):
    rows = conn.execute("SELECT id, spool_path FROM instances ORDER BY id").fetchall()
    gone_id, gone_path = rows[0]
    Path(gone_path).unlink()
    conn.execute("UPDATE instances SET image_deleted_at = 1700000000 WHERE id = ?", (gone_id,))
    summary = export_study(conn, str(box.study_id), tmp_path / "out", account="t")
    assert len(summary.files) == 4
    [left] = summary.left_out
    assert left.what == f"instance {gone_id}" and "deleted by retention on 2023-11-1" in left.reason
    conn.execute("UPDATE instances SET image_deleted_at = 1700000000")
    with pytest.raises(ExportError, match="no image left"):
        export_study(conn, str(box.study_id), tmp_path / "none", account="t")
    assert not (tmp_path / "none").exists()
    assert len(exports_of_study(conn, STUDY_UID)) == 1


def test_a_folder_that_is_not_empty_and_a_zip_that_exists_are_refused(box, conn, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_study(conn, str(box.study_id), full, account="t")
    (tmp_path / "taken.zip").write_bytes(b"")
    with pytest.raises(ExportError, match="exists"):
        export_study(conn, str(box.study_id), tmp_path / "taken.zip", as_zip=True, account="t")
    assert (full / "keep.txt").read_text() == "mine" and exports_of_study(conn, STUDY_UID) == []


def test_a_report_naming_the_patient_in_its_text_is_left_out(box, conn, tmp_path):
    report = structured_report(pydicom.dcmread(box.study.files["ct"]))
    report.ContentSequence[0].TextValue = f"Seen for {report.PatientName}"
    summary = export_study(conn, str(box.study_id), tmp_path / "z.zip", as_zip=True,
                           account="t", extra_documents=[report])
    assert [x.what for x in summary.left_out] == ["document 1"]
    assert "survived" in summary.left_out[0].reason and "PatientName" in summary.left_out[0].reason
    with zipfile.ZipFile(tmp_path / "z.zip") as archive:
        assert len(archive.namelist()) == 5
        _check_export(box, {n: archive.read(n) for n in archive.namelist()}, images=5)



def test_the_boxs_own_words_are_no_leak_of_a_name_that_shares_them(box, conn, tmp_path):
    """A patient called An Phantom meets "an" and "phantoms" in the box's own report text:
    the report still goes (its name was emptied), as the demo's PHANTOM^DEMO does."""
    report = structured_report(pydicom.dcmread(box.study.files["ct"]))
    report.PatientName = "An^Phantom"
    report.ContentSequence[0].TextValue = ("DEMONSTRATION ONLY: the model clinibox-demo-lesion"
                                           " was trained on synthetic phantoms; an image.")
    summary = export_study(conn, str(box.study_id), tmp_path / "own", account="t",
                           extra_documents=[report])
    assert summary.left_out == [] and "DOCUMENT0001.dcm" in summary.files
    exported = pydicom.dcmread(tmp_path / "own" / "DOCUMENT0001.dcm")
    assert not str(exported.PatientName) and b"An^Phantom" not in (
        tmp_path / "own" / "DOCUMENT0001.dcm").read_bytes()

def _config_file(box: CanaryBox, folder: Path) -> Path:
    path = folder / "box.toml"
    path.write_text(f'[storage]\nstate_dir = "{box.config.state_dir}"\n')
    return path


@pytest.mark.slow
def test_the_command_exports_records_the_unix_user_and_explains_refusals(
        box, conn, tmp_path, capsys):
    config = _config_file(box, tmp_path)
    out = tmp_path / "cli-export"
    assert main(["export-study", str(box.study_id), "--out", str(out),
                 "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "6 file(s) de-identified" in printed and "left out" not in printed
    _check_export(box, _folder(out), images=5)
    _check_report(_datasets(_folder(out)))
    user = pwd.getpwuid(os.geteuid()).pw_name
    assert exports_of_study(conn, STUDY_UID)[0]["account"] == f"cli:{user}"
    [audited] = read_rows(conn, AuditQuery(action="export"))  # and in the audit trail
    assert (audited.account, audited.address, audited.target) == (
        f"cli:{user}", "local", f"study:{box.study_id}")
    assert audited.detail.endswith(f"6 file(s) to {out}")
    assert main(["export-study", str(box.study_id), "--out", str(out),
                 "--config", str(config)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["export-study", "nope", "--out", str(tmp_path / "x"),
                 "--config", str(config)]) == 2
    assert "no study 'nope'" in capsys.readouterr().err
    zipped = tmp_path / "cli.zip"
    assert main(["export-study", STUDY_UID, "--out", str(zipped), "--zip",
                 "--config", str(config)]) == 0
    with zipfile.ZipFile(zipped) as archive:
        _check_export(box, {n: archive.read(n) for n in archive.namelist()}, images=5)
    assert len(exports_of_study(conn, STUDY_UID)) == 2


@pytest.mark.slow
@pytest.mark.parametrize("account", [TECHNICIAN, CLINICIAN])
def test_the_viewer_button_downloads_the_deidentified_zip(box, conn, account):
    from web.app import create_app

    client = ViewerClient(create_app(box.config))
    assert client.login(*account).status_code == 302
    page = client.get(f"/study/{box.study_id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Export de-identified" in html
    form = html[html.index('id="export-form"'):]
    assert f'action="/study/{box.study_id}/export"' in form[:200]
    response = client.post(f"/study/{box.study_id}/export", token=csrf_token(form),
                           referer=f"https://localhost/study/{box.study_id}")
    assert response.status_code == 200, response.get_data(as_text=True)[-1500:]
    assert response.mimetype == "application/zip"
    assert "attachment" in response.headers["Content-Disposition"]
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        blobs = {n: archive.read(n) for n in archive.namelist()}
    _check_export(box, blobs, images=5)
    _check_report(_datasets(blobs))
    [row] = exports_of_study(conn, STUDY_UID)
    assert (row["account"], row["address"], row["files"]) == (account[0], "127.0.0.1", 6)
    assert not list(box.config.state_dir.glob(".viewer-export-*"))  # nothing left behind


def test_an_anonymous_request_cannot_export(box, conn):
    from web.app import create_app

    client = ViewerClient(create_app(box.config))
    response = client.post(f"/study/{box.study_id}/export")  # a login page's valid token
    assert response.status_code == 401
    assert client.post(f"/study/{box.study_id}/export", token="").status_code == 400  # no CSRF
    assert exports_of_study(conn, STUDY_UID) == []


def _staged(parent: Path) -> list[str]:
    """The files staged so far beside an export's target (folder or zip scratch)."""
    return sorted(p.name for p in parent.glob(".clinibox-export-*/*/*.dcm")) + sorted(
        p.name for p in parent.glob(".clinibox-export-*/*.dcm"))


def test_objects_are_written_one_at_a_time(box, conn, tmp_path, monkeypatch):
    """Each instance is written to the staged folder before the next one is read, and a
    failure half-way leaves no staging, no target and no record."""
    from firmware_app.dicom_out import export as export_module

    read = export_module._source
    seen: list[list[str]] = []

    def watched(instance):
        seen.append(_staged(tmp_path))
        return read(instance)

    monkeypatch.setattr(export_module, "_source", watched)
    export_study(conn, str(box.study_id), tmp_path / "out", account="t")
    assert seen == [[f"IMAGE{n:04d}.dcm" for n in range(1, k)] for k in range(1, 6)]
    seen.clear()
    export_study(conn, str(box.study_id), tmp_path / "out.zip", as_zip=True, account="t")
    assert seen == [[]] * 5  # each object went into the zip and its scratch file away

    def failing(instance):
        if len(_staged(tmp_path)) == 2:
            raise OSError(28, "No space left on device")
        return read(instance)

    monkeypatch.setattr(export_module, "_source", failing)
    with pytest.raises(OSError, match="No space"):
        export_study(conn, str(box.study_id), tmp_path / "full", account="t")
    assert not (tmp_path / "full").exists() and not list(tmp_path.glob(".clinibox-export-*"))
    assert len(exports_of_study(conn, STUDY_UID)) == 2
