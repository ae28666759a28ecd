"""The trial of a newly installed package: kept after enough analyses, rolled back after a
crash or repeated worker errors; a clean stop is not a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_app.models.install import install
from firmware_app.models.store import store_for
from firmware_app.models.trial import MAX_WORKER_ERRORS, ModelTrial
from firmware_app.settings.box import Config, from_dict
from tests.model_packages import last_device_event, make_package


@pytest.fixture
def config(tmp_path: Path) -> Config:
    config = from_dict({"storage": {"state_dir": str(tmp_path / "state")},
                        "runtime": {"backend": "onnxruntime", "precision": "fp32"},
                        "models": {"trial_jobs": 3}})
    install(config, make_package(tmp_path / "packages", "1.1.0"))
    return config


def last_event(config: Config) -> dict:
    return last_device_event(config.database_path)


@pytest.mark.slow
def test_the_trial_ends_after_enough_analyses(config):
    trial = ModelTrial(config)
    assert trial.before_load() == ""
    trial.started("1.1.0")
    assert trial.active and store_for(config).read().trial.running
    for _ in range(2):
        trial.processed()
    assert store_for(config).read().trial.jobs == 2
    trial.processed()
    state = store_for(config).read()
    assert state.trial is None and state.active == "1.1.0" and not trial.active
    assert state.history[-1]["action"] == "kept"
    trial.processed()  # after the trial: nothing to count
    assert store_for(config).read().trial is None


@pytest.mark.slow
def test_an_unclean_end_of_a_trial_run_rolls_back_at_the_next_start(config):
    ModelTrial(config).started("1.1.0")  # the service started the new model …
    # … and died (no stopped_cleanly): the next start goes back and tells the hospital
    assert ModelTrial(config).before_load() == "worker_crashed"
    state = store_for(config).read()
    assert (state.active, state.trial) == ("1.0.0", None)
    event = last_event(config)
    assert (event["event"], event["reason"], event["subject_model"], event["model"]) == (
        "model_rolled_back", "worker_crashed", "clinibox-demo-lesion@1.1.0",
        "clinibox-demo-lesion@1.0.0")


@pytest.mark.slow
def test_a_clean_stop_during_the_trial_is_not_a_crash(config):
    trial = ModelTrial(config)
    trial.started("1.1.0")
    trial.processed()
    trial.stopped_cleanly()
    assert not store_for(config).read().trial.running
    assert ModelTrial(config).before_load() == ""
    assert store_for(config).read().active == "1.1.0"


@pytest.mark.slow
def test_repeated_worker_errors_roll_back(config):
    trial = ModelTrial(config)
    trial.started("1.1.0")
    for _ in range(MAX_WORKER_ERRORS - 1):
        assert not trial.worker_error()
    trial.processed()  # a success in between resets the count
    for _ in range(MAX_WORKER_ERRORS - 1):
        assert not trial.worker_error()
    assert trial.worker_error()
    assert trial.rolled_back == "worker_errors"
    assert store_for(config).read().active == "1.0.0"
    assert last_event(config)["reason"] == "worker_errors"


@pytest.mark.slow
def test_a_load_failure_rolls_back_only_a_package_on_trial(config):
    trial = ModelTrial(config)
    assert trial.load_failed("golden_cases_failed")
    assert store_for(config).read().active == "1.0.0"
    assert last_event(config)["reason"] == "golden_cases_failed"
    # the package now running is not on trial: a failure there is not rolled back
    assert not ModelTrial(config).load_failed("load_failed")
    assert store_for(config).read().active == "1.0.0"


def _audit(config: Config) -> list[tuple[str, str, str, str]]:
    from firmware_app.storage import db
    from firmware_app.storage.audit_query import AuditQuery, read_rows

    conn = db.open_database(config.database_path)
    try:
        return [(r.action, r.account, r.target, r.detail)
                for r in read_rows(conn, AuditQuery(), newest_first=False)]
    finally:
        conn.close()


@pytest.mark.slow
def test_the_service_s_own_model_changes_are_in_the_audit_trail(config):
    from firmware_app.storage.audit import SERVICE_ACTOR

    trial = ModelTrial(config)
    trial.started("1.1.0")
    for _ in range(3):
        trial.processed()
    assert _audit(config)[-1] == ("model_kept", SERVICE_ACTOR,
                                  "model:clinibox-demo-lesion@1.1.0",
                                  "trial passed after 3 analyses")
    assert [row[0] for row in _audit(config)] == ["model_installed", "model_kept"]


@pytest.mark.slow
def test_a_failed_trial_rolled_back_by_the_service_names_the_service(config):
    from firmware_app.storage.audit import SERVICE_ACTOR

    assert ModelTrial(config).load_failed("golden_cases_failed")
    assert _audit(config)[-1] == ("model_rolled_back", SERVICE_ACTOR,
                                  "model:clinibox-demo-lesion@1.0.0",
                                  "from clinibox-demo-lesion@1.1.0 (golden_cases_failed)")


@pytest.mark.slow
def test_a_trial_that_passes_says_kept_in_the_update_table(config):
    """The hospital's rollout row of a package whose trial passed says "installed and kept",
    no longer "installed, on trial"."""
    from firmware_app.storage import db, model_offers

    conn = db.open_database(config.database_path)
    try:
        with db.transaction(conn):
            model_offers.add(conn, seq=1, kind="rollout", step="on_trial", done=True,
                             payload={"rollout": 4, "name": config.models.name,
                                      "version": "1.1.0"})
    finally:
        conn.close()
    trial = ModelTrial(config)
    trial.started("1.1.0")
    for _ in range(3):
        trial.processed()
    conn = db.open_database(config.database_path)
    try:
        kept = model_offers.get(conn, 1)
    finally:
        conn.close()
    assert kept is not None and (kept.step, kept.reason) == ("kept", "")
