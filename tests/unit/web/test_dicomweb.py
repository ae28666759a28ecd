"""The box's DICOMweb service (QIDO-RS, WADO-RS) on a box the real worker filled (Flask test
client): who may ask, what a search answers, the files as the box holds them."""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from firmware_app.storage import db, kept_documents
from firmware_app.storage.kept_documents import KeptDocument
from tests.viewer_state import CLINICIAN, TECHNICIAN, XSS_ID, XSS_NAME, copy_viewer_state
from tests.web_client import BASE
from web.app import create_app

BASIC_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def _basic(name: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def box(tmp_path, viewer_template):
    """A copy of the populated box with ``[dicomweb]`` on, and a test client for it."""
    state = copy_viewer_state(viewer_template, tmp_path)
    state.config.dicomweb = dataclasses.replace(state.config.dicomweb, enabled=True)
    app = create_app(state.config)
    return state, app.test_client()


def _get(client, path: str, account=CLINICIAN, **headers):
    return client.get(path, base_url=BASE, headers={**_basic(*account), **headers})


def _parts(response) -> list[bytes]:
    """The DICOM files of a multipart/related answer."""
    kind = response.headers["Content-Type"]
    assert kind.startswith('multipart/related; type="application/dicom"'), kind
    boundary = re.search(r"boundary=(\S+)", kind)[1]
    parts = response.data.split(f"--{boundary}".encode())[1:-1]
    files = []
    for part in parts:
        head, _, body = part.partition(b"\r\n\r\n")
        assert b"Content-Type: application/dicom; transfer-syntax=" in head
        files.append(body[:-2])  # the CRLF before the next boundary
    return files


def _audit(conn) -> list[dict]:
    """The audit trail's rows, oldest first."""
    return [dict(zip(("action", "account", "target", "detail"), row, strict=True))
            for row in conn.execute("SELECT action, account, target, detail FROM audit"
                                    " ORDER BY id")]


def _value(item: dict, tag: str):
    return item[tag].get("Value", [None])[0] if tag in item else None


def test_no_credentials_get_a_basic_challenge_never_the_login_page(box):
    _state, client = box
    answer = client.get("/dicomweb/studies", base_url=BASE)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith('Basic realm="clinibox"')
    assert _get(client, "/dicomweb/studies", ("carl", "wrong")).status_code == 401


def test_a_wrong_password_is_audited_and_throttled_like_the_login_page(box):
    state, client = box
    free = state.config.web.login_free_failures
    for _ in range(free):
        assert _get(client, "/dicomweb/studies", ("carl", "not-it")).status_code == 401
    throttled = _get(client, "/dicomweb/studies", ("carl", "not-it"))
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
    # the right password waits too: the throttle is for the account from that address
    assert _get(client, "/dicomweb/studies").status_code == 429
    conn = db.connect(state.config.database_path)
    actions = [r["action"] for r in _audit(conn)]
    assert actions.count("login_failed") == free and "login_throttled" in actions


def test_a_search_lists_the_studies_with_their_patients_and_counts(box):
    state, client = box
    answer = _get(client, "/dicomweb/studies")
    assert answer.status_code == 200 and answer.mimetype == "application/dicom+json"
    studies = answer.get_json()
    names = {_value(s, "00100010")["Alphabetic"] for s in studies}
    assert "CLEAR^PHANTOM" in names  # as the file has it: the canary cut to its PN length
    assert any(name.startswith(XSS_NAME[:20]) for name in names)
    alert = next(s for s in studies if _value(s, "00100020") == XSS_ID)
    assert alert["00080061"]["Value"] == ["CT"]
    assert _value(alert, "00201206") == 1 and _value(alert, "00201208") == 1
    # the quarantined and the waiting objects are not served
    conn = db.connect(state.config.database_path)
    served = conn.execute("SELECT COUNT(DISTINCT study_instance_uid) FROM instances WHERE"
                          " status = 'processed'").fetchone()[0]
    assert len(studies) == served == 5
    # each study listed is a row of the audit trail: who saw which patient's study listed
    audited = [r for r in _audit(conn) if r["action"] == "dicomweb_search"]
    assert {r["target"] for r in audited} == {f"study:{n}" for n in state.studies.values()}
    assert {r["account"] for r in audited} == {CLINICIAN[0]}


def test_a_search_matches_patient_date_and_modality_and_says_what_it_ignores(box):
    _state, client = box
    found = _get(client, "/dicomweb/studies?PatientID=CLEAR-1").get_json()
    assert [_value(s, "00100020") for s in found] == ["CLEAR-1"]
    assert [_value(s, "00100020") for s in _get(
        client, "/dicomweb/studies?00100010=CLEAR*").get_json()] == ["CLEAR-1"]
    assert _get(client, "/dicomweb/studies?StudyDate=19000101-19000102").get_json() == []
    assert {s["00080061"]["Value"][0] for s in _get(
        client, "/dicomweb/studies?ModalitiesInStudy=US").get_json()} == {"US"}
    assert len(_get(client, "/dicomweb/studies?limit=2").get_json()) == 2
    ignored = _get(client, "/dicomweb/studies?AccessionNumber=A1&includefield=all"
                           "&bad%0D%0AX-Injected:%201=1&PatientID=")
    assert ignored.status_code == 200 and len(ignored.get_json()) == 5  # PatientID= : any
    assert ignored.headers.getlist("Warning") == [
        '299 clinibox "not matched by this box: AccessionNumber, an attribute"']
    assert "X-Injected" not in ignored.headers
    assert _get(client, "/dicomweb/studies?StudyDate=yesterday").status_code == 400
    for count in ("ten", "²", "-1"):
        assert _get(client, f"/dicomweb/studies?limit={count}").status_code == 400


def test_series_instances_and_files_are_those_the_box_holds(box):
    state, client = box
    conn = db.connect(state.config.database_path)
    study, series, path = conn.execute(
        "SELECT study_instance_uid, series_instance_uid, spool_path FROM instances"
        " WHERE id = ?", (state.instances["sweep"],)).fetchone()
    sop = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    [found] = _get(client, f"/dicomweb/studies/{study}/series").get_json()
    assert _value(found, "0020000E") == series and _value(found, "00080060") == "US"
    [instance] = _get(client, f"/dicomweb/studies/{study}/series/{series}/instances").get_json()
    assert _value(instance, "00080018") == sop and _value(instance, "00280008") == 6
    answer = _get(client, f"/dicomweb/studies/{study}/series/{series}/instances/{sop}",
                  Accept='multipart/related; type="application/dicom"; transfer-syntax=*')
    assert answer.status_code == 200
    assert _parts(answer) == [open(path, "rb").read()]  # noqa: SIM115
    assert len(_parts(_get(client, f"/dicomweb/studies/{study}"))) == 1
    [meta] = _get(client, f"/dicomweb/studies/{study}/metadata").get_json()
    assert _value(meta, "00080018") == sop and "7FE00010" not in meta
    assert _value(meta, "00100010")["Alphabetic"] == "SWEEP^PHANTOM"
    retrieved = [r for r in _audit(conn) if r["action"] == "dicomweb_retrieve"]
    assert retrieved and retrieved[0]["target"] == f"study:{state.studies['sweep']}"


def test_a_transfer_syntax_the_file_is_not_in_is_refused_not_transcoded(box):
    state, client = box
    conn = db.connect(state.config.database_path)
    study = conn.execute("SELECT study_instance_uid FROM instances WHERE id = ?",
                         (state.instances["real_ct"],)).fetchone()[0]  # pydicom's CT_small
    asked = 'multipart/related; type="application/dicom"; transfer-syntax={}'
    jpeg, explicit = "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1"
    assert _get(client, f"/dicomweb/studies/{study}", Accept=asked.format(jpeg)).status_code \
        == 406
    assert _get(client, f"/dicomweb/studies/{study}",
                Accept="application/dicom+json").status_code == 406
    [part] = _parts(_get(client, f"/dicomweb/studies/{study}", Accept=asked.format(explicit)))
    assert pydicom.dcmread(io.BytesIO(part)).file_meta.TransferSyntaxUID == explicit


def test_a_kept_result_document_is_served_with_its_study(box, tmp_path):
    state, client = box
    conn = db.connect(state.config.database_path)
    study = conn.execute("SELECT study_instance_uid FROM instances WHERE id = ?",
                         (state.instances["alert"],)).fetchone()[0]
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.SOPClassUID, sr.SOPInstanceUID = BASIC_SR, generate_uid()
    sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID
    sr.file_meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID
    sr.StudyInstanceUID, sr.SeriesInstanceUID, sr.Modality = study, generate_uid(), "SR"
    path = state.config.kept_documents_dir / "sr.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    sr.save_as(path, enforce_file_format=True)
    with db.transaction(conn):
        kept_documents.replace(conn, study, [KeptDocument(
            sr.SOPInstanceUID, study, sr.SeriesInstanceUID, BASIC_SR, "sr", "SR", path)])
    series = _get(client, f"/dicomweb/studies/{study}/series").get_json()
    assert sorted(_value(s, "00080060") for s in series) == ["CT", "SR"]
    [study_match] = _get(client, f"/dicomweb/studies?StudyInstanceUID={study}").get_json()
    assert study_match["00080061"]["Value"] == ["CT", "SR"]
    answer = _get(client, f"/dicomweb/studies/{study}/series/{sr.SeriesInstanceUID}"
                          f"/instances/{sr.SOPInstanceUID}")
    assert _parts(answer) == [path.read_bytes()]


def test_a_technician_may_read_too_and_a_session_is_enough(box):
    from tests.web_client import ViewerClient

    state, client = box
    assert _get(client, "/dicomweb/studies", TECHNICIAN).status_code == 200
    browser = ViewerClient(create_app(state.config))
    assert browser.login(*CLINICIAN).status_code == 302
    assert browser.get("/dicomweb/studies").status_code == 200


def test_paths_that_are_not_uids_are_refused_and_an_unknown_study_is_404(box):
    _state, client = box
    assert _get(client, "/dicomweb/studies/not-a-uid/series").status_code == 400
    assert _get(client, "/dicomweb/studies/1.2.3.4").status_code == 404


def test_the_service_is_not_there_when_it_is_off(viewer):
    _state, app = viewer
    answer = app.test_client().get("/dicomweb/studies", base_url=BASE,
                                   headers=_basic(*CLINICIAN))
    assert answer.status_code == 404


def test_frames_come_as_the_image_holds_them(box):
    state, client = box
    conn = db.connect(state.config.database_path)
    study, series, path = conn.execute(
        "SELECT study_instance_uid, series_instance_uid, spool_path FROM instances"
        " WHERE id = ?", (state.instances["sweep"],)).fetchone()
    image = pydicom.dcmread(path)
    size = image.Rows * image.Columns * image.SamplesPerPixel * image.BitsAllocated // 8
    url = f"/dicomweb/studies/{study}/series/{series}/instances/{image.SOPInstanceUID}/frames"
    answer = _get(client, f"{url}/2,5",
                  Accept='multipart/related; type="application/octet-stream"; '
                         'transfer-syntax=*')
    assert answer.status_code == 200
    kind = answer.headers["Content-Type"]
    assert kind.startswith('multipart/related; type="application/octet-stream"')
    boundary = re.search(r"boundary=(\S+)", kind)[1]
    parts = [part.partition(b"\r\n\r\n")[2][:-2]
             for part in answer.data.split(f"--{boundary}".encode())[1:-1]]
    assert parts == [image.PixelData[size:2 * size], image.PixelData[4 * size:5 * size]]
    assert _get(client, f"{url}/7").status_code == 404  # a sweep of 6 frames
    once = _get(client, f"{url}/{','.join(['1'] * 100)}")  # each frame once, however asked
    assert len(once.data) < 2 * size
    assert _get(client, f"{url}/0").status_code == 400
    assert _get(client, f"{url}/1", Accept="image/jpeg").status_code == 406


def test_a_compressed_images_frames_are_its_encapsulated_frames():
    from pydicom.data import get_testdata_file
    from pydicom.encaps import generate_frames

    from web import dicomweb as model

    path = Path(get_testdata_file("emri_small_jpeg_2k_lossless.dcm"))
    image = pydicom.dcmread(path)
    held = list(generate_frames(image.PixelData, number_of_frames=image.NumberOfFrames))
    assert model.frames(path, [10, 1, 10]) == ([held[9], held[0]], image.file_meta.
                                               TransferSyntaxUID)
    with pytest.raises(model.FramesRefused, match="frame 11 of 10"):
        model.frames(path, [11])


def test_a_login_remembered_from_memory_waits_like_any_other_while_throttled(box):
    state, client = box
    assert _get(client, "/dicomweb/studies").status_code == 200  # remembered now
    for _ in range(state.config.web.login_free_failures):
        assert _get(client, "/dicomweb/studies", ("carl", "guess")).status_code == 401
    assert _get(client, "/dicomweb/studies").status_code == 429


def _patch_series_number(path: str) -> None:
    """The file's SeriesNumber (IS) made ``7,``, as a modality with a bug writes it."""
    data = Path(path).read_bytes()
    start = data.index(b"\x20\x00\x11\x00IS")
    length = int.from_bytes(data[start + 6:start + 8], "little")
    Path(path).write_bytes(data[:start + 8] + b"7,".ljust(length, b" ")
                           + data[start + 8 + length:])


def test_one_bad_object_never_keeps_the_others_from_a_client(box):
    state, client = box
    conn = db.connect(state.config.database_path)
    study, series, path = conn.execute(
        "SELECT study_instance_uid, series_instance_uid, spool_path FROM instances"
        " WHERE id = ?", (state.instances["alert"],)).fetchone()
    _patch_series_number(path)
    [found] = _get(client, f"/dicomweb/studies/{study}/series").get_json()
    assert _value(found, "0020000E") == series and "00200011" not in found
    [meta] = _get(client, f"/dicomweb/studies/{study}/metadata").get_json()
    assert _value(meta, "0020000D") == study and "00200011" not in meta
    broken = conn.execute("SELECT spool_path FROM instances WHERE id = ?",
                          (state.instances["clear"],)).fetchone()[0]
    Path(broken).write_bytes(b"not DICOM at all")
    answer = _get(client, "/dicomweb/studies")
    assert answer.status_code == 200 and len(answer.get_json()) == 4
    assert "could not be read" in answer.headers["Warning"]


def test_files_outside_the_state_folder_and_documents_without_images_are_not_served(
        box, tmp_path):
    state, client = box
    conn = db.connect(state.config.database_path)
    study, path = conn.execute("SELECT study_instance_uid, spool_path FROM instances"
                               " WHERE id = ?", (state.instances["dark"],)).fetchone()
    outside = tmp_path / "elsewhere.dcm"
    shutil.copy(path, outside)
    conn.execute("UPDATE instances SET spool_path = ? WHERE id = ?",
                 (str(outside), state.instances["dark"]))
    assert _get(client, f"/dicomweb/studies/{study}").status_code == 404
    sr = state.config.kept_documents_dir / "sr.dcm"
    sr.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, sr)
    with db.transaction(conn):
        kept_documents.replace(conn, study, [KeptDocument(
            "1.2.3.4.5", study, "1.2.3.4.6", BASIC_SR, "sr", "SR", sr)])
    assert _get(client, f"/dicomweb/studies/{study}").status_code == 404  # no image served


def test_the_audit_page_says_the_dicomweb_rows_in_chinese(box):
    from tests.i18n_text import catalog_sentences, english_sentences, visible_text
    from tests.web_client import ViewerClient

    state, client = box
    conn = db.connect(state.config.database_path)
    study = conn.execute("SELECT study_instance_uid FROM instances WHERE id = ?",
                         (state.instances["sweep"],)).fetchone()[0]
    assert _get(client, "/dicomweb/studies").status_code == 200
    assert _get(client, f"/dicomweb/studies/{study}/metadata").status_code == 200
    assert _get(client, "/dicomweb/studies", ("nobody", "at-all")).status_code == 401
    technician = ViewerClient(create_app(state.config))
    technician.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN,zh;q=0.9"
    assert technician.login(*TECHNICIAN).status_code == 302
    page = technician.get("/audit")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for cell in ('<td class="action">DICOMweb 检索</td>', '<td class="action">DICOMweb 获取</td>',
                 '<td class="detail">1 份头信息</td>', '<td class="detail">账号名不存在</td>'):
        assert cell in html, cell
    text = visible_text(html)
    assert catalog_sentences(text) == [] and english_sentences(text) == []
