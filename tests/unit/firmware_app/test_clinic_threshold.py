"""The clinic's own finding threshold on the box: set from its confirmed cases as analyses
go, used for the next image, kept for the next start (and ``clinibox infer``), noted in the
audit trail and sent in the status for the hospital's console; ``off`` keeps the package's."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from clinibox_common.contracts.clinic_threshold import ThresholdChoice, ThresholdState
from clinibox_common.contracts.egress import check_message
from engine.inference.runner import ModelRunner
from firmware_app.ingest.landing import Lander
from firmware_app.models import calibration
from firmware_app.service.appliance import load_runner, model_facts
from firmware_app.service.worker import Worker
from firmware_app.settings.box import Config, from_dict
from firmware_app.storage import clinic_thresholds, db
from firmware_app.storage.outbox import Outbox
from firmware_app.storage.spool import make_spool
from firmware_app.telemetry.messages import build_status
from phantoms.dicom import ct_dataset, write_dicom
from phantoms.images import generate


def _config(tmp_path: Path, calibrate: str = "keep_sensitivity") -> Config:
    return from_dict({"storage": {"state_dir": str(tmp_path / "state")},
                      "runtime": {"backend": "onnxruntime", "precision": "fp32"},
                      "models": {"calibration": calibrate, "calibration_min_lesions": 6,
                                 "calibration_min_clear": 6, "calibration_max_shift": 5.0}})


def _confirmed(conn: sqlite3.Connection, model_id: str, backend: str, lesions: list[float],
               clear: list[float], first_id: int = 10_000) -> None:
    """Results of earlier images on this box, each reviewed by a clinician."""
    conn.execute("PRAGMA foreign_keys = OFF")
    cases = [(p, True) for p in lesions] + [(p, False) for p in clear]
    for k, (probability, lesion) in enumerate(cases):
        i, finding = first_id + k, probability >= 0.1293
        conn.execute("INSERT INTO instances(id, local_id, source, spool_path, size_bytes, status,"
                     " received_at, updated_at) VALUES (?, ?, 'dicom', '', 1, 'processed', 1, 1)",
                     (i, f"earlier-{i}"))
        conn.execute("INSERT INTO results(instance_id, model_id, backend, probability, finding,"
                     " alert, findings_json, warnings_json, key_frame, frames_inferred,"
                     " timings_json, created_at) VALUES (?, ?, ?, ?, ?, 0, '[]', '[]', 0, 1,"
                     " '{}', 1)", (i, model_id, backend, probability, int(finding)))
        conn.execute("INSERT INTO feedback(instance_id, finding, verdict, at) VALUES (?, -1, ?, ?)",
                     (i, "agree" if finding == lesion else "disagree", 2.0 + k))


def _box_with_database(tmp_path: Path) -> tuple[Config, sqlite3.Connection, ModelRunner]:
    """The box's settings, its initialised database and the demo package's runner."""
    config = _config(tmp_path)
    conn = db.connect(config.database_path)
    db.initialise(conn)
    return config, conn, load_runner(config)


def _clear_phantom(tmp_path: Path) -> bytes:
    path = tmp_path / "clear.dcm"
    write_dicom(ct_dataset(generate("ct", np.random.default_rng(6), lesion=False)), path)
    return path.read_bytes()


@pytest.fixture
def box(tmp_path, monkeypatch):
    monkeypatch.setattr(calibration, "CALIBRATE_EVERY", 1)
    config, conn, runner = _box_with_database(tmp_path)
    spool = make_spool(config)
    lander = Lander(spool, config.database_path, 64 * 2**20)
    yield config, conn, runner, lander, Worker(config, spool, runner)
    conn.close()


def _analyse(conn, lander, worker, data: bytes, uid: str) -> tuple[float, bool]:
    instance = lander.land(data, sop_instance_uid=uid, source="dicom", origin="TEST").instance_id
    assert worker.run_once() is True
    row = conn.execute("SELECT probability, finding FROM results WHERE instance_id = ?",
                       (instance,)).fetchone()
    return float(row[0]), bool(row[1])


def test_the_clinics_threshold_finds_its_confirmed_lesions_from_the_next_image_on(box, tmp_path):
    config, conn, runner, lander, worker = box
    shipped = runner.shipped_thresholds["finding"]
    image = _clear_phantom(tmp_path)
    p, finding = _analyse(conn, lander, worker, image, "1.2.3.1")
    assert p < shipped and not finding  # this machine scores it below the package's threshold
    kept = clinic_thresholds.read(conn, runner.package.model_id, runner.backend_label)
    assert kept is not None and kept.state == ThresholdState.TOO_FEW_CASES

    # the clinic's confirmed lesions score as low as this image: the package misses them
    lesions = [p * 0.97, p * 1.5, 0.3, 0.5, 0.7, 0.9]
    _confirmed(conn, runner.package.model_id, runner.backend_label, lesions,
               [p * 0.2, p * 0.3, p * 0.4, p * 0.5, p * 0.6, p * 0.7])
    assert _analyse(conn, lander, worker, image, "1.2.3.2")[1] is False  # then set, after it
    kept = clinic_thresholds.read(conn, runner.package.model_id, runner.backend_label)
    assert kept is not None and kept.state == ThresholdState.CALIBRATED
    assert kept.finding == pytest.approx(p * 0.97) and kept.sensitivity == 1.0
    assert runner.thresholds["finding"] == kept.finding < shipped
    assert runner.thresholds["alert"] == runner.shipped_thresholds["alert"]  # the hospital's
    assert _analyse(conn, lander, worker, image, "1.2.3.3") == (pytest.approx(p), True)

    moved = conn.execute("SELECT detail FROM audit WHERE action = 'threshold_set'").fetchall()
    assert [row[0] for row in moved] == [
        f"finding {shipped:.4f} -> {kept.finding:.4f} (calibrated; 6 lesions, 6 clear)"]

    # the next start, and `clinibox infer`, use the threshold the box set
    assert load_runner(config).thresholds["finding"] == kept.finding
    # and the hospital is told
    status = build_status(conn, Outbox(conn, 100, {"lesion"}), model_facts(runner.package),
                          "heartbeat", 5.0)
    check_message("status", status, None)
    assert status["threshold"] == {"finding": round(kept.finding, 6),
                                   "package": round(shipped, 6), "state": "calibrated",
                                   "lesions": 6, "clear": 6}


def test_off_keeps_the_packages_threshold_whatever_the_cases_say(tmp_path, monkeypatch):
    monkeypatch.setattr(calibration, "CALIBRATE_EVERY", 1)
    config = _config(tmp_path, calibrate="off")
    conn = db.connect(config.database_path)
    db.initialise(conn)
    runner = load_runner(config)
    _confirmed(conn, runner.package.model_id, runner.backend_label,
               [0.01, 0.02, 0.03, 0.04, 0.05, 0.06], [0.001] * 6)
    choice = calibration.calibrate(config, conn, runner)
    assert choice.state == ThresholdState.PACKAGE
    assert runner.thresholds == runner.shipped_thresholds
    assert conn.execute("SELECT COUNT(*) FROM audit WHERE action = 'threshold_set'"
                        ).fetchone()[0] == 0
    conn.close()


def test_cases_another_runtime_scored_do_not_set_this_ones_threshold(tmp_path):
    config, conn, runner = _box_with_database(tmp_path)
    _confirmed(conn, runner.package.model_id, "openvino:openvino-ir/int8",
               [0.01] * 6, [0.001] * 6)
    assert calibration.calibrate(config, conn, runner).state == ThresholdState.TOO_FEW_CASES
    assert runner.thresholds["finding"] == runner.shipped_thresholds["finding"]
    conn.close()


def test_loading_a_model_reads_the_threshold_and_never_makes_a_database(tmp_path):
    config = _config(tmp_path)
    runner = load_runner(config)
    assert not config.database_path.exists()
    assert runner.thresholds == runner.shipped_thresholds


def test_a_kept_threshold_that_no_longer_fits_the_package_is_not_used(tmp_path):
    """A package re-signed with another threshold under the same version, or a narrower
    setting, makes the box fall back to the package's threshold until it sets one again."""
    config, conn, runner = _box_with_database(tmp_path)
    shipped = runner.shipped_thresholds["finding"]
    model, backend = runner.package.model_id, runner.backend_label
    fits = ThresholdChoice(shipped * 0.5, shipped, ThresholdState.CALIBRATED, 0.94, 30, 30)
    with db.transaction(conn):
        clinic_thresholds.save(conn, model, backend, fits, 1.0)
    calibration.apply_kept(conn, runner, config.models)
    assert runner.thresholds["finding"] == shipped * 0.5
    for kept in (ThresholdChoice(shipped * 0.5, shipped * 1.1, ThresholdState.CALIBRATED,
                                 0.94, 30, 30),  # another package threshold
                 ThresholdChoice(shipped * 1.2, shipped, ThresholdState.CALIBRATED,
                                 0.94, 30, 30)):  # above it, raising not allowed
        with db.transaction(conn):
            clinic_thresholds.save(conn, model, backend, kept, 2.0)
        calibration.apply_kept(conn, runner, config.models)
        assert runner.thresholds["finding"] == shipped
    conn.close()


def test_a_clinicians_review_counts_when_the_hospital_judged_the_image_later(tmp_path):
    """The hospital's verdict is left out, but not the clinician's review before it: an
    alerted image that both judged still counts, as the clinician labelled it (leaving it
    out would drop the highest-scoring lesions and draw the threshold down)."""
    from firmware_app.storage import hospital_reviews

    _, conn, runner = _box_with_database(tmp_path)
    model, backend = runner.package.model_id, runner.backend_label
    _confirmed(conn, model, backend, [0.9, 0.2, 0.3], [0.01, 0.02])
    now = 5.0
    conn.execute("INSERT INTO studies(id, study_key, instances, max_probability, findings,"
                 " alert, warnings, received_at, updated_at, top_instance_id) VALUES"
                 " (1, '1.2.3', 1, 0.9, 1, 1, 0, ?, ?, 10000)", (now, now))
    with db.transaction(conn):
        hospital_reviews.add(conn, seq=1, study_key="1.2.3", study_ref="ref-1", alert_seq=1,
                             verdict="no_action", follow_up_months=None, note="",
                             reviewed_at=100.0)
    lesions, clear = clinic_thresholds.labelled_scores(conn, model, backend)
    assert sorted(lesions) == [0.2, 0.3, 0.9] and sorted(clear) == [0.01, 0.02]
    conn.close()


def test_the_audit_trail_says_the_threshold_that_was_in_use(tmp_path):
    """A kept threshold that no longer fits was not used: the next move is noted from the
    package's threshold the runner had, not from the stale kept one."""
    config, conn, runner = _box_with_database(tmp_path)
    shipped = runner.shipped_thresholds["finding"]
    model, backend = runner.package.model_id, runner.backend_label
    stale = ThresholdChoice(0.02, shipped * 1.1, ThresholdState.CALIBRATED, 0.94, 30, 30)
    with db.transaction(conn):
        clinic_thresholds.save(conn, model, backend, stale, 1.0)
    calibration.apply_kept(conn, runner, config.models)
    assert runner.thresholds["finding"] == shipped
    _confirmed(conn, model, backend, [0.02, 0.3, 0.5, 0.6, 0.7, 0.9], [0.001] * 6)
    choice = calibration.calibrate(config, conn, runner)
    assert choice.finding == pytest.approx(0.02)
    moved = conn.execute("SELECT detail FROM audit WHERE action = 'threshold_set'").fetchall()
    assert [row[0] for row in moved] == [
        f"finding {shipped:.4f} -> 0.0200 (calibrated; 6 lesions, 6 clear)"]
    conn.close()
