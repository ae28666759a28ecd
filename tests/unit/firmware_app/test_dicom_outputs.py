"""The one table of DICOM outputs and its writer registry.

The table (``contracts/dicom_outputs.py``) is what the settings, the documents, the
registry (``dicom_out/writers.py``) and the database's rule on ``dicom_outbox.kind``
read. The last tests add a throw-away output, an Encapsulated PDF whose writer is
``write_pdf`` below, as one row of the table and nothing else: it is made with the
study's other documents, queued in the outbox and delivered by the production sender
to a Storage SCP (pynetdicom, on this machine).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt

from clinibox_common.contracts import dicom_outputs
from clinibox_common.contracts.dicom_outputs import (
    DICOM_OUTPUTS,
    NEEDS,
    OutputInfo,
    default_outputs,
    output_keys,
    output_table,
)
from clinibox_common.settings_loader import ConfigError
from firmware_app.dicom_out import writers
from firmware_app.dicom_out.document import Document
from firmware_app.dicom_out.outbox import enqueue_documents
from firmware_app.dicom_out.sender import DicomSender
from firmware_app.dicom_out.source import StudyInput
from firmware_app.dicom_out.study_documents import (
    AnalysedInstance,
    ModelIdentity,
    study_documents,
)
from firmware_app.settings import box as cfg
from firmware_app.settings.pacs import PACS_DOCUMENT_KINDS, PacsDestination
from firmware_app.storage import db
from firmware_app.storage import dicom_outbox as rows
from firmware_app.storage.results import ResultStore
from tests.ports import free_port
from tests.viewer_state import ct_phantom, local_box

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
#: the throw-away output: one row, its writer in this file
PDF_ROW = OutputInfo("report_pdf", (ENCAPSULATED_PDF,), __name__, "write_pdf",
                     iod="Encapsulated PDF of the study's findings (a test's)",
                     label="PDF report", order=40, needs=("headers",), default=False)
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def write_pdf(study: StudyInput) -> list[Dataset]:
    """The throw-away output's writer: an Encapsulated PDF in the study of the sources."""
    first = study.sources[0].dataset
    ds = Dataset()
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
                    "AccessionNumber", "ReferringPhysicianName"):
        setattr(ds, keyword, first.get(keyword, ""))
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = study.ids.document("report_pdf")
    ds.SeriesInstanceUID = study.ids.series("report_pdf")
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "DOC", 9904, study.ids.version
    ds.ConversionType, ds.BurnedInAnnotation = "WSD", "YES"
    ds.DocumentTitle = f"Findings of {study.model.model_id}"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = PDF
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return [ds]


def write_wrong_class(study: StudyInput) -> list[Dataset]:
    """A writer that makes a document of a SOP class its row does not name."""
    return [study.sources[0].dataset]  # the source image's own header (a CT)


@pytest.fixture
def with_pdf(monkeypatch) -> OutputInfo:
    """The table with the throw-away output added (one row)."""
    monkeypatch.setitem(DICOM_OUTPUTS, PDF_ROW.key, PDF_ROW)
    return PDF_ROW


# -- the table -----------------------------------------------------------------------------

def test_the_table_holds_the_three_outputs_in_order_each_writer_importable():
    assert output_keys() == ("sr", "seg", "key_image")
    assert default_outputs() == ["sr", "seg", "key_image"]
    for info in DICOM_OUTPUTS.values():
        assert callable(writers.writer(info.key)), info.writer
        assert set(info.needs) <= set(NEEDS)
    assert DICOM_OUTPUTS["seg"].sop_class_uids == ("1.2.840.10008.5.1.4.1.1.66.4",)
    assert "lesion_masks" in DICOM_OUTPUTS["seg"].needs


def test_the_contract_imports_no_writer():
    source = Path(dicom_outputs.__file__).read_text(encoding="utf-8")
    assert "import highdicom" not in source and "dicom_out" not in "".join(
        line for line in source.splitlines() if line.startswith(("import", "from")))


def test_output_table_gives_plain_rows_for_the_reference_page():
    table = output_table()
    assert [row["key"] for row in table] == ["sr", "seg", "key_image"]
    sr = table[0]
    assert sr["writer"] == "firmware_app.dicom_out.sr:write_sr"
    assert sr["sop_class_uids"] == ["1.2.840.10008.5.1.4.1.1.88.34"]
    assert sr["label"] == "structured report (SR)" and sr["default"] is True
    assert len(sr["needs_text"]) == len(sr["needs"])


@pytest.mark.parametrize("key", ["SR", "pdf-report", "", "9seg"])
def test_a_row_with_a_key_sql_could_not_hold_as_a_literal_is_refused(key):
    with pytest.raises(ValueError, match="DICOM output key"):
        dataclasses.replace(PDF_ROW, key=key)


def test_a_row_needing_something_unknown_is_refused():
    with pytest.raises(ValueError, match="needs"):
        dataclasses.replace(PDF_ROW, needs=("a GPU",))


def test_an_unknown_kind_is_refused_by_the_registry_and_the_documents():
    with pytest.raises(ValueError, match="unknown DICOM result kinds"):
        writers.check_kinds(["sr", "report_pdf"])
    with pytest.raises(ValueError, match="unknown DICOM output 'report_pdf'"):
        Document("report_pdf", "1.2.3", Dataset())


# -- the settings follow the table ---------------------------------------------------------

def _destination_toml(tmp_path: Path, send: str) -> Path:
    path = tmp_path / "box.toml"
    path.write_text(f'[[pacs.destinations]]\nname = "pacs"\nhost = "h"\nsend = {send}\n')
    return path


def test_send_is_checked_against_the_table(tmp_path, monkeypatch):
    path = _destination_toml(tmp_path, '["sr", "report_pdf"]')
    with pytest.raises(ConfigError, match="must list one or more of sr, seg, key_image"):
        cfg.load(path)
    monkeypatch.setitem(DICOM_OUTPUTS, PDF_ROW.key, PDF_ROW)
    (destination,) = cfg.load(path).pacs.destinations
    assert destination.send == ["sr", "report_pdf"]
    default = cfg.load(_destination_toml(tmp_path, '["sr"]'))  # loads as before
    assert default.pacs.destinations[0].send == ["sr"]
    assert PacsDestination().send == ["sr", "seg", "key_image"]  # the PDF is off by default
    assert PACS_DOCUMENT_KINDS == ("sr", "seg", "key_image")


# -- the database's rule on dicom_outbox.kind follows the table ----------------------------

def _insert(conn: sqlite3.Connection, kind: str, uid: str) -> None:
    conn.execute("INSERT INTO dicom_outbox(destination, kind, study_key, sop_class_uid,"
                 " sop_instance_uid, path, state, next_attempt_at, created_at)"
                 " VALUES ('pacs', ?, '1.2', '1.2.3', ?, '/x', 'pending', 0, 0)", (kind, uid))


def test_the_kind_rule_refuses_a_kind_the_table_lacks_and_follows_a_new_row(tmp_path,
                                                                              monkeypatch):
    path = tmp_path / "state" / "box.db"
    conn = db.open_database(path)
    _insert(conn, "sr", "1.1")
    with pytest.raises(sqlite3.IntegrityError, match="not a DICOM output"):
        _insert(conn, "report_pdf", "1.2")
    with pytest.raises(sqlite3.IntegrityError, match="not a DICOM output"):
        conn.execute("UPDATE dicom_outbox SET kind = 'report_pdf'")
    conn.close()
    monkeypatch.setitem(DICOM_OUTPUTS, PDF_ROW.key, PDF_ROW)
    conn = db.open_database(path)  # the software with the new row starts
    _insert(conn, "report_pdf", "1.2")
    assert [r[0] for r in conn.execute("SELECT kind FROM dicom_outbox ORDER BY id")] == [
        "sr", "report_pdf"]
    conn.close()


def test_the_kind_rule_writes_only_what_changed_and_keeps_rows_of_a_removed_output(
        tmp_path, monkeypatch):
    conn = db.open_database(tmp_path / "state" / "box.db")
    assert {r[0] for r in conn.execute("SELECT kind FROM dicom_output_kinds")} == {
        "sr", "seg", "key_image"}
    before = conn.total_changes
    rows.kind_rule(conn)  # the table unchanged: nothing written
    assert conn.total_changes == before
    triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'"
                                           " AND tbl_name = 'dicom_outbox'")}
    assert triggers == set(rows.KIND_TRIGGERS)
    _insert(conn, "key_image", "1.1")
    monkeypatch.delitem(DICOM_OUTPUTS, "key_image")  # a software without the key image
    rows.kind_rule(conn)
    assert conn.execute("SELECT kind FROM dicom_outbox").fetchone()[0] == "key_image"
    with pytest.raises(sqlite3.IntegrityError, match="not a DICOM output"):
        _insert(conn, "key_image", "1.2")
    conn.close()


# -- a throw-away output, end to end -------------------------------------------------------

@pytest.fixture(scope="module")
def alert_study(tmp_path_factory, demo_runner) -> tuple[list[AnalysedInstance], ModelIdentity]:
    """A CT phantom with a lesion, landed and analysed by the real worker and demo model."""
    root = tmp_path_factory.mktemp("dicom-outputs")
    box = local_box(cfg.Config(), root / "state", demo_runner)
    phantom = ct_phantom(demo_runner, root / "alert.dcm", lesion=True, alert=True,
                         identity={"PatientName": "OUTPUTS^TEST", "PatientID": "OUT-1"})
    box.lander.land(phantom.read_bytes(), sop_instance_uid=None, source="dicom", origin="TEST")
    assert box.worker.run_once()
    instances = [AnalysedInstance(box.worker.spool.path_for(row["local_id"]), row)
                 for row in ResultStore(box.conn).instances()]
    box.conn.close()
    return instances, ModelIdentity.from_manifest(demo_runner.package.manifest)


@pytest.fixture
def storage_scp() -> Iterator[tuple[int, list[Dataset]]]:
    """A Storage SCP on this machine that keeps every object it is sent; its port and them."""
    received: list[Dataset] = []

    def store(event: evt.Event) -> int:
        received.append(event.dataset)
        return 0x0000

    ae = AE(ae_title="TESTPACS")
    ae.supported_contexts = AllStoragePresentationContexts
    server = ae.start_server(("127.0.0.1", port := free_port()), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, store)])
    try:
        yield port, received
    finally:
        server.shutdown()


def test_a_new_output_is_one_row_and_its_writer_made_queued_and_sent(
        tmp_path, alert_study, with_pdf, storage_scp):
    instances, model = alert_study
    port, received = storage_scp
    documents = study_documents(instances, model, device_id="box-1", version=1,
                                kinds=["report_pdf", "sr", "key_image"])
    assert [d.kind for d in documents] == ["sr", "key_image", "report_pdf"]  # the table's order
    (pdf,) = [d for d in documents if d.kind == "report_pdf"]
    assert pdf.sop_class_uid == ENCAPSULATED_PDF and pdf.study_key == documents[0].study_key

    config = cfg.Config()
    config.storage.state_dir = str(tmp_path / "state")
    config.pacs.destinations = [PacsDestination(
        name="pacs", ae_title="TESTPACS", host="127.0.0.1", port=port,
        send=["sr", "report_pdf"])]
    conn = db.open_database(config.database_path)
    try:
        enqueue_documents(conn, config.dicom_out_dir, documents, config.pacs.destinations)
        queued = [tuple(r) for r in conn.execute(
            "SELECT kind, sop_class_uid FROM dicom_outbox ORDER BY id")]
    finally:
        conn.close()
    assert queued == [("sr", "1.2.840.10008.5.1.4.1.1.88.34"), ("report_pdf", ENCAPSULATED_PDF)]

    sender = DicomSender(config)
    try:
        delivered = sender.send_due()
    finally:
        sender.conn.close()
    assert delivered["pacs"].sent == 2 and delivered["pacs"].failed == 0
    by_class = {str(ds.SOPClassUID): ds for ds in received}
    assert set(by_class) == {"1.2.840.10008.5.1.4.1.1.88.34", ENCAPSULATED_PDF}
    assert bytes(by_class[ENCAPSULATED_PDF].EncapsulatedDocument).startswith(b"%PDF")
    assert str(by_class[ENCAPSULATED_PDF].SOPInstanceUID) == pdf.sop_instance_uid


def test_the_registry_refuses_a_document_of_a_class_its_row_does_not_name(
        alert_study, monkeypatch):
    instances, model = alert_study
    monkeypatch.setitem(DICOM_OUTPUTS, "odd", dataclasses.replace(
        PDF_ROW, key="odd", function="write_wrong_class"))
    with pytest.raises(ValueError, match="the odd writer made a document of SOP class"):
        study_documents(instances, model, device_id="box-1", version=1, kinds=["odd"])


def test_every_real_writer_makes_documents_of_its_rows_classes(alert_study):
    instances, model = alert_study
    documents = study_documents(instances, model, device_id="box-1", version=1,
                                kinds=output_keys())
    assert {d.kind for d in documents} == {"sr", "seg", "key_image"}  # the phantom's lesion
    for document in documents:  # is outlined and a finding
        assert document.sop_class_uid in DICOM_OUTPUTS[document.kind].sop_class_uids
