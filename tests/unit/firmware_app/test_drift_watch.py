"""Drift that acts: a package the box installed is rolled back by itself, or reported for a
person, when clinicians disagree with too many of its findings or its confidences drift
(the console's own measures, on this box's results)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from clinibox_common.contracts.drift import histogram, psi
from firmware_app.models.drift_watch import CHECK_EVERY, CONFIRMATIONS, DriftFigures, measure
from firmware_app.models.install import install
from firmware_app.models.store import store_for
from firmware_app.models.trial import ModelTrial
from firmware_app.settings.box import Config, from_dict
from firmware_app.storage import db
from tests.model_packages import last_device_event, make_package

NEW = "clinibox-demo-lesion@1.1.0"


def _config(tmp_path: Path, **models) -> Config:
    config = from_dict({"storage": {"state_dir": str(tmp_path / "state")},
                        "runtime": {"backend": "onnxruntime", "precision": "fp32"},
                        "models": {"trial_jobs": 1, "drift_min_reviews": 10,
                                   "drift_window": 20, **models}})
    install(config, make_package(tmp_path / "packages", "1.1.0"))
    return config


def _results(conn: sqlite3.Connection, model_id: str, probabilities: list[float],
             first_id: int, at: float) -> list[int]:
    ids = []
    for k, p in enumerate(probabilities):
        i = first_id + k
        conn.execute("INSERT INTO instances(id, local_id, source, spool_path, size_bytes, status,"
                     " received_at, updated_at) VALUES (?, ?, 'dicom', '', 1, 'processed', ?, ?)",
                     (i, f"local-{i}", at, at))
        conn.execute("INSERT INTO results(instance_id, model_id, backend, probability, finding,"
                     " alert, findings_json, warnings_json, key_frame, frames_inferred,"
                     " timings_json, created_at) VALUES (?, ?, 'onnxruntime', ?, ?, 0, '[]',"
                     " '[]', 0, 1, '{}', ?)", (i, model_id, p, int(p > 0.5), at + k * 0.001))
        ids.append(i)
    return ids


def _reviews(conn: sqlite3.Connection, ids: list[int], disagree: int, at: float) -> None:
    for k, i in enumerate(ids):
        conn.execute("INSERT INTO feedback(instance_id, finding, verdict, at) VALUES (?, -1, ?, ?)",
                     (i, "disagree" if k < disagree else "agree", at))


def _box_db(config: Config) -> sqlite3.Connection:
    conn = db.open_database(config.database_path)
    conn.execute("PRAGMA foreign_keys = OFF")
    return conn


def _analyses(trial: ModelTrial, count: int = CHECK_EVERY) -> None:
    for _ in range(count):
        trial.processed()


def test_the_bounds_need_their_evidence_first():
    from firmware_app.settings.models import ModelsConfig
    bounds = ModelsConfig(drift_max_disagreement=0.4, drift_min_reviews=10, drift_max_psi=0.5)
    assert DriftFigures(5, 9, None).crossed(bounds) == ""  # too few reviews to judge
    assert DriftFigures(4, 10, None).crossed(bounds) == ""  # 40 %: at the bound, not over
    assert DriftFigures(5, 10, None).crossed(bounds) == "disagreement"
    assert DriftFigures(0, 10, 0.49).crossed(bounds) == ""
    assert DriftFigures(0, 10, 0.51).crossed(bounds) == "score_drift"


def test_measure_reads_only_the_package_since_its_install(tmp_path):
    config = _config(tmp_path)
    since = time.time() - 60
    conn = _box_db(config)
    with db.transaction(conn):
        old = _results(conn, "clinibox-demo-lesion@1.0.0", [0.9] * 12, 1, since - 3600)
        _reviews(conn, old, disagree=12, at=since - 100)  # the old package's: not counted
        # the same version's results from an earlier install, reviewed late: not counted
        before = _results(conn, NEW, [0.9] * 5, 50, since - 7200)
        _reviews(conn, before, disagree=5, at=since + 30)
        first = _results(conn, NEW, [0.1] * 20, 100, since + 1)
        latest = _results(conn, NEW, [0.9] * 20, 200, since + 10)
        _reviews(conn, first[:10], disagree=3, at=since + 20)
    figures = measure(conn, NEW, since, window=20)
    conn.close()
    assert (figures.disagreed, figures.reviews) == (3, 10)
    assert figures.psi == pytest.approx(psi(histogram([0.1] * 20), histogram([0.9] * 20)))
    assert latest  # both windows were full


@pytest.mark.slow
def test_a_package_clinicians_disagree_with_rolls_itself_back(tmp_path):
    config = _config(tmp_path)
    trial = ModelTrial(config)
    trial.started("1.1.0")
    _analyses(trial, 1)  # the trial (one analysis) passes: kept, still watched
    assert store_for(config).read().trial is None
    since = store_for(config).read().history[-2]["at"]
    conn = _box_db(config)
    with db.transaction(conn):
        ids = _results(conn, NEW, [0.8] * 12, 1, since + 1)
        _reviews(conn, ids, disagree=6, at=since + 2)  # 6 of 12 disagree: over 40 %
    conn.close()
    _analyses(trial, (CONFIRMATIONS - 1) * CHECK_EVERY)  # crossed, not yet confirmed
    assert store_for(config).read().active == "1.1.0"
    _analyses(trial, CHECK_EVERY - 1)
    state = store_for(config).read()
    assert state.active == "1.0.0" and trial.rolled_back == "disagreement"
    event = last_device_event(config.database_path)
    assert (event["event"], event["reason"], event["subject_model"]) == (
        "model_rolled_back", "disagreement", NEW)


@pytest.mark.slow
def test_reported_for_a_person_when_so_configured_and_only_once_a_day(tmp_path):
    config = _config(tmp_path, drift_action="report")
    trial = ModelTrial(config)
    trial.started("1.1.0")
    since = store_for(config).read().history[-1]["at"]
    conn = _box_db(config)
    with db.transaction(conn):
        _results(conn, NEW, [0.05] * 20, 1, since + 1)
        _results(conn, NEW, [0.95] * 20, 100, since + 5)  # its confidences moved
    conn.close()
    _analyses(trial, 2 * CONFIRMATIONS * CHECK_EVERY)
    assert store_for(config).read().active == "1.1.0" and not trial.rolled_back
    event = last_device_event(config.database_path)
    assert (event["event"], event["reason"], event["subject_model"]) == (
        "model_drift", "score_drift", NEW)
    conn = sqlite3.connect(config.database_path)
    drift_events = conn.execute("SELECT COUNT(*) FROM outbox WHERE kind='event' AND payload"
                                " LIKE '%model_drift%'").fetchone()[0]
    audited = conn.execute("SELECT COUNT(*) FROM audit WHERE action='model_drift'"
                           ).fetchone()[0]
    conn.close()
    assert drift_events == 1 and audited == 1


@pytest.mark.slow
def test_nothing_is_watched_past_the_window_or_when_off(tmp_path):
    config = _config(tmp_path, drift_action="off")
    trial = ModelTrial(config)
    trial.started("1.1.0")
    assert trial.watched == ""
    config = _config(tmp_path / "other", drift_watch_days=0.01)
    state_file = store_for(config)

    def age(state) -> None:
        for entry in state.history:
            entry["at"] = entry["at"] - 86400  # installed a day ago
    state_file.update(age)
    trial = ModelTrial(config)
    trial.started("1.1.0")
    assert trial.watched == ""
