"""The box's own copy of a study's result documents, for its DICOMweb service: kept at each
completion with ``[dicomweb]`` on (no PACS needed), the set before replaced, forgotten by
retention with the study's last image.

CT phantoms landed and analysed by the real worker with the bundled demo model (phantom-
trained, not for clinical use); the documents made by the real maker child (highdicom).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pydicom
import pytest

from firmware_app.dicom_out.study_documents import ModelIdentity
from firmware_app.service.study_completion import StudyCompleter
from firmware_app.settings.box import Config
from firmware_app.storage import kept_documents
from firmware_app.storage.retention import apply_retention
from phantoms.dicom import ct_dataset, write_dicom
from phantoms.images import generate
from tests.viewer_state import local_box


def _land(box, folder, study_uid: str, seeds: range) -> None:
    for n in seeds:
        ds = ct_dataset(generate("ct", np.random.default_rng(n), size=256, lesion=True),
                        {"StudyInstanceUID": study_uid, "PatientID": "KEPT-1"})
        path = write_dicom(ds, folder / f"slice{n}.dcm")
        box.lander.land(path.read_bytes(), sop_instance_uid=None, source="dicom", origin="T")
    while box.worker.run_once():
        pass


@pytest.fixture
def box(tmp_path, demo_runner):
    """A box without a PACS, ``[dicomweb]`` on, and its study completer."""
    config = Config()
    config.dicomweb = dataclasses.replace(config.dicomweb, enabled=True, keep=["sr", "seg"])
    box = local_box(config, tmp_path / "state", demo_runner)
    completer = StudyCompleter(config, ModelIdentity.from_manifest(
        demo_runner.package.manifest), "box-1")
    yield box, completer
    if completer.maker is not None:
        completer.maker.close()
    box.conn.close()


def _complete(box, completer) -> int:
    last = box.conn.execute("SELECT MAX(received_at) FROM instances").fetchone()[0]
    return completer.tick(now=last + completer.config.studies.stable_seconds + 1)


@pytest.mark.slow
def test_a_completion_keeps_its_documents_without_a_pacs_and_the_next_replaces_them(
        box, tmp_path):
    box, completer = box
    study = pydicom.uid.generate_uid()
    _land(box, tmp_path, study, range(0, 2))
    assert _complete(box, completer) == 1
    first = kept_documents.of_study(box.conn, study)
    assert {d.kind for d in first} == {"sr", "seg"}
    assert {d.modality for d in first} == {"SR", "SEG"}
    for document in first:
        header = pydicom.dcmread(document.path, stop_before_pixels=True)
        assert header.SOPInstanceUID == document.sop_instance_uid
        assert header.StudyInstanceUID == study
        assert document.path.parent == box.config.kept_documents_dir
    assert box.conn.execute("SELECT COUNT(*) FROM dicom_outbox").fetchone()[0] == 0  # no PACS
    _land(box, tmp_path, study, range(2, 3))  # a late slice: the study's next version
    assert _complete(box, completer) == 1
    second = kept_documents.of_study(box.conn, study)
    assert {d.kind for d in second} == {"sr", "seg"}
    assert not {d.sop_instance_uid for d in first} & {d.sop_instance_uid for d in second}
    assert not any(d.path.exists() for d in first) and all(d.path.exists() for d in second)


@pytest.mark.slow
def test_retention_forgets_a_studys_documents_with_its_last_image(box, tmp_path):
    box, completer = box
    study = pydicom.uid.generate_uid()
    _land(box, tmp_path, study, range(0, 1))
    _complete(box, completer)
    [*kept] = kept_documents.of_study(box.conn, study)
    assert kept
    box.conn.execute("UPDATE instances SET image_deleted_at = 1.0")  # retention took them
    apply_retention(box.conn, box.config)
    assert kept_documents.of_study(box.conn, study) == []
    assert not any(d.path.exists() for d in kept)


def test_documents_are_not_kept_when_the_service_is_off(tmp_path, demo_runner):
    config = Config()
    box = local_box(config, tmp_path / "state", demo_runner)
    completer = StudyCompleter(config, ModelIdentity.from_manifest(
        demo_runner.package.manifest), "box-1")
    assert completer.maker is None and completer.kept_kinds == set()  # nothing made at all
    box.conn.close()
