"""Cases a clinician disagreed with, exported de-identified for the model's makers.

The canary study of tests/unit/firmware_app/test_export_study.py (every identifying
attribute a canary value) gets clinicians' verdicts: "disagree" on one image,
"agree" on another, "unsure" on a third. Exported from the technician's page
and with ``clinibox export-disagreements``, every case must carry its images
and a case.json, no canary byte anywhere, the JSON's Study Instance UID must
be the images' (de-identified) one, every file must open as DICOM (pydicom,
and dcmdump / dciodvfy where installed), the export must be recorded, and the
converter's loader must read the export back with the verdicts' labels.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pydicom
import pytest

from clinibox.table import main
from converters.data import Preprocessing
from converters.feedback import feedback_label, labelled_images, load_feedback_cases
from firmware_app.storage.audit_query import AuditQuery, read_rows
from firmware_app.storage.exports import exports_of_study
from firmware_app.storage.studies import record_feedback
from tests.export_canaries import STUDY_UID
from tests.unit.firmware_app import test_export_study as canary_export
from tests.unit.firmware_app.test_export_study import CanaryBox, _config_file
from tests.viewer_state import CLINICIAN, TECHNICIAN
from tests.web_client import ViewerClient, csrf_token

#: the canary box of test_export_study.py (fixtures: the box built once, a copy, its database)
template, box, conn = canary_export.template, canary_export.box, canary_export.conn

#: (assessment, finding, verdict) given to the canary study's first four images; the demo
#: model finds every canary image outside its validated range, so the test sets the model's
#: output as a judged one
OPINIONS = (("finding", True, "disagree"), ("no_finding", False, "disagree"),
            ("finding", True, "agree"), ("no_finding", False, "unsure"))


def _give_verdicts(conn) -> dict[int, tuple[str, bool]]:
    """Model outputs and a clinician's verdicts on four images; instance id → (verdict,
    finding). The fifth image stays outside the validated range, with no verdict."""
    clinician = conn.execute("SELECT id FROM accounts WHERE role = 'clinician'").fetchone()[0]
    ids = [row[0] for row in conn.execute("SELECT instance_id FROM results ORDER BY 1")]
    assert len(ids) == 5
    given = {}
    for instance_id, (assessment, finding, verdict) in zip(ids, OPINIONS, strict=False):
        conn.execute("UPDATE results SET assessment = ?, finding = ? WHERE instance_id = ?",
                     (assessment, int(finding), instance_id))
        record_feedback(conn, instance_id, -1, verdict, clinician)
        given[int(instance_id)] = (verdict, finding)
    conn.commit()
    return given


def _check_case(box: CanaryBox, blobs: dict[str, bytes], tmp_path: Path) -> dict:
    """One case folder: its images and case.json, no canary, the UIDs matching, valid DICOM."""
    for name, data in blobs.items():
        assert box.study.canaries.found_in(data) == [], name
    cases = sorted({name.split("/")[0] for name in blobs})
    assert cases == ["CASE0001"]
    images = {n: d for n, d in blobs.items() if n.endswith(".dcm")}
    assert sorted(images) == [f"CASE0001/IMAGE{n:04d}.dcm" for n in range(1, 6)]
    assert set(blobs) == {*images, "CASE0001/case.json"}
    record = json.loads(blobs["CASE0001/case.json"])
    sets = [pydicom.dcmread(io.BytesIO(data)) for data in images.values()]
    assert {str(ds.StudyInstanceUID) for ds in sets} == {record["study_instance_uid"]}
    assert record["study_instance_uid"] != STUDY_UID
    assert all(ds.PatientIdentityRemoved == "YES" for ds in sets)
    assert record["verdict"] == "disagree" and record["comment"] is None
    assert {i["file"] for i in record["images"]} <= {n.split("/")[1] for n in images}
    for image in record["images"]:
        assert image["model_id"] and image["model_version"]
        for lesion in image["lesions"]:
            assert set(lesion) <= {"label", "probability", "class_probabilities", "box",
                                   "long_axis_px", "short_axis_px", "area_px2", "long_axis_mm",
                                   "short_axis_mm", "area_mm2", "units", "size_from"}
    _dicom_tools(box, images, tmp_path)
    return record


def _dicom_tools(box: CanaryBox, images: dict[str, bytes], tmp_path: Path) -> None:
    """dcmdump (dcmtk) reads every file and prints no canary; dciodvfy parses it."""
    folder = tmp_path / "tools"
    folder.mkdir(exist_ok=True)
    for name, data in images.items():
        path = folder / name.replace("/", "_")
        path.write_bytes(data)
        if shutil.which("dcmdump"):
            done = subprocess.run(["dcmdump", "+U8", str(path)], capture_output=True,
                                  timeout=60, check=False)
            assert done.returncode == 0, done.stderr[-500:]
            assert box.study.canaries.found_in(done.stdout) == [], name
        if shutil.which("dciodvfy"):
            done = subprocess.run(["dciodvfy", str(path)], capture_output=True, timeout=60,
                                  check=False)
            text = done.stdout + done.stderr
            assert b"read failed" not in text.lower(), text[-500:]  # a file it cannot parse
            assert box.study.canaries.found_in(text) == [], name


def _unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _expected_labels(given: dict[int, tuple[str, bool]]) -> list[int]:
    return sorted(label for verdict, finding in given.values()
                  if (label := feedback_label(verdict, finding)) is not None)


def test_feedback_labels():
    assert feedback_label("disagree", True) == 0
    assert feedback_label("disagree", False) == 1
    assert feedback_label("agree", True) == 1
    assert feedback_label("agree", False) == 0
    assert feedback_label("unsure", True) is None


@pytest.mark.slow
def test_the_technician_page_lists_and_exports_the_disagreements(box, conn, tmp_path):
    from web.app import create_app

    given = _give_verdicts(conn)
    client = ViewerClient(create_app(box.config))
    assert client.login(*TECHNICIAN).status_code == 302
    page = client.get("/feedback")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and f'id="case-{box.study_id}"' in html
    assert 'href="/feedback"' in html  # linked from the nav
    form = html[html.index('id="disagreements-export"'):]
    response = client.post("/feedback/export", token=csrf_token(form),
                           referer="https://localhost/feedback")
    assert response.status_code == 200, response.get_data(as_text=True)[-1500:]
    assert response.mimetype == "application/zip"
    record = _check_case(box, _unzip(response.data), tmp_path)
    verdicts = sorted(i["verdict"] for i in record["images"] if i["verdict"])
    assert verdicts == sorted(v for v, _ in given.values())
    [row] = exports_of_study(conn, STUDY_UID)
    assert (row["account"], row["address"]) == (TECHNICIAN[0], "127.0.0.1")
    assert row["target"].startswith("disagreements")
    [audited] = read_rows(conn, AuditQuery(action="export"))
    assert "disagreements" in audited.detail and audited.account == TECHNICIAN[0]
    # exported now: nothing new to export, unless all are asked for
    again = client.post("/feedback/export", token=csrf_token(form),
                        referer="https://localhost/feedback")
    assert again.status_code == 400
    everything = client.post("/feedback/export", {"all": "1"}, token=csrf_token(form),
                             referer="https://localhost/feedback")
    assert everything.status_code == 200
    _check_case(box, _unzip(everything.data), tmp_path)
    assert len(exports_of_study(conn, STUDY_UID)) == 2
    assert not list(box.config.state_dir.glob(".viewer-disagreements-*"))


def test_a_clinician_cannot_see_or_export_the_disagreements(box, conn):
    from web.app import create_app

    _give_verdicts(conn)
    client = ViewerClient(create_app(box.config))
    assert client.login(*CLINICIAN).status_code == 302
    assert client.get("/feedback").status_code == 403
    assert 'href="/feedback"' not in client.get("/").get_data(as_text=True)
    assert client.post("/feedback/export").status_code == 403
    assert exports_of_study(conn, STUDY_UID) == []


@pytest.mark.slow
def test_the_command_exports_to_a_folder_the_converter_reads_back(box, conn, tmp_path, capsys):
    given = _give_verdicts(conn)
    config = _config_file(box, tmp_path)
    out = tmp_path / "usb"
    assert main(["export-disagreements", "--out", str(out), "--config", str(config)]) == 0
    assert "1 disagreement case(s)" in capsys.readouterr().out
    blobs = {path.relative_to(out).as_posix(): path.read_bytes()
             for path in sorted(out.rglob("*")) if path.is_file()}
    _check_case(box, blobs, tmp_path)
    assert exports_of_study(conn, STUDY_UID)[0]["target"] == f"disagreements to {out}"
    # the converter's loader: labels from the verdicts, every row for validation
    expected = _expected_labels(given)
    assert sorted(label for _path, label in labelled_images(out)) == expected
    prep = Preprocessing("letterbox_grey", (1, 1, 64, 64), 0.0, 1.0, {})
    data = load_feedback_cases(out, prep)
    assert sorted(data.labels.tolist()) == expected
    assert data.x.shape == (len(expected), 1, 64, 64)
    assert set(data.split.tolist()) == {"validation"}
    # a second export: nothing new (refused), all of them to a zip
    assert main(["export-disagreements", "--out", str(tmp_path / "x"),
                 "--config", str(config)]) == 1
    assert "no disagreement case" in capsys.readouterr().err
    zipped = tmp_path / "all.zip"
    assert main(["export-disagreements", "--out", str(zipped), "--zip", "--all", "--json",
                 "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["cases"] == {"CASE0001": box.study_id}
    _check_case(box, _unzip(zipped.read_bytes()), tmp_path)


def test_since_leaves_out_older_verdicts(box, conn, tmp_path, capsys):
    _give_verdicts(conn)
    conn.execute("UPDATE feedback SET at = 1000000000")
    conn.commit()
    config = _config_file(box, tmp_path)
    assert main(["export-disagreements", "--out", str(tmp_path / "o"), "--since", "2024-01-01",
                 "--config", str(config)]) == 1
    assert "no disagreement case" in capsys.readouterr().err


def test_the_converter_option_is_declared(tmp_path):
    from converters.cli import build_parser
    from converters.config import ConvertConfigError, build, preflight

    config = build({"extra_validation": str(tmp_path), "out": str(tmp_path / "pkg")}, {})
    assert config.extra_validation == tmp_path
    preflight(config, "verify")
    args = build_parser().parse_args(["verify", "--extra-validation", str(tmp_path / "nope")])
    assert args.extra_validation == str(tmp_path / "nope")
    missing = build({"out": str(tmp_path / "pkg")}, {"extra_validation": args.extra_validation})
    with pytest.raises(ConvertConfigError, match="extra-validation"):
        preflight(missing, "verify")


def test_the_page_reads_in_chinese(viewer):
    """The technician's list, with a case on it, has no English left in zh-CN."""
    from firmware_app.storage import db
    from tests.unit.web.test_web_i18n import _assert_all_chinese, _chinese_client

    state, app = viewer
    connection = db.connect(state.config.database_path)
    try:
        clinician = connection.execute(
            "SELECT id FROM accounts WHERE role = 'clinician'").fetchone()[0]
        instance = connection.execute(
            "SELECT i.id FROM instances i JOIN studies s ON s.study_key = i.study_instance_uid"
            " WHERE s.id = ? ORDER BY i.id", (state.studies["alert"],)).fetchone()[0]
        record_feedback(connection, instance, -1, "disagree", clinician)
        connection.commit()
    finally:
        connection.close()
    answer = _chinese_client(app, TECHNICIAN).get("/feedback")
    text = _assert_all_chinese("disagreements", answer)
    assert "导出不同意病例" in answer.get_data(as_text=True) and "不同意" in text
    assert f'id="case-{state.studies["alert"]}"' in answer.get_data(as_text=True)
