"""The DICOM outbox without a peer: [pacs] config, rows, supersede, backoff, purge, status."""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path

import highdicom
import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from clinibox_common.settings_loader import ConfigError
from firmware_app.dicom_out.document import DOCUMENT_KINDS, Document
from firmware_app.dicom_out.outbox import document_path, enqueue_documents
from firmware_app.settings import box as cfg
from firmware_app.settings.pacs import PACS_DOCUMENT_KINDS, PacsConfig, PacsDestination
from firmware_app.storage import db
from firmware_app.storage import dicom_outbox as rows
from firmware_app.storage.status import box_status

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"


# -- documents a test can send (simple, valid objects of the real SOP classes) -------------

def _patient_study(ds: Dataset, study_uid: str) -> None:
    ds.PatientName = "OUTBOX^TEST"
    ds.PatientID = "OUTBOX-1"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "clinibox tests"


def _with_file_meta(ds: Dataset) -> Dataset:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def sr_dataset(study_uid: str, uid: str | None = None) -> Dataset:
    """A Comprehensive 3D SR: an empty Imaging Measurement Report container."""
    ds = Dataset()
    _patient_study(ds, study_uid)
    ds.SOPClassUID = COMPREHENSIVE_3D_SR
    ds.SOPInstanceUID = uid or generate_uid()
    ds.Modality = "SR"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 90
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = "20240101", "120500"
    ds.ValueType = "CONTAINER"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator = "126000", "DCM"
    concept.CodeMeaning = "Imaging Measurement Report"
    ds.ConceptNameCodeSequence = [concept]
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.ContentSequence = []
    return _with_file_meta(ds)


def seg_dataset(study_uid: str, uid: str | None = None) -> Dataset:
    """A Segmentation object of one 8 × 8 binary frame."""
    ds = Dataset()
    _patient_study(ds, study_uid)
    ds.SOPClassUID = SEGMENTATION
    ds.SOPInstanceUID = uid or generate_uid()
    ds.Modality = "SEG"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 91
    ds.InstanceNumber = 1
    ds.SegmentationType = "BINARY"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.NumberOfFrames = 1
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit, ds.PixelRepresentation = 0, 0
    ds.PixelData = bytes(8)
    return _with_file_meta(ds)


def key_image_dataset(study_uid: str, uid: str | None = None) -> Dataset:
    """A Secondary Capture key image made with highdicom."""
    pixels = np.zeros((32, 32), np.uint8)
    pixels[8:24, 8:24] = 200
    return highdicom.sc.SCImage(
        pixels, "MONOCHROME2", 8, "PATIENT", study_uid, generate_uid(), 92,
        uid or generate_uid(), 1, "clinibox tests", patient_id="OUTBOX-1",
        patient_name="OUTBOX^TEST", patient_orientation=("L", "P"))


BUILDERS = {"sr": sr_dataset, "seg": seg_dataset, "key_image": key_image_dataset}


def document(kind: str, study_uid: str | None = None, uid: str | None = None) -> Document:
    """A result document of ``kind`` for the study (a new study when None)."""
    study_uid = study_uid or generate_uid()
    return Document(kind, study_uid, BUILDERS[kind](study_uid, uid))


def destination(name: str = "pacs", send: list[str] | None = None, **kwargs) -> PacsDestination:
    """A destination as the config makes it."""
    return PacsDestination(name=name, host="127.0.0.1", port=104,
                           send=list(DOCUMENT_KINDS) if send is None else send, **kwargs)


def states(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """(destination, SOP Instance UID, state) of every row, in id order."""
    return [tuple(r) for r in conn.execute(
        "SELECT destination, sop_instance_uid, state FROM dicom_outbox ORDER BY id")]


# -- config --------------------------------------------------------------------------------

def test_by_default_no_destination_so_nothing_is_sent():
    config = cfg.Config()
    assert config.pacs.destinations == []
    assert config.pacs_calling_ae_title == "CLINIBOX"
    assert PACS_DOCUMENT_KINDS == DOCUMENT_KINDS  # the config's names are the documents'


def test_destinations_are_read_from_pacs_tables(tmp_path):
    path = tmp_path / "box.toml"
    path.write_text(
        '[dicom]\nae_title = "RURAL1"\n'
        '[pacs]\nretry_min_seconds = 2\n'
        '[[pacs.destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "192.0.2.10"\n'
        'port = 104\nsend = ["sr", "seg", "key_image"]\n'
        '[[pacs.destinations]]\nname = "viewer-2"\nae_title = "VIEWER"\nhost = "pacs2.lan"\n'
        'port = 11112\nsend = ["key_image"]\ntls = true\nca_file = "/etc/ca.pem"\n')
    config = cfg.load(path)
    first, second = config.pacs.destinations
    assert (first.name, first.ae_title, first.host, first.port, first.send, first.tls) == (
        "pacs", "PACS", "192.0.2.10", 104, ["sr", "seg", "key_image"], False)
    assert (second.name, second.send, second.tls, second.ca_file) == (
        "viewer-2", ["key_image"], True, "/etc/ca.pem")
    assert config.pacs.retry_min_seconds == 2.0
    assert config.pacs_calling_ae_title == "RURAL1"  # the box's own, unless set


@pytest.mark.parametrize(("tables", "message"), [
    ('name = "a"\nhost = "h"\n[[pacs.destinations]]\nname = "a"\nhost = "h2"\n',
     "[pacs.destinations] name: 'a' is used more than once"),
    ('name = "a"\nhost = "h"\nae_title = "MUCH-TOO-LONG-AE-TITLE"\n',
     "[pacs.destinations 1] ae_title: must be 1-16 printable ASCII"),
    ('name = "a"\nhost = "h"\nae_title = "BACK\\\\SLASH"\n', "[pacs.destinations 1] ae_title"),
    ('name = "a"\nhost = "h"\nport = 0\n',
     "[pacs.destinations 1] port: must be between 1 and 65535, got 0"),
    ('name = "a"\nhost = "h"\nport = 70000\n', "[pacs.destinations 1] port"),
    ('name = "a"\nhost = "h"\nsend = ["sr", "pdf"]\n',
     "[pacs.destinations 1] send: must list one or more of sr, seg, key_image"),
    ('name = "a"\nhost = "h"\nsend = []\n', "[pacs.destinations 1] send"),
    ('name = "a"\nhost = "h"\nsend = "sr"\n', "send: must be a list of strings"),
    ('name = "a"\nhost = "h"\nprot = 104\n',
     "unknown key [pacs.destinations 1] prot (did you mean 'port'?)"),
    ('name = "a"\n', "[pacs.destinations 1]: needs at least name and host"),
    ('name = "a b"\nhost = "h"\n', "[pacs.destinations 1] name: must be 1-32 letters"),
    ('name = "a"\nhost = "h"\ncert_file = "c.pem"\ntls = true\n',
     "cert_file and key_file go together"),
    ('name = "a"\nhost = "h"\nca_file = "ca.pem"\n', "need tls = true"),
])
def test_bad_destinations_are_refused_naming_the_key(tmp_path, tables, message):
    path = tmp_path / "bad.toml"
    path.write_text("[[pacs.destinations]]\n" + tables)
    with pytest.raises(ConfigError) as excinfo:
        cfg.load(path)
    assert message in str(excinfo.value)


@pytest.mark.parametrize(("toml", "message"), [
    ("[pacs]\ndestinations = 3\n", "[pacs] destinations: must be [[pacs.destinations]] tables"),
    ("[pacs]\nretry_min_seconds = 10\nretry_max_seconds = 5\n",
     "[pacs] retry_min_seconds: larger than retry_max_seconds"),
    ('[pacs]\ncalling_ae_title = "TOO-LONG-FOR-AN-AE"\n', "[pacs] calling_ae_title"),
    ("[pacs]\nconnect_timeout = 0\n", "[pacs] connect_timeout"),
])
def test_bad_pacs_settings_are_refused(tmp_path, toml, message):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as excinfo:
        cfg.load(path)
    assert message in str(excinfo.value)


def test_example_config_describes_pacs_and_its_example_destination_loads(tmp_path):
    text = cfg.describe_defaults()
    assert "[pacs]\n" in text and "# [[pacs.destinations]]" in text
    example = tmp_path / "example.toml"
    example.write_text(text)
    assert cfg.load(example).pacs == PacsConfig()  # as shipped: no destination
    # a technician uncomments the example table: it loads as one destination
    destinations, rules = text.split("# Routing rules")
    uncommented = re.sub(r"^# (\[\[pacs|[a-z_]+ = )", r"\1", destinations, flags=re.M)
    example.write_text(uncommented)
    (only,) = cfg.load(example).pacs.destinations
    assert (only.name, only.ae_title, only.port, only.send) == (
        "pacs", "PACS", 104, ["sr", "seg", "key_image"])
    # and the example routing rule after it (the records receivers' example follows it)
    rules, receivers = rules.split("# Clinic information systems")
    example.write_text(text.split("# PACS destinations")[0]
                       + re.sub(r"^# (\[\[routing|[a-z_]+ = )", r"\1", "# Routing rules" + rules,
                                flags=re.M))
    (rule,) = cfg.load(example).routing.rules
    assert (rule.name, rule.modality, rule.body_part) == ("ct-chest", ["CT"], ["CHEST"])
    # then the records receiver's (the live sources' example follows it)
    receivers = receivers.split("# Live sources")[0]
    example.write_text(text.split("# PACS destinations")[0] + re.sub(
        r"^# (\[\[records|[a-z_]+ = )", r"\1", "# Clinic information systems" + receivers,
        flags=re.M))
    (receiver,) = cfg.load(example).records.receivers
    assert (receiver.name, receiver.protocol, receiver.peer()) == (
        "his", "hl7-mllp", "192.0.2.20:2575")


# -- enqueue: written durably, then one row per destination that wants the kind -------------

@pytest.mark.slow
def test_enqueue_writes_each_document_once_and_adds_a_row_per_wanting_destination(conn, tmp_path):
    folder = tmp_path / "dicom_out"
    study = generate_uid()
    docs = [document("sr", study), document("seg", study), document("key_image", study)]
    targets = [destination("pacs"), destination("viewer", send=["key_image"])]
    added = enqueue_documents(conn, folder, docs, targets)
    assert len(added) == 4
    assert not conn.in_transaction  # committed in a transaction of its own
    assert sorted((d, s) for d, _u, s in states(conn)) == [
        ("pacs", "pending")] * 3 + [("viewer", "pending")]
    for doc in docs:
        path = document_path(folder, doc.sop_instance_uid)
        again = dcmread(path)
        assert again.SOPInstanceUID == doc.sop_instance_uid
        assert again.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert path.stat().st_mode & 0o777 == 0o640
    row = conn.execute("SELECT * FROM dicom_outbox WHERE kind = 'sr'").fetchone()
    assert row["study_key"] == study and row["sop_class_uid"] == COMPREHENSIVE_3D_SR
    assert row["attempts"] == 0 and row["next_attempt_at"] <= time.time()

    # the same documents again: no new file written, no new row
    inode = document_path(folder, docs[0].sop_instance_uid).stat().st_ino
    assert enqueue_documents(conn, folder, docs, targets) == []
    assert document_path(folder, docs[0].sop_instance_uid).stat().st_ino == inode
    assert len(states(conn)) == 4
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary left


def test_enqueue_joins_the_callers_transaction(conn, tmp_path):
    doc = document("sr")
    with pytest.raises(RuntimeError), db.transaction(conn):
        enqueue_documents(conn, tmp_path / "out", [doc], [destination()])
        raise RuntimeError("the caller's work failed after enqueueing")
    assert states(conn) == []  # rolled back with the caller's work
    with db.transaction(conn):
        enqueue_documents(conn, tmp_path / "out", [doc], [destination()])
    assert states(conn) == [("pacs", doc.sop_instance_uid, "pending")]


def test_a_document_no_destination_wants_is_neither_written_nor_queued(conn, tmp_path):
    folder = tmp_path / "dicom_out"
    assert enqueue_documents(conn, folder, [document("seg")], [destination(send=["sr"])]) == []
    assert enqueue_documents(conn, folder, [document("sr")], []) == []
    assert states(conn) == [] and not folder.exists()


def test_a_newer_version_supersedes_a_pending_older_one_per_destination(conn, tmp_path):
    folder = tmp_path / "dicom_out"
    study, other_study = generate_uid(), generate_uid()
    targets = [destination("pacs"), destination("archive", send=["sr"])]
    first = document("sr", study)
    other = document("sr", other_study)
    enqueue_documents(conn, folder, [first, other], targets)
    (sent_id,) = [r[0] for r in conn.execute(
        "SELECT id FROM dicom_outbox WHERE destination = 'archive' AND sop_instance_uid = ?",
        (first.sop_instance_uid,))]
    with db.transaction(conn):
        rows.mark_sent(conn, sent_id)  # the archive already has version 1
    second = document("sr", study)
    enqueue_documents(conn, folder, [second], targets)
    by = {(d, u): s for d, u, s in states(conn)}
    assert by[("pacs", first.sop_instance_uid)] == "superseded"
    assert by[("archive", first.sop_instance_uid)] == "sent"  # delivered: stays delivered
    assert by[("pacs", second.sop_instance_uid)] == "pending"
    assert by[("archive", second.sop_instance_uid)] == "pending"
    assert by[("pacs", other.sop_instance_uid)] == "pending"  # another study: untouched
    due = rows.due_documents(conn, destination="pacs")
    assert {d.sop_instance_uid for d in due} == {second.sop_instance_uid, other.sop_instance_uid}


def test_documents_queued_together_never_supersede_each_other(conn, tmp_path):
    study = generate_uid()
    keys = [document("key_image", study), document("key_image", study)]
    enqueue_documents(conn, tmp_path / "out", keys, [destination()])
    assert [s for _d, _u, s in states(conn)] == ["pending", "pending"]


# -- due rows, sent, failed with backoff -----------------------------------------------------

def test_due_rows_oldest_first_and_backoff_doubles_up_to_the_longest(conn, tmp_path):
    folder = tmp_path / "out"
    older = document("sr")
    enqueue_documents(conn, folder, [older], [destination()])
    newer = document("sr")
    enqueue_documents(conn, folder, [newer], [destination()])
    now = time.time() + 1
    due = rows.due_documents(conn, now)
    assert [d.sop_instance_uid for d in due] == [older.sop_instance_uid, newer.sop_instance_uid]
    assert rows.due_destinations(conn, now) == ["pacs"]

    waits = []
    for _ in range(7):
        with db.transaction(conn):
            next_at = rows.mark_failed(conn, due[0].id, "connection refused", 2.0, 30.0, now)
        waits.append(next_at - now)
    assert waits == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    row = conn.execute("SELECT * FROM dicom_outbox WHERE id = ?", (due[0].id,)).fetchone()
    assert (row["attempts"], row["last_error"], row["state"]) == (7, "connection refused",
                                                                  "pending")
    assert [d.id for d in rows.due_documents(conn, now)] == [due[1].id]  # backing off
    assert [d.id for d in rows.due_documents(conn, now + 30)] == [due[0].id, due[1].id]
    newer_due = conn.execute("SELECT next_attempt_at FROM dicom_outbox WHERE id = ?",
                             (due[1].id,)).fetchone()[0]
    assert rows.next_due_at(conn, ["pacs"]) == newer_due  # the earliest waiting row
    assert rows.next_due_at(conn, ["elsewhere"]) is None

    with db.transaction(conn):
        rows.mark_sent(conn, due[1].id, now)
    assert [d.id for d in rows.due_documents(conn, now + 3600)] == [due[0].id]
    sent = conn.execute("SELECT * FROM dicom_outbox WHERE id = ?", (due[1].id,)).fetchone()
    assert (sent["state"], sent["sent_at"], sent["attempts"]) == ("sent", now, 1)
    assert rows.pending_count(conn) == 1 and rows.pending_count(conn, "pacs") == 1


# -- purge -------------------------------------------------------------------------------------

def test_purge_forgets_old_finished_rows_and_their_files_but_never_a_waiting_one(conn, tmp_path):
    folder = tmp_path / "out"
    now = time.time()
    old_sent, shared, waiting, superseded = (document("sr") for _ in range(4))
    enqueue_documents(conn, folder, [old_sent, waiting, superseded], [destination("pacs")])
    enqueue_documents(conn, folder, [shared], [destination("pacs"), destination("archive")])
    newer = document("sr", superseded.study_key)
    enqueue_documents(conn, folder, [newer], [destination("pacs")])  # supersedes one
    ids = {(d, u): i for i, d, u in conn.execute(
        "SELECT id, destination, sop_instance_uid FROM dicom_outbox")}
    day = 86400.0
    with db.transaction(conn):
        rows.mark_sent(conn, ids[("pacs", old_sent.sop_instance_uid)], now - 40 * day)
        rows.mark_sent(conn, ids[("pacs", shared.sop_instance_uid)], now - 40 * day)
        conn.execute("UPDATE dicom_outbox SET created_at = ? WHERE state != 'sent'",
                     (now - 40 * day,))
    orphan_old = folder / "1.2.3.4.dcm"
    orphan_young = folder / "1.2.3.5.dcm"
    for orphan in (orphan_old, orphan_young):
        orphan.write_bytes(b"left by a crash between the file and its rows")
    os.utime(orphan_old, (now - 2 * rows.ORPHAN_GRACE_SECONDS,) * 2)

    with db.transaction(conn):
        purged = rows.purge(conn, folder, 30 * day, now)
    assert purged == 3  # the old sent ones (pacs ×2) and the superseded one
    left = {(d, u): s for d, u, s in states(conn)}
    assert left == {("pacs", waiting.sop_instance_uid): "pending",  # 40 days old, still waits
                    ("archive", shared.sop_instance_uid): "pending",
                    ("pacs", newer.sop_instance_uid): "pending"}
    assert not document_path(folder, old_sent.sop_instance_uid).exists()
    assert not document_path(folder, superseded.sop_instance_uid).exists()
    assert document_path(folder, shared.sop_instance_uid).exists()  # the archive needs it
    assert document_path(folder, waiting.sop_instance_uid).exists()
    assert not orphan_old.exists() and orphan_young.exists()


# -- status: backlog and last error per destination --------------------------------------------

def _failing_box(tmp_path: Path) -> tuple[cfg.Config, sqlite3.Connection]:
    config = cfg.Config()
    config.storage.state_dir = str(tmp_path / "state")
    config.pacs.destinations = [destination("pacs"), destination("spare", send=["sr"])]
    conn = db.open_database(config.database_path)
    enqueue_documents(conn, config.dicom_out_dir, [document("sr"), document("seg")],
                      config.pacs.destinations[:1])
    with db.transaction(conn):
        for (row_id,) in conn.execute("SELECT id FROM dicom_outbox").fetchall():
            rows.mark_failed(conn, row_id, "cannot connect to PACS@127.0.0.1:104: Connection "
                             "refused", 1.0, 10.0)
        db.record_event(conn, "WARNING", rows.event_component("pacs"),
                        "cannot connect to PACS@127.0.0.1:104: Connection refused")
        conn.execute("INSERT INTO dicom_outbox(destination, kind, study_key, sop_class_uid,"
                     " sop_instance_uid, path, state, next_attempt_at, created_at)"
                     " VALUES ('gone', 'sr', 's', ?, '1.2.9', '/nowhere', 'pending', 0, 0)",
                     (COMPREHENSIVE_3D_SR,))
    return config, conn


def test_status_shows_backlog_and_last_error_per_destination(tmp_path, capsys):
    from firmware_app.cli.commands import _print_pacs, status_report

    config, conn = _failing_box(tmp_path)
    figures = {d["name"]: d for d in box_status(conn, config.state_dir,
                                                pacs_destinations=["pacs", "spare"])["pacs"]}
    conn.close()
    assert figures["pacs"]["waiting"] == 2 and figures["pacs"]["attempts"] == 1
    assert "Connection refused" in figures["pacs"]["last_error"]
    assert figures["pacs"]["last_error_at"] is not None and figures["pacs"]["configured"]
    assert figures["spare"] == {**figures["spare"], "waiting": 0, "sent": 0, "last_error": None,
                                "configured": True}
    assert figures["gone"]["waiting"] == 1 and not figures["gone"]["configured"]

    report = status_report(config)
    assert [d["name"] for d in report["pacs"]] == ["gone", "pacs", "spare"]
    _print_pacs(report["pacs"])
    out = capsys.readouterr().out
    assert "pacs: 2 waiting, 0 sent" in out
    assert "last error:" in out and "Connection refused" in out
    assert "gone (not configured: its documents wait): 1 waiting" in out


def test_device_page_shows_backlog_and_last_error(tmp_path):
    from firmware_app.storage.accounts import Accounts
    from tests.viewer_state import TECHNICIAN
    from tests.web_client import ViewerClient
    from web.app import create_app

    config, conn = _failing_box(tmp_path)
    Accounts(conn).add(*TECHNICIAN, "technician")
    conn.close()
    client = ViewerClient(create_app(config))
    assert client.login(*TECHNICIAN).status_code == 302
    page = client.get("/device").get_data(as_text=True)
    section = page[page.index('id="pacs"'):]
    section = section[:section.index("</section>")]
    assert "PACS@127.0.0.1:104" in section and "spare" in section
    assert re.search(r'class="pacs-waiting bad">2 ', section)
    assert "Connection refused" in section
    figures = client.get("/api/status").get_json()
    assert {d["name"]: d["waiting"] for d in figures["pacs"]} == {"gone": 1, "pacs": 2,
                                                                 "spare": 0}


def test_the_service_starts_the_sender_only_with_destinations_and_stops_it(tmp_path):
    from firmware_app.service.appliance import Appliance

    config = cfg.Config()
    config.storage.state_dir = str(tmp_path / "state")
    db.open_database(config.database_path).close()
    idle = Appliance(config)
    idle._start_dicom_sender()
    assert idle.threads == []  # no destination: nothing to send, no thread
    config.pacs.destinations = [destination()]
    appliance = Appliance(config)
    appliance._start_dicom_sender()
    assert [t.name for t in appliance.threads] == ["dicom-sender"]
    assert appliance.threads[0].is_alive()
    started = time.monotonic()
    appliance.stop()
    assert not appliance.threads[0].is_alive() and time.monotonic() - started < 5
