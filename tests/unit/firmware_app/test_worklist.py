"""The clinic's Modality Worklist on the box without a network: the ``[worklist]`` settings,
how an answer is cleaned (``ingest/worklist.py``), how it is kept (``storage/worklist.py``)
and what the poller records when the worklist gives no answer. The C-FIND itself is tested
against Orthanc's worklist plugin in tests/integration/test_worklist_orthanc.py."""

from __future__ import annotations

import contextlib
import threading

import pytest
from pydicom.dataset import Dataset

from clinibox_common.settings_loader import ConfigError
from firmware_app.ingest import worklist as client
from firmware_app.settings.box import Config, from_dict
from firmware_app.storage import db, worklist
from firmware_app.storage.worklist import WorklistItem, WorklistState

TODAY = "20261127"


def test_the_worklist_is_off_by_default_and_asks_as_the_box():
    config = Config()
    assert config.worklist.enabled is False and config.worklist.modalities == ["US", "ES"]
    assert config.worklist_calling_ae_title == "CLINIBOX"
    config = from_dict({"worklist": {"enabled": True, "host": "ris.local",
                                     "station_ae_title": "US_ROOM1"}})
    assert config.worklist_calling_ae_title == "US_ROOM1"


@pytest.mark.parametrize(("section", "message"), [
    ({"enabled": True}, "[worklist] host"),
    ({"modalities": ["US", "XR"]}, "[worklist] modalities"),
    ({"modalities": []}, "[worklist] modalities"),
    ({"host": "two words"}, "[worklist] host"),
    ({"ae_title": "A" * 17}, "[worklist] ae_title"),
    ({"refresh_seconds": 1}, "[worklist] refresh_seconds"),
    ({"max_items": 0}, "[worklist] max_items"),
])
def test_bad_worklist_settings_are_refused_naming_the_key(section, message):
    with pytest.raises(ConfigError) as refused:
        from_dict({"worklist": section})
    assert message in str(refused.value)


def _answer(**patient) -> Dataset:
    ds = Dataset()
    for keyword, value in patient.items():
        setattr(ds, keyword, value)
    return ds


def test_an_odd_answer_is_cleaned_and_bounded():
    step = Dataset()
    step.Modality = "US"
    step.ScheduledProcedureStepStartDate = TODAY
    step.ScheduledProcedureStepStartTime = "093000.000"
    step.ScheduledProcedureStepID = "S" * 40
    ds = _answer(PatientName="Evil\u202e^Name\x07" + "x" * 200, PatientID="P\u200b-1\n",
                 PatientBirthDate="1980-01-01", PatientSex="X", AccessionNumber="A\\B")
    ds.ScheduledProcedureStepSequence = [step]
    item = client.item_of(ds)
    assert item.patient_name.startswith("Evil^Name") and len(item.patient_name) == 64
    assert item.patient_id == "P-1" and item.accession_number == "AB"
    assert (item.birth_date, item.sex) == ("", "")  # not a DICOM date, not a DICOM sex
    assert (item.scheduled_date, item.scheduled_time) == (TODAY, "093000")
    assert len(item.sps_id) == 16 and item.modality == "US"


def test_an_answer_missing_its_fields_is_an_empty_item_not_an_error():
    assert client.item_of(Dataset()) == WorklistItem()
    ds = _answer(PatientID="P-2")
    ds.ScheduledProcedureStepSequence = []
    assert client.item_of(ds) == WorklistItem(patient_id="P-2")


@pytest.fixture
def conn(tmp_path):
    with contextlib.closing(db.connect(tmp_path / "box.db")) as connection:
        db.initialise(connection)
        yield connection


def test_the_last_answer_is_offered_while_the_worklist_answers(conn):
    assert worklist.status(conn).state == WorklistState.OFF and not worklist.offered(conn, TODAY)
    worklist.replace_items(conn, [WorklistItem(patient_id="P-2", scheduled_date=TODAY,
                                               scheduled_time="1100"),
                                  WorklistItem(patient_id="P-1", scheduled_date=TODAY,
                                               scheduled_time="0900"),
                                  WorklistItem(patient_id="P-0", scheduled_date="20261126")],
                           now=100.0)
    first = worklist.offered(conn, TODAY)
    assert [i.item.patient_id for i in first] == ["P-1", "P-2"]  # today's, by time
    assert worklist.status(conn) == worklist.Status(WorklistState.OK, "", 3, 100.0, 100.0)
    worklist.replace_items(conn, [WorklistItem(patient_id="P-9", scheduled_date=TODAY)],
                           now=150.0)
    again = worklist.offered(conn, TODAY)
    assert again[0].id > max(i.id for i in first)  # an older page's pick names no one else
    assert worklist.item(conn, first[0].id) is None
    worklist.set_state(conn, WorklistState.DOWN, "unreachable", now=200.0)
    down = worklist.status(conn)
    assert (down.state, down.reason, down.answered_at, down.checked_at) == (
        WorklistState.DOWN, "unreachable", 150.0, 200.0)  # when it last answered is kept
    assert worklist.offered(conn, TODAY) == []  # a list gone stale is never offered
    assert worklist.item(conn, again[0].id) is not None
    worklist.set_state(conn, WorklistState.DOWN, "unreachable", now=150.0 + 86401)
    assert worklist.item(conn, again[0].id) is None  # the names go a day after the answer




def test_the_poller_records_why_there_is_no_answer_and_never_raises(tmp_path):
    config = from_dict({"storage": {"state_dir": str(tmp_path / "state")},
                        "worklist": {"enabled": True, "host": "ris.local"}})
    db.private_state_dir(config.state_dir)
    with contextlib.closing(db.connect(config.database_path)) as conn:
        db.initialise(conn)

    def down(_config):
        raise client.WorklistDown("refused", "ris.local:104")

    def broken(_config):
        raise ValueError("an answer nobody can read")

    assert client.WorklistPoller(config, down).poll_once().reason == "refused"
    found = client.WorklistPoller(config, broken).poll_once()
    assert (found.state, found.reason) == (WorklistState.DOWN, "bad_answer")
    config.worklist.enabled = False
    assert client.WorklistPoller(config, broken).poll_once().state == WorklistState.OFF
    config.worklist.enabled = True
    config.worklist.refresh_seconds = 0.01
    stop = threading.Event()
    calls = []

    def counting(_config):
        calls.append(1)
        if len(calls) > 3:
            stop.set()
        raise RuntimeError("worse")

    client.WorklistPoller(config, counting).run(stop)  # returns when stopped, never raises
    assert len(calls) == 4
