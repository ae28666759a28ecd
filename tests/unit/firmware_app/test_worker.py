"""The worker on the real demo package: processed, quarantined, retried, recovered."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from clinibox_common.contracts.reasons import Reason, ReasonCode, encode
from engine.imaging.errors import SandboxNotStarted
from firmware_app.ingest.landing import Lander
from firmware_app.service.worker import Worker
from firmware_app.settings.box import Config
from firmware_app.settings.storage import StorageConfig
from firmware_app.storage import db
from firmware_app.storage.results import ResultStore, decode_heatmap
from firmware_app.storage.spool import make_spool
from phantoms.dicom import ct_dataset, us_dataset, write_dicom
from phantoms.images import generate


@pytest.fixture
def box(tmp_path, demo_runner):
    config = Config(storage=StorageConfig(state_dir=str(tmp_path / "state")))
    conn = db.connect(config.database_path)
    db.initialise(conn)
    spool = make_spool(config)
    lander = Lander(spool, config.database_path, 64 * 2**20)
    worker = Worker(config, spool, demo_runner)
    yield config, lander, worker, conn
    conn.close()


def _phantom_bytes(tmp_path: Path, lesion: bool, seed: int, kind: str = "ct") -> bytes:
    phantom = generate(kind, np.random.default_rng(seed), lesion=lesion)
    path = tmp_path / f"p{seed}.dcm"
    write_dicom(ct_dataset(phantom) if kind == "ct" else us_dataset(phantom), path)
    return path.read_bytes()


def _land(lander: Lander, data: bytes, uid: str | None = None) -> int:
    return lander.land(data, sop_instance_uid=uid, source="dicom", origin="TEST").instance_id


def test_image_is_processed_with_findings_and_heatmap(box, tmp_path):
    _config, lander, worker, conn = box
    instance = _land(lander, _phantom_bytes(tmp_path, lesion=True, seed=1), "1.2.3.1")
    assert worker.run_once() is True
    rows = ResultStore(conn).instances()
    assert rows[0]["id"] == instance
    assert rows[0]["status"] == "processed"
    assert rows[0]["model_id"] == "clinibox-demo-lesion@1.0.0"
    assert set(rows[0]["timings_ms"]) >= {"decode", "inference", "total"}
    blob = conn.execute("SELECT heatmap FROM results").fetchone()[0]
    heatmap = decode_heatmap(blob)
    assert heatmap.ndim == 2 and 0.0 <= heatmap.min() <= heatmap.max() <= 1.0
    study = conn.execute("SELECT instances, top_instance_id FROM studies").fetchone()
    assert tuple(study) == (1, instance)
    assert worker.run_once() is False  # queue empty


def test_lesion_phantoms_score_higher_than_clean_ones(box, tmp_path):
    _config, lander, worker, conn = box
    # both kinds the demo learnt (its CT AUC is the weaker one: see MODEL_CARD.md)
    for seed in range(16):
        data = _phantom_bytes(tmp_path, lesion=seed % 2 == 0, seed=seed,
                              kind="ct" if seed % 4 < 2 else "us")
        _land(lander, data, f"1.2.4.{seed}")
    while worker.run_once():
        pass
    rows = ResultStore(conn).instances()
    lesion = [r["probability"] for r in rows[0::2]]
    clean = [r["probability"] for r in rows[1::2]]
    assert sum(lesion) / len(lesion) > sum(clean) / len(clean) + 0.15


def test_non_image_is_quarantined_with_reason(box):
    config, lander, worker, conn = box
    data = Path(get_testdata_file("rtplan.dcm")).read_bytes()
    _land(lander, data, "1.2.5")
    worker.run_once()
    row = ResultStore(conn).instances()[0]
    assert row["status"] == "quarantined"
    [reason] = row["reason"]
    assert reason["code"] == "decode_failed" and "no pixel data" in reason["params"]["detail"]
    assert list(config.quarantine_dir.glob("*.reason.json"))


def test_unexpected_error_is_retried_then_failed(box, tmp_path, monkeypatch):
    config, lander, worker, conn = box
    _land(lander, _phantom_bytes(tmp_path, lesion=False, seed=9), "1.2.6")

    def broken(*args, **kwargs):
        raise RuntimeError("backend lost its device")

    monkeypatch.setattr(worker.runner, "analyse", broken)
    for _ in range(config.worker.max_attempts):
        assert worker.run_once() is True
    row = ResultStore(conn).instances()[0]
    assert row["status"] == "failed"
    assert row["reason"] == [{"code": "processing_error",
                              "params": {"detail": "RuntimeError: backend lost its device"}}]
    assert row["attempts"] == config.worker.max_attempts
    events = [r["message"] for r in ResultStore(conn).last_errors()]
    assert any("backend lost its device" in m for m in events)


def test_a_decoder_that_does_not_start_leaves_the_image_queued_not_quarantined(
        box, tmp_path, monkeypatch):
    """The box's fault (its decoder child did not start), not the image's: it is tried
    again and analysed once the decoder starts."""
    _config, lander, worker, conn = box
    _land(lander, _phantom_bytes(tmp_path, lesion=False, seed=10), "1.2.6.1")
    start = worker.sandbox._start

    def not_starting() -> None:
        raise SandboxNotStarted("the decoder process did not start")

    monkeypatch.setattr(worker.sandbox, "_start", not_starting)
    assert worker.run_once() is True
    row = ResultStore(conn).instances()[0]
    assert row["status"] == "queued"
    assert row["reason"] == [{"code": "processing_error", "params": {
        "detail": "SandboxNotStarted: the decoder process did not start"}}]
    assert not list((worker.config.spool_dir / "quarantine").glob("*"))
    monkeypatch.setattr(worker.sandbox, "_start", start)
    assert worker.run_once() is True
    assert ResultStore(conn).instances()[0]["status"] == "processed"


def test_quarantine_undone_by_power_cut_is_redone(box, tmp_path):
    _config, lander, worker, conn = box
    instance = _land(lander, b"\0" * 128 + b"DICM" + b"garbage", "1.2.7")
    job = worker.queue.claim()
    local_id = job.local_id
    truncated = encode([Reason(ReasonCode.DECODE_FAILED, {"detail": "truncated file"})])
    worker.spool.quarantine(local_id, truncated)  # file moved, row update lost
    conn.execute("UPDATE instances SET status='queued' WHERE id=?", (instance,))
    worker.run_once()
    row = ResultStore(conn).instances()[0]
    assert row["status"] == "quarantined"
    assert row["reason"] == [{"code": "decode_failed", "params": {"detail": "truncated file"}}]


def test_missing_spool_file_fails_clearly(box, tmp_path):
    config, lander, worker, conn = box
    _land(lander, _phantom_bytes(tmp_path, lesion=False, seed=3), "1.2.8")
    shutil.rmtree(config.spool_dir / next(p for p in config.spool_dir.iterdir()
                                      if p.name != "tmp").name)
    worker.run_once()
    row = ResultStore(conn).instances()[0]
    assert row["status"] == "failed"
    assert row["reason"] == [{"code": "missing_from_spool", "params": {}}]
    assert json.loads(json.dumps(row))  # serialisable for `clinibox results --json`


def test_an_image_no_model_is_meant_for_is_not_analysed_not_quarantined(box, tmp_path):
    config, lander, worker, conn = box
    nm = _land(lander, Path(get_testdata_file("JPEG-LL.dcm")).read_bytes(), "1.2.9.1")  # NM
    ct = _land(lander, _phantom_bytes(tmp_path, lesion=True, seed=1), "1.2.9.2")
    while worker.run_once():
        pass
    rows = {r["id"]: r for r in ResultStore(conn).instances()}
    assert rows[nm]["status"] == "not_analysed" and rows[nm]["model_id"] is None
    [reason] = rows[nm]["reason"]
    assert reason["code"] == "modality_not_accepted" and reason["params"]["modality"] == "NM"
    assert reason["params"]["model"].startswith("clinibox-demo-lesion")
    assert rows[ct]["status"] == "processed"  # the CT goes to its model
    assert not list(config.quarantine_dir.glob("*.reason.json"))  # quarantine is for broken input
    local_id = conn.execute("SELECT local_id FROM instances WHERE id = ?", (nm,)).fetchone()[0]
    assert worker.spool.path_for(local_id).exists()  # kept for a technician, like any image


def _statuses(conn) -> dict[int, tuple[str, int]]:
    return {r["id"]: (r["status"], r["attempts"])
            for r in conn.execute("SELECT id, status, attempts FROM instances")}


def test_the_loop_decodes_the_next_object_while_analysing_this_one(box, tmp_path, monkeypatch):
    """Every object is processed once, with one attempt each, and each analysis starts with
    the next object's decode already handed to the sandbox."""
    import threading

    _config, lander, worker, conn = box
    ids = [_land(lander, _phantom_bytes(tmp_path, lesion=i % 2 == 0, seed=20 + i), f"1.3.{i}")
           for i in range(4)]
    under_way_at_analysis = []
    handle = worker.handle

    def watching(job, decoding):
        under_way_at_analysis.append(worker.sandbox._pending is not None)
        handle(job, decoding)
        if len(under_way_at_analysis) == len(ids):
            stop.set()

    monkeypatch.setattr(worker, "handle", watching)
    stop, wake = threading.Event(), threading.Event()
    runner = threading.Thread(target=worker._loop, args=(stop, wake))
    runner.start()
    runner.join(120)
    assert not runner.is_alive()
    assert _statuses(conn) == {i: ("processed", 1) for i in ids}
    assert under_way_at_analysis == [True, True, True, False]  # the last had no next


def test_a_look_ahead_object_goes_back_to_the_queue_uncounted_when_the_worker_stops(
        box, tmp_path, monkeypatch):
    import threading

    _config, lander, worker, conn = box
    first = _land(lander, _phantom_bytes(tmp_path, lesion=True, seed=31), "1.4.1")
    second = _land(lander, _phantom_bytes(tmp_path, lesion=False, seed=32), "1.4.2")
    stop, wake = threading.Event(), threading.Event()
    handle = worker.handle

    def then_stop(job, decoding):
        assert _statuses(conn)[second] == ("processing", 0)  # claimed ahead, not counted
        handle(job, decoding)
        stop.set()

    monkeypatch.setattr(worker, "handle", then_stop)
    worker._loop(stop, wake)
    assert _statuses(conn) == {first: ("processed", 1), second: ("queued", 0)}
    monkeypatch.undo()
    assert worker.run_once() and _statuses(conn)[second] == ("processed", 1)


def test_a_crash_while_analysing_does_not_count_against_the_object_decoded_ahead(box, tmp_path):
    config, lander, worker, conn = box
    first = _land(lander, _phantom_bytes(tmp_path, lesion=True, seed=41), "1.5.1")
    second = _land(lander, _phantom_bytes(tmp_path, lesion=True, seed=42), "1.5.2")
    job = worker.queue.claim(attempt=False)
    ahead = worker.queue.claim(attempt=False)
    worker.queue.count_attempt(job.id)  # the first one's analysis began; then a power cut
    assert (job.id, ahead.id) == (first, second)
    assert worker.queue.recover(config.worker.max_attempts) == (2, 0)
    assert _statuses(conn) == {first: ("queued", 1), second: ("queued", 0)}
