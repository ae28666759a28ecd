"""A study's DICOM results made while it settles, not after its stable period.

Once every object of a study is analysed, the study completer makes its SR (and
SEG, key image) in the document maker's child during the stable period, and at
completion queues those very documents when nothing about the study changed
meanwhile; a late instance makes them again (``service/study_completion.py``). The
maker's child is warmed as soon as an object waits to be analysed.
CT phantoms landed and analysed by the real worker with the bundled demo model
(phantom-trained, not for clinical use); the documents are made by the real
maker child (highdicom); its ``make`` is only counted here.
"""

from __future__ import annotations

import time

import numpy as np
import pydicom
import pytest

from firmware_app.dicom_out.study_documents import ModelIdentity
from firmware_app.service.study_completion import StudyCompleter
from firmware_app.settings.box import Config, from_dict
from firmware_app.storage.study_completion import studies_due, studies_settling
from phantoms.dicom import ct_dataset, write_dicom
from phantoms.images import generate
from tests.viewer_state import local_box


def _slices(folder, count: int, study_uid: str, first: int = 0) -> list:
    """CT phantom slices of one study."""
    paths = []
    for n in range(first, first + count):
        ds = ct_dataset(generate("ct", np.random.default_rng(n), size=256, lesion=n % 2 == 0),
                        {"StudyInstanceUID": study_uid, "PatientID": "AHEAD-1"})
        paths.append(write_dicom(ds, folder / f"slice{n}.dcm"))
    return paths


@pytest.fixture
def settled(tmp_path, demo_runner):
    """A box with a PACS destination, a study of three analysed slices, and a completer
    whose maker's ``make`` calls are counted."""
    config = Config()
    box = local_box(config, tmp_path / "state", demo_runner)
    config.pacs.destinations = from_dict({"pacs": {"destinations": [
        {"name": "pacs", "host": "127.0.0.1", "send": ["sr", "seg"]}]}}).pacs.destinations
    study_uid = pydicom.uid.generate_uid()
    for path in _slices(tmp_path, 3, study_uid):
        box.lander.land(path.read_bytes(), sop_instance_uid=None, source="dicom", origin="T")
    while box.worker.run_once():
        pass
    completer = StudyCompleter(config, ModelIdentity.from_manifest(
        demo_runner.package.manifest), "box-1")
    made: list[int] = []
    make = completer.maker.make
    completer.maker.make = lambda *a, **k: made.append(1) or make(*a, **k)
    last = box.conn.execute("SELECT MAX(received_at) FROM instances").fetchone()[0]
    yield box, completer, made, last, tmp_path, study_uid
    completer.maker.close()
    box.conn.close()


@pytest.mark.slow
def test_the_documents_made_while_the_study_settles_are_the_ones_queued(settled):
    box, completer, made, last, _tmp, _uid = settled
    stable = completer.config.studies.stable_seconds
    assert studies_settling(box.conn, last + 1, stable) and not studies_due(
        box.conn, last + 1, stable)
    assert completer.tick(now=last + 1) == 0  # settling: made, not queued
    assert made == [1] and len(completer.prepared) == 1
    assert box.conn.execute("SELECT COUNT(*) FROM dicom_outbox").fetchone()[0] == 0
    [(_, _, prepared, _)] = completer.prepared.values()
    completer.tick(now=last + 2)  # nothing changed: not made again
    assert made == [1]
    assert completer.tick(now=last + stable + 1) == 1  # complete: the same documents queued
    assert made == [1] and completer.prepared == {}
    rows = box.conn.execute("SELECT kind, sop_instance_uid FROM dicom_outbox").fetchall()
    assert sorted(map(tuple, rows)) == sorted((d.kind, d.sop_instance_uid) for d in prepared)
    assert {kind for kind, _ in rows} == {"sr", "seg"}


@pytest.mark.slow
def test_a_late_instance_makes_the_documents_again(settled):
    box, completer, made, last, tmp_path, study_uid = settled
    stable = completer.config.studies.stable_seconds
    completer.tick(now=last + 1)
    [(_, _, early, _)] = completer.prepared.values()
    sr_early = next(d for d in early if d.kind == "sr")
    [late] = _slices(tmp_path, 1, study_uid, first=7)
    box.lander.land(late.read_bytes(), sop_instance_uid=None, source="dicom", origin="T")
    assert studies_settling(box.conn, time.time(), stable) == []  # an object waits: held open
    assert box.worker.run_once()
    last = box.conn.execute("SELECT MAX(received_at) FROM instances").fetchone()[0]
    assert completer.tick(now=last + stable + 1) == 1
    assert len(made) == 2  # made again for four slices, at completion
    [sr] = box.conn.execute("SELECT path FROM dicom_outbox WHERE kind = 'sr'").fetchall()
    report = pydicom.dcmread(sr[0])
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
    assert sum(len(series.ReferencedSOPSequence)
               for series in evidence.ReferencedSeriesSequence) == 4
    assert sr_early.sop_instance_uid == report.SOPInstanceUID  # same version, same UID


@pytest.mark.slow
def test_the_maker_warms_as_soon_as_an_object_waits_to_be_analysed(tmp_path, demo_runner):
    config = Config()
    box = local_box(config, tmp_path / "state", demo_runner)
    config.pacs.destinations = from_dict({"pacs": {"destinations": [
        {"name": "pacs", "host": "127.0.0.1", "send": ["sr"]}]}}).pacs.destinations
    completer = StudyCompleter(config, ModelIdentity.from_manifest(
        demo_runner.package.manifest), "box-1")
    try:
        completer.tick()
        assert not completer.maker.sandbox.running  # nothing on its way: no child
        [path] = _slices(tmp_path, 1, pydicom.uid.generate_uid())
        box.lander.land(path.read_bytes(), sop_instance_uid=None, source="dicom", origin="T")
        completer.tick()  # queued, not analysed: its study is not known yet
        assert completer.maker.sandbox.running
    finally:
        completer.maker.close()
        box.conn.close()
