"""The patient's earlier studies: the ``[priors]`` settings, the lookup's record, which of the
PACS's answers are taken, what a PACS may slip in, how long a study waits, and each lesion
beside its earlier self in English and Chinese.

Real SQLite and the box's own ``ResultStore``; the PACS's answers are pydicom data sets (the
whole path against Orthanc is ``tests/integration/test_priors.py``)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from sqlite3 import Connection
from types import SimpleNamespace

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from clinibox_common import i18n
from clinibox_common.settings_loader import ConfigError
from engine.inference.aggregate import InstanceFindings
from engine.inference.lesions import lesion_from_box
from engine.inference.postprocess import Box
from firmware_app.ingest.landing import Lander
from firmware_app.ingest.priors import (
    NOT_ASKED_FOR,
    CurrentStudy,
    EarlierStudy,
    PriorsFetcher,
    _Retrieval,
    earlier_studies,
    pick_series,
)
from firmware_app.service.study_completion import StudyCompleter
from firmware_app.settings import box as box_settings
from firmware_app.settings.box import Config
from firmware_app.storage import db, growth, priors
from firmware_app.storage.priors import PriorLookupState
from firmware_app.storage.results import ResultStore
from firmware_app.storage.spool import make_spool
from firmware_app.storage.study_completion import DueStudy
from firmware_app.words import growth_words
from phantoms.dicom import ct_dataset, default_identity, write_dicom
from phantoms.images import generate

PATIENT = "PRIOR-UNIT-1"
CURRENT = CurrentStudy("1.2.3.100", PATIENT, "20261128", "CT", "CHEST", "PHANTOM^DEMO")


def answer(**values: str) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_priors_enabled_without_a_host_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"\[priors\] host"):
        box_settings.from_dict({"priors": {"enabled": True}})
    config = box_settings.from_dict({"priors": {"enabled": True, "host": "pacs.lan"}})
    assert (config.priors.max_studies, config.priors.port) == (1, 104)
    assert "[priors]" in box_settings.describe_defaults()


def test_only_the_patients_earlier_studies_of_the_modality_are_taken_latest_first():
    answers = [
        answer(StudyInstanceUID="1.1", StudyDate="20250101", ModalitiesInStudy="CT",
               PatientID=PATIENT),
        answer(StudyInstanceUID="1.2", StudyDate="20260302", ModalitiesInStudy=["CT", "SR"],
               PatientID=PATIENT),
        answer(StudyInstanceUID="1.3", StudyDate="20260401", ModalitiesInStudy="US",
               PatientID=PATIENT),  # another modality
        answer(StudyInstanceUID="1.4", StudyDate="20261128", ModalitiesInStudy="CT",
               PatientID=PATIENT),  # the same day: not earlier
        answer(StudyInstanceUID="1.5", StudyDate="20260101", ModalitiesInStudy="CT",
               PatientID="SOMEONE-ELSE"),  # a PACS answering past the question
        answer(StudyInstanceUID=CURRENT.study_key, StudyDate="20240101",
               ModalitiesInStudy="CT", PatientID=PATIENT),  # the study itself
    ]
    assert [s.study_key for s in earlier_studies(answers, CURRENT)] == ["1.2", "1.1"]


def test_series_of_another_body_part_or_past_the_bound_are_not_fetched():
    earlier = EarlierStudy("1.2", "20260302")
    pick_series([
        answer(SeriesInstanceUID="2.1", Modality="CT", BodyPartExamined="CHEST",
               NumberOfSeriesRelatedInstances="40"),
        answer(SeriesInstanceUID="2.2", Modality="CT", BodyPartExamined="HEAD",
               NumberOfSeriesRelatedInstances="5"),
        answer(SeriesInstanceUID="2.3", Modality="SR", NumberOfSeriesRelatedInstances="1"),
        answer(SeriesInstanceUID="2.4", Modality="CT", BodyPartExamined="",
               NumberOfSeriesRelatedInstances="70"),  # past the room left
        answer(SeriesInstanceUID="2.5", Modality="CT", NumberOfSeriesRelatedInstances="10"),
    ], CURRENT, earlier, room=60)
    assert (earlier.series, earlier.images) == (["2.1", "2.5"], 50)


@pytest.fixture
def lander(tmp_path: Path) -> Lander:
    config = Config()
    config.storage.state_dir = str(tmp_path / "state")
    conn = db.open_database(config.database_path)
    conn.close()
    return Lander(make_spool(config), config.database_path, 2**26)


def _received(lander: Lander, **identity: str) -> SimpleNamespace:
    """A data set as pynetdicom hands a C-STORE sub-operation over: written in the spool's
    ``tmp`` folder, with its command."""
    values = default_identity(**identity)
    ds = ct_dataset(generate("ct", np.random.default_rng(1), size=64), values)
    path = write_dicom(ds, lander.spool.tmp / f"rx-{values['SOPInstanceUID']}.dcm")
    request = SimpleNamespace(AffectedSOPInstanceUID=values["SOPInstanceUID"],
                              AffectedSOPClassUID=ds.SOPClassUID)
    return SimpleNamespace(dataset_path=str(path), request=request)


def _retrieval(lander: Lander, studies: set[str], max_images: int = 2,
               deadline: float = 1e12) -> _Retrieval:
    retrieval = _Retrieval(lander, CURRENT, max_images, 2**26, "C-GET:PACS", deadline)
    retrieval.studies = studies
    return retrieval


def test_a_pacs_cannot_slip_in_another_study_another_patient_or_more_than_the_bounds(lander):
    asked = generate_uid()
    retrieval = _retrieval(lander, {asked})
    other_study = _received(lander, StudyInstanceUID=generate_uid(), PatientID=PATIENT)
    other_patient = _received(lander, StudyInstanceUID=asked, PatientID="CANARY-OTHER")
    other_name = _received(lander, StudyInstanceUID=asked, PatientID=PATIENT,
                           PatientName="CANARY^OTHER")
    for sent in (other_study, other_patient, other_name):
        assert retrieval.handle_store(sent) == NOT_ASKED_FOR
        assert not Path(sent.dataset_path).exists()
    for _ in range(2):
        assert retrieval.handle_store(
            _received(lander, StudyInstanceUID=asked, PatientID=PATIENT)) == 0x0000
    one_more = _received(lander, StudyInstanceUID=asked, PatientID=PATIENT)
    assert retrieval.handle_store(one_more) != 0x0000
    assert len(retrieval.instance_ids) == 2 and retrieval.stopped == "too_large"
    assert retrieval.refused == {"not_asked_for": 3, "too_large": 1}
    conn = db.connect(lander.database)
    assert conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 2
    late = _retrieval(lander, {asked}, deadline=time.monotonic() - 1)
    assert late.handle_store(_received(lander, StudyInstanceUID=asked,
                                       PatientID=PATIENT)) != 0x0000
    assert late.stopped == "timeout" and not late.instance_ids


def test_a_fetched_study_stops_being_an_earlier_one_once_a_modality_sends_it(lander):
    conn = db.connect(lander.database)
    with db.transaction(conn):
        priors.note_prior(conn, "1.2.3.50", CURRENT.study_key, "20260302", 1.0)
    assert priors.fetched_for(conn, "1.2.3.50") == CURRENT.study_key
    retrieval = _retrieval(lander, {"1.2.3.50"})
    assert retrieval.handle_store(_received(lander, StudyInstanceUID="1.2.3.50",
                                            PatientID=PATIENT)) == 0x0000
    conn.execute("UPDATE instances SET study_instance_uid = '1.2.3.50'")  # as analysed
    assert priors.fetched_for(conn, "1.2.3.50") == CURRENT.study_key
    from_modality = _received(lander, StudyInstanceUID="1.2.3.50", PatientID=PATIENT)
    lander.land_file(Path(from_modality.dataset_path),
                     sop_instance_uid=from_modality.request.AffectedSOPInstanceUID,
                     source="dicom", origin="CT_SCANNER")
    conn.execute("UPDATE instances SET study_instance_uid = '1.2.3.50'")
    assert priors.fetched_for(conn, "1.2.3.50") is None  # its results go as any study's


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_pacs_that_is_down_ends_the_lookup_failed_with_its_reason(lander):
    config = Config()
    config.storage.state_dir = str(lander.database.parent)
    config.priors.enabled, config.priors.host = True, "127.0.0.1"
    config.priors.port, config.priors.timeout = _closed_port(), 2.0
    conn = db.connect(config.database_path)
    with db.transaction(conn):
        priors.ask(conn, CURRENT.study_key, time.time())
        priors.ask(conn, "1.2.3.200", time.time())
    fetcher = PriorsFetcher(config, lander, read_current=lambda _c, key: (
        CURRENT if key == CURRENT.study_key else CurrentStudy(key, "", "", "CT", "")))
    assert fetcher.fetch_once() == 2
    first, second = (priors.lookup(conn, k) for k in (CURRENT.study_key, "1.2.3.200"))
    assert (first.state, first.reason) == (PriorLookupState.FAILED, "unreachable")
    assert (second.state, second.reason) == (PriorLookupState.FAILED, "no_patient_id")
    assert priors.asking(conn) == []
    with i18n.use_locale("zh-CN"):
        line = growth_words.lookup_line(first)
    assert "PACS" in line and "[priors]" in line and "unreachable" not in line


def _analysed(conn: Connection, study: str, date: str, boxes: list[Box],
              spacing: float) -> int:
    """One CT image of ``study`` (patient PATIENT, 256 × 256) analysed with ``boxes``."""
    now = time.time()
    instance = conn.execute(
        "INSERT INTO instances(local_id, source, spool_path, size_bytes, status, received_at,"
        " updated_at) VALUES (?, 'dicom', 'p', 1, 'processing', ?, ?)",
        (f"l-{study}-{now}", now, now)).lastrowid
    ResultStore(conn).complete(
        instance_id=instance,
        identity={"study_instance_uid": study, "modality": "CT", "patient_id": PATIENT,
                  "patient_name": "PRIOR^UNIT", "study_date": date},
        findings=InstanceFindings(
            probability=0.9, finding=bool(boxes), alert=bool(boxes), boxes=boxes,
            heatmap=None, key_frame=0, assessment="finding" if boxes else "no_finding",
            lesions=[lesion_from_box(b, 0, (spacing, spacing)) for b in boxes]),
        warnings=[], model_id="demo@1", backend="onnxruntime/fp32", frames_inferred=1,
        timings={"total": 1.0}, image_size=(256, 256))
    return conn.execute("SELECT id FROM studies WHERE study_key = ?", (study,)).fetchone()[0]


def test_each_lesion_is_beside_its_earlier_self_and_a_new_one_is_said_new(conn):
    _analysed(conn, "1.2.3.1", "20260302", [Box(100, 100, 130, 130, 0.8, "lesion")], 0.4)
    today = _analysed(conn, "1.2.3.2", "20261128", [
        Box(104, 98, 141, 135, 0.9, "lesion"),   # the same lesion, grown
        Box(10, 200, 30, 220, 0.7, "lesion"),    # nothing there before
    ], 0.4)
    found = growth.study_growth(conn, today)
    assert found is not None and found.earlier_date == "20260302"
    grown, new = found.lesions
    assert (grown.seen_before, new.seen_before) == (True, False)
    assert grown.was_mm == pytest.approx(12.0) and grown.size_mm == pytest.approx(14.8)
    assert grown.percent == pytest.approx((14.8 - 12.0) / 12.0 * 100, abs=0.1)
    with i18n.use_locale("en"):
        lines = growth_words.growth_lines(found)
    assert lines[0].endswith("14.8 mm, was 12.0 mm on 2026-03-02 (+23 %)"), lines
    assert "not seen on the earlier study" in lines[1]
    with i18n.use_locale("zh-CN"):
        chinese = growth_words.growth_lines(found)
    assert "14.8 mm" in chinese[0] and "12.0 mm" in chinese[0] and "+23%" in chinese[0]
    assert all(not any(word in line for word in ("was", "earlier", "Area")) for line in chinese)
    assert json.loads(json.dumps(found.to_dict()))["lesions"][0]["percent"] == grown.percent


def test_lesions_far_apart_or_of_another_kind_are_not_taken_for_the_same(conn):
    earlier = [{"label": "lesion", "box": [0, 0, 20, 20]},
               {"label": "cyst", "box": [100, 100, 120, 120]}]
    current = [{"label": "lesion", "box": [200, 200, 220, 220]},
               {"label": "lesion", "box": [100, 100, 120, 120]}]
    assert growth.match(current, (256, 256), earlier, (256, 256)) == {}


def _completer(tmp_path: Path, wait_seconds: float) -> StudyCompleter:
    config = Config()
    config.storage.state_dir = str(tmp_path / "box")
    config.priors.enabled, config.priors.host = True, "pacs.lan"
    config.priors.wait_seconds = wait_seconds
    db.open_database(config.database_path).close()
    return StudyCompleter(config, {}, "box-1")


def test_a_study_with_a_finding_waits_for_its_earlier_studies_within_the_bound(tmp_path):
    completer = _completer(tmp_path, wait_seconds=60.0)
    conn = completer.conn
    study_id = _analysed(conn, "1.2.3.9", "20261128", [Box(1, 1, 9, 9, 0.9, "lesion")], 1)
    clear_id = _analysed(conn, "1.2.3.8", "20261128", [], 1)
    study = DueStudy(study_id, "1.2.3.9", 0.0, 0, 0.0)
    asked = []
    completer.on_priors_asked = lambda: asked.append(True)
    now = time.time()
    assert completer.waits_for_priors(study, now) and asked == [True]
    assert not completer.waits_for_priors(DueStudy(clear_id, "1.2.3.8", 0.0, 0, 0.0), now)
    assert completer.waits_for_priors(study, now + 30)  # still asking
    assert not completer.waits_for_priors(study, now + 61)  # the bound: it goes without
    with db.transaction(conn):
        priors.end(conn, "1.2.3.9", PriorLookupState.NONE, now + 1)
    assert not completer.waits_for_priors(study, now + 2)  # nothing to wait for
    assert not completer.waits_for_priors(DueStudy(study_id, "1.2.3.9", 0.0, 1, 0.0), now)


def test_the_set_up_page_s_config_is_taken_as_written(tmp_path):
    """docs/integration/priors.md: its TOML block, through ``clinibox config --check``."""
    import re

    from clinibox.table import main
    from clinibox_common.settings_loader import read_toml

    page = (Path(__file__).parents[3] / "docs" / "integration" / "priors.md").read_text()
    (block,) = re.findall(r"```toml\n(.*?)```", page, re.S)
    config = tmp_path / "clinibox.toml"
    config.write_text(block)
    assert main(["config", "--check", str(config)]) == 0
    taken = box_settings.from_dict(read_toml(config)).priors
    assert (taken.enabled, taken.host, taken.ae_title, taken.wait_seconds) == (
        True, "192.0.2.10", "PACS", 120.0)
    config.write_text(block.replace('host = "192.0.2.10"', 'host = ""'))
    assert main(["config", "--check", str(config)]) != 0


@pytest.fixture
def hostile_pacs(tmp_path: Path):
    """A Query/Retrieve SCP (pynetdicom) that answers one earlier study of one image, then
    sends image after image for its C-GET, as a broken or hostile PACS would."""
    from pynetdicom import AE, StoragePresentationContexts, evt
    from pynetdicom.sop_class import (
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
    )

    from phantoms.dicom import ct_dataset
    from tests.ports import free_ports

    earlier = generate_uid()
    sent = []

    def on_find(event):
        asked = event.identifier
        answer = Dataset()
        answer.QueryRetrieveLevel = asked.QueryRetrieveLevel
        answer.StudyInstanceUID = earlier
        answer.PatientID = PATIENT
        if asked.QueryRetrieveLevel == "STUDY":
            answer.StudyDate, answer.ModalitiesInStudy = "20260302", "CT"
        else:
            answer.SeriesInstanceUID, answer.Modality = generate_uid(), "CT"
            answer.NumberOfSeriesRelatedInstances = "1"
        yield 0xFF00, answer

    def on_get(event):
        yield 500
        for _ in range(500):
            if event.is_cancelled:
                return
            ds = ct_dataset(generate("ct", np.random.default_rng(2), size=64), default_identity(
                StudyInstanceUID=earlier, PatientID=PATIENT))
            sent.append(ds.SOPInstanceUID)
            yield 0xFF00, ds

    ae = AE(ae_title="PACS")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    for context in StoragePresentationContexts[:120]:
        ae.add_supported_context(context.abstract_syntax, scp_role=True, scu_role=False)
    (port,) = free_ports(1)
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[
        (evt.EVT_C_FIND, on_find), (evt.EVT_C_GET, on_get)])
    yield port, earlier, sent
    server.shutdown()


def test_a_pacs_that_keeps_sending_is_cut_off_at_the_bound_and_what_came_is_kept(
        lander, hostile_pacs):
    port, earlier, sent = hostile_pacs
    config = Config()
    config.storage.state_dir = str(lander.database.parent)
    config.priors.enabled, config.priors.host, config.priors.port = True, "127.0.0.1", port
    config.priors.max_images, config.priors.timeout = 3, 5.0
    conn = db.connect(config.database_path)
    with db.transaction(conn):
        priors.ask(conn, CURRENT.study_key, time.time())
    fetcher = PriorsFetcher(config, lander, read_current=lambda _c, _key: CURRENT)
    started = time.monotonic()
    assert fetcher.fetch_once() == 1
    assert time.monotonic() - started < 30  # cut off, not the 500 images it had to send
    found = priors.lookup(conn, CURRENT.study_key)
    assert (found.state, found.reason, found.images) == (
        PriorLookupState.FETCHED, "too_large", 3), found
    assert len(sent) < 50
    assert conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 3
    assert list(lander.spool.tmp.iterdir()) == []  # nothing half-written left behind
    assert priors.fetched_for(conn, earlier) == CURRENT.study_key  # sent nowhere
