"""Imperfect headers never sink a study's DICOM results; a PACS that refuses is not retried
forever.

One study of CT phantom slices, each imperfect in its own way (no Patient Sex;
birth dates 19700000, 00000000, 1970; Pixel Spacing nan; no SOP Instance UID;
a 5,002-character SOP Instance UID; a Series Instance UID ``../../tmp/x``; a
54,000-character Patient Name with control characters), is landed and
analysed by the real Lander and Worker with the demo model (phantom-trained,
not for clinical use), completed by the real ``StudyCompleter`` (documents
made in its maker child) and delivered by the real ``DicomSender`` to Orthanc
(one, shared by the module). What Orthanc holds is read back and checked with
pydicom; ``clinibox export-study`` exports the same study with its SR.

A PACS that answers every C-STORE with 0xA900 is a small pynetdicom Storage
SCP (a real DICOM peer): the document is tried ``[pacs] max_refusals`` times,
then held with the status, shown by ``clinibox status`` and re-queued by
``clinibox dicom-out retry``; a destination that cannot be reached is not
counted as refusing.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Comprehensive3DSRStorage

from clinibox.table import main
from engine.imaging.dataset_values import valid_uid
from firmware_app.dicom_out.outbox import enqueue_documents
from firmware_app.dicom_out.sender import DicomSender
from firmware_app.dicom_out.source_header import MAX_LENGTH
from firmware_app.dicom_out.study_documents import ModelIdentity
from firmware_app.service.appliance import load_runner
from firmware_app.service.study_completion import StudyCompleter
from firmware_app.settings import box as cfg
from firmware_app.settings.pacs import PacsDestination
from firmware_app.storage import db
from firmware_app.storage.study_completion import studies_due
from tests.orthanc_server import Orthanc
from tests.ports import free_port
from tests.unit.firmware_app.test_dicom_outbox import document
from tests.viewer_state import ct_phantom, local_box

pytestmark = pytest.mark.integration
LONG_NAME = ("A\x01B\x07" * 13500)[:54000]
#: each slice's imperfection: (name, attributes set, attributes removed)
CASES = [
    ("long_name", {"PatientName": LONG_NAME}, ()),  # first: the documents copy its patient
    ("no_sex", {}, ("PatientSex",)),
    ("birth_19700000", {"PatientBirthDate": "19700000"}, ()),
    ("birth_00000000", {"PatientBirthDate": "00000000"}, ()),
    ("birth_1970", {"PatientBirthDate": "1970"}, ()),
    ("spacing_nan", {"PixelSpacing": ["nan", "nan"]}, ()),
    ("no_sop_uid", {}, ("SOPInstanceUID",)),
    ("long_uid", {"SOPInstanceUID": "1." + "2" * 5000}, ()),
    ("path_uid", {"SeriesInstanceUID": "../../tmp/x"}, ()),
]
LEFT_OUT = {"no_sop_uid": "SOPInstanceUID:missing", "long_uid": "SOPInstanceUID:invalid-uid",
            "path_uid": "SeriesInstanceUID:invalid-uid"}
CONTROL = {chr(c) for c in range(32)} | {"\x7f"}
TEXT_CONTROLS = set("\t\n\f\r")


@dataclasses.dataclass
class Imperfect:
    """The completed study: its box, its files' instance ids by case, what was queued."""

    config: cfg.Config
    study_uid: str
    ids: dict[str, int]
    good_uids: set[str]
    queued: int
    orthanc: Orthanc
    root: Path


@pytest.fixture(scope="module")
def imperfect(tmp_path_factory) -> Iterator[Imperfect]:
    root = tmp_path_factory.mktemp("imperfect")
    model_config = cfg.Config()
    model_config.runtime.backend = "onnxruntime"
    runner = load_runner(model_config)
    source = ct_phantom(runner, root / "alert.dcm", lesion=True, alert=True,
                        identity={"PatientName": "IMPERFECT^HEADERS", "PatientID": "IMP-1"})
    with Orthanc(root / "orthanc") as orthanc:
        config = cfg.Config()
        config.pacs.retry_min_seconds, config.pacs.retry_max_seconds = 0.05, 0.1
        config.pacs.destinations = [PacsDestination(
            name="pacs", ae_title=orthanc.ae_title, host=orthanc.host, port=orthanc.dicom_port,
            send=["sr", "seg", "key_image"])]
        box = local_box(config, root / "state", runner)
        study_uid, series_uid = generate_uid(), generate_uid()
        ids, good = {}, set()
        for n, (name, values, removed) in enumerate(CASES):
            ds = pydicom.dcmread(source)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.SOPInstanceUID = generate_uid()
            ds.InstanceNumber = n + 1
            x, y, _ = ds.ImagePositionPatient
            ds.ImagePositionPatient = [x, y, n * float(ds.SliceThickness)]
            for keyword, value in values.items():
                setattr(ds, keyword, value)
            for keyword in removed:
                delattr(ds, keyword)
            if "SOPInstanceUID" in ds:
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            if name not in LEFT_OUT:
                good.add(str(ds.SOPInstanceUID))
            path = root / f"{name}.dcm"
            ds.save_as(path, enforce_file_format=False)
            landed = box.lander.land(path.read_bytes(), sop_instance_uid=None, source="dicom",
                                     origin="TEST")
            ids[name] = landed.instance_id
        while box.worker.run_once():
            pass
        statuses = {row[0] for row in box.conn.execute("SELECT status FROM instances")}
        assert statuses == {"processed"}
        completer = StudyCompleter(config, ModelIdentity.from_manifest(
            runner.package.manifest), "box-imperfect")
        try:
            (study,) = studies_due(box.conn, time.time() + 3600, 1.0)
            queued = completer.complete(study)
        finally:
            completer.maker.close()
            completer.conn.close()
        sender = DicomSender(config)
        for _ in range(5):
            sender.send_due(now=time.time() + 60)
        sender.conn.close()
        box.conn.close()
        yield Imperfect(config, study_uid, ids, good, queued, orthanc, root)


def orthanc_datasets(orthanc: Orthanc, study_uid: str) -> list[Dataset]:
    """Every object of the study Orthanc holds, downloaded and read with pydicom."""
    found = orthanc.post("/tools/find", {"Level": "Instance",
                                         "Query": {"StudyInstanceUID": study_uid}})
    out = []
    for instance in found:
        url = f"http://{orthanc.host}:{orthanc.http_port}/instances/{instance}/file"
        with urllib.request.urlopen(url, timeout=10) as answer:
            out.append(pydicom.dcmread(io.BytesIO(answer.read())))
    return out


def check_fit(ds: Dataset, where: str = "") -> None:
    """Every UID valid, every string within its VR's length, no control character."""
    for elem in ds:
        name = f"{where}{elem.keyword or elem.tag}"
        if elem.VR == "SQ":
            for item in elem.value:
                check_fit(item, name + ">")
            continue
        if elem.VR not in MAX_LENGTH and elem.VR not in ("UT", "UC"):
            continue
        values = elem.value if isinstance(elem.value, list | pydicom.multival.MultiValue) else [
            elem.value]
        for value in values:
            text = "" if value is None else str(value)
            if elem.VR == "UI":
                assert not text or UID(text).is_valid, name
            allowed = TEXT_CONTROLS if elem.VR in ("LT", "ST", "UT") else set()
            assert not (set(text) & (CONTROL - allowed)), name
            if elem.VR in MAX_LENGTH:
                for group in text.split("=") if elem.VR == "PN" else [text]:
                    assert len(group) <= MAX_LENGTH[elem.VR], name


def referenced_uids(sr: Dataset) -> set[str]:
    """The SOP Instance UIDs an SR's evidence names."""
    return {str(instance.ReferencedSOPInstanceUID)
            for study in sr.CurrentRequestedProcedureEvidenceSequence
            for series in study.ReferencedSeriesSequence
            for instance in series.ReferencedSOPSequence}


def numbers(sr: Dataset) -> list[float]:
    """Every numeric value of an SR's content tree."""
    out = []
    for item in sr.get("ContentSequence", []):
        for measured in item.get("MeasuredValueSequence", []):
            out.append(float(measured.NumericValue))
        out += numbers(item)
    return out


def events(config: cfg.Config, component: str) -> list[str]:
    conn = db.connect(config.database_path)
    try:
        return [row[0] for row in conn.execute(
            "SELECT message FROM events WHERE component = ? ORDER BY id", (component,))]
    finally:
        conn.close()


def test_the_valid_instances_results_reach_the_pacs_and_the_bad_ones_are_named(imperfect):
    held = orthanc_datasets(imperfect.orthanc, imperfect.study_uid)
    by_modality: dict[str, list[Dataset]] = {}
    for ds in held:
        by_modality.setdefault(str(ds.Modality), []).append(ds)
    assert {"SR", "OT"} <= set(by_modality) and len(held) == imperfect.queued
    (sr,) = by_modality["SR"]
    assert referenced_uids(sr) == imperfect.good_uids  # the bad instances are left out
    assert all(math.isfinite(value) for value in numbers(sr)) and numbers(sr)
    for ds in held:
        check_fit(ds)
        assert ds.PatientSex == "" or ds.PatientSex in ("M", "F", "O")
        assert str(ds.PatientName) == "AB" * 32  # the first image's, cut, no controls
    ids = imperfect.ids
    (left_out,) = [m for m in events(imperfect.config, "study-completion") if "left-out" in m]
    for name, code in LEFT_OUT.items():
        assert f"{ids[name]}={code}" in left_out
    (fixes,) = [m for m in events(imperfect.config, "study-completion") if "header-fixes" in m]
    for name in ("birth_19700000", "birth_00000000", "birth_1970"):
        assert f"{ids[name]}=PatientBirthDate:unparseable-date" in fixes
    assert f"{ids['spacing_nan']}=PixelSpacing:invalid-pixel-spacing" in fixes
    assert f"{ids['long_name']}=PatientName:control-characters-removed," in fixes


def test_export_study_of_the_imperfect_study_carries_its_sr(imperfect, capsys):
    toml = imperfect.root / "box.toml"
    toml.write_text(f'[storage]\nstate_dir = "{imperfect.config.state_dir}"\n')
    out = imperfect.root / "export"
    assert main(["export-study", imperfect.study_uid, "--out", str(out),
                 "--config", str(toml)]) == 0
    printed = capsys.readouterr().out
    assert "note:" not in printed  # nothing left out: an imperfect header is fixed, not dropped
    exported = [pydicom.dcmread(path) for path in out.rglob("*")
                if path.is_file() and path.suffix == ".dcm"]
    modalities = [str(ds.Modality) for ds in exported]
    assert "SR" in modalities and modalities.count("CT") == len(CASES), printed
    for ds in exported:  # every UID valid, the long name and its control characters gone
        for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            assert valid_uid(ds.get(keyword)), (keyword, ds.get(keyword))
        assert "\x01" not in str(ds.get("PatientName", ""))


# -- a PACS that refuses ------------------------------------------------------------------


def device_page(config: cfg.Config, conn, language: str = "en") -> str:
    """The PACS section of the viewer's device page, as a technician sees it in
    ``language``."""
    from firmware_app.storage.accounts import Accounts
    from tests.viewer_state import TECHNICIAN
    from tests.web_client import ViewerClient
    from web.app import create_app

    if not Accounts(conn).all():
        Accounts(conn).add(*TECHNICIAN, "technician")
    client = ViewerClient(create_app(config))
    client.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = language
    assert client.login(*TECHNICIAN).status_code == 302
    page = client.get("/device").get_data(as_text=True)
    section = page[page.index('id="pacs"'):]
    return section[:section.index("</section>")]


@pytest.fixture
def refusing_scp() -> Iterator[int]:
    """A Storage SCP that answers every C-STORE with 0xA900 and a comment; its port."""
    ae = AE(ae_title="REFUSER")
    ae.add_supported_context(Comprehensive3DSRStorage)
    from pynetdicom.sop_class import SecondaryCaptureImageStorage, SegmentationStorage

    ae.add_supported_context(SegmentationStorage)
    ae.add_supported_context(SecondaryCaptureImageStorage)

    def refuse(event: evt.Event) -> Dataset:
        status = Dataset()
        status.Status = 0xA900
        status.ErrorComment = "IOD does not match"
        return status

    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, refuse)])
    try:
        yield port
    finally:
        server.shutdown()


def test_a_refused_document_is_held_after_max_refusals_and_a_technician_requeues_it(
        tmp_path, refusing_scp, capsys, monkeypatch):
    config = cfg.Config()
    config.storage.state_dir = str(tmp_path / "state")
    config.pacs.retry_min_seconds, config.pacs.retry_max_seconds = 0.05, 0.1
    config.pacs.connect_timeout, config.pacs.max_refusals = 5.0, 3
    config.pacs.destinations = [
        PacsDestination(name="refuser", ae_title="REFUSER", host="127.0.0.1",
                        port=refusing_scp, send=["sr"]),
        PacsDestination(name="down", ae_title="DOWN", host="127.0.0.1", port=free_port(),
                        send=["sr"])]
    toml = tmp_path / "box.toml"
    toml.write_text(f'[storage]\nstate_dir = "{config.storage.state_dir}"\n'
                    "[pacs]\nmax_refusals = 3\n"
                    f'[[pacs.destinations]]\nname = "refuser"\nae_title = "REFUSER"\n'
                    f'host = "127.0.0.1"\nport = {refusing_scp}\nsend = ["sr"]\n')
    conn = db.open_database(config.database_path)
    enqueue_documents(conn, config.dicom_out_dir, [document("sr")], config.pacs.destinations)
    sender = DicomSender(config)
    for _ in range(5):  # more passes than refusals: the held document is not tried again
        sender.send_due(now=time.time() + 60)
    sender.conn.close()
    rows = {r["destination"]: dict(r) for r in conn.execute("SELECT * FROM dicom_outbox")}
    refused, down = rows["refuser"], rows["down"]
    assert (refused["state"], refused["refusals"], refused["attempts"]) == ("held", 3, 3)
    assert refused["last_status"] == 0xA900 and "IOD does not match" in refused["last_error"]
    assert (down["state"], down["refusals"], down["attempts"]) == ("pending", 0, 5)

    assert main(["status", "--config", str(toml)]) == 0
    printed = capsys.readouterr().out
    assert "held, no longer retried (refused by the PACS): 1" in printed and "0xA900" in printed
    assert "IOD does not match" in printed
    assert "clinibox dicom-out retry --destination refuser" in printed
    assert main(["dicom-out", "held", "--config", str(toml)]) == 0
    assert "0xA900" in capsys.readouterr().out

    page = device_page(config, conn)
    assert 'class="pacs-held bad">1 result, no longer retried (' in page and "0xA900" in page
    assert "IOD does not match" in page  # the last error, in the PACS's words
    assert "clinibox dicom-out retry --destination refuser" in page
    # in Chinese: the refusal in words from its code and status, not the PACS's English
    held_words = "PACS 拒收了一个结果（状态码 0xA900），已 3 次：该结果已暂停，不再发送"
    page = device_page(config, conn, "zh-CN")
    assert held_words in page and "IOD does not match" not in page, page
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    for command in ("status", "held"):
        argv = ["status"] if command == "status" else ["dicom-out", "held"]
        assert main([*argv, "--config", str(toml)]) == 0
        printed = capsys.readouterr().out
        assert "PACS 拒收了一个结果（状态码 0xA900）" in printed, printed
        assert "IOD does not match" not in printed, printed
    monkeypatch.delenv("LANG")

    assert main(["dicom-out", "retry", "--config", str(toml)]) == 0
    assert "1 held DICOM result queued again" in capsys.readouterr().out
    state = conn.execute("SELECT state, refusals FROM dicom_outbox WHERE destination ="
                         " 'refuser'").fetchone()
    assert tuple(state) == ("pending", 0)
    conn.close()
