"""The trial of a newly installed model package, watched by the running service.

After ``clinibox model install`` the new package runs on trial. The service
rolls back to the kept previous package by itself, and queues a device event
for the hospital, when:

* the package does not load or fails its golden cases on the backend the
  service chose (``load_failed`` / ``golden_cases_failed``);
* the service starts and finds that the last run on trial never stopped
  cleanly: the process died under the new model (``worker_crashed``). A
  power cut during the trial looks the same, and the box then goes back to
  the package it knew to be good: the safe side;
* the worker raises ``MAX_WORKER_ERRORS`` processing errors in a row with it
  (``worker_errors``).

The trial ends, and the package is kept, after ``[models] trial_jobs``
analyses or ``trial_hours`` of running; a ``model_kept`` device event (naming the rollout that
brought the package, if one did) tells the hospital.

After the trial, for ``[models] drift_watch_days`` from the install, the same service watches
the package's disagreement and score drift on this box (``drift_watch.py``) and rolls it
back by itself, or reports it, when one crosses its bound.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from firmware_app.models.drift_watch import (
    CHECK_EVERY,
    CONFIRMATIONS,
    REPORT_EVERY_S,
    installed_at,
    measure,
    watching,
)
from firmware_app.models.install import (
    UpdateRefused,
    audit_model,
    report_event,
    rollback,
    settle_orders,
)
from firmware_app.models.store import StoreState, Trial, store_for
from firmware_app.settings.box import Config
from firmware_app.storage import db
from firmware_app.storage.audit import SERVICE_ACTOR

log = logging.getLogger(__name__)

#: below ``[worker] max_attempts`` (3), so the job that met the errors is retried afterwards
MAX_WORKER_ERRORS = 2


class ModelTrial:
    """The service's side of a package's trial (a no-op when no trial is running)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = store_for(config)
        self.version = ""
        self.errors = 0
        #: set when this run rolled back under the worker's feet (it stops taking jobs)
        self.rolled_back = ""
        #: the drift watch: the package watched (name@version), since its install, analyses
        self.watched, self.watched_since, self.analyses = "", 0.0, 0
        #: checks in a row that found a bound crossed
        self.crossings = 0

    @property
    def active(self) -> bool:
        """Whether the package this service runs is on trial."""
        return bool(self.version)

    def _roll_back(self, reason: str, expect: str = "") -> bool:
        try:
            rollback(self.config, reason, expect=expect)
        except UpdateRefused as exc:
            log.error("the model on trial failed (%s) but cannot be rolled back: %s", reason, exc)
            return False
        self.version = ""
        return True

    def before_load(self) -> str:
        """At start: roll back after an unclean end of a trial run; return the reason or ''."""
        if self.config.models.version:
            return ""
        state = self.store.read()
        trial = state.trial
        if trial is None or trial.version != state.active:
            return ""
        if trial.running:
            log.error("the last run of model %s on trial did not stop cleanly", trial.version)
            return "worker_crashed" if self._roll_back("worker_crashed") else ""
        return ""

    def started(self, version: str) -> None:
        """The service loaded ``version``: if it is on trial, mark the run as started."""
        def mark(state: StoreState) -> bool:
            trial = state.trial
            if trial is None or trial.version != version or state.active != version:
                return False
            trial.running = True
            return True

        if not self.config.models.version and self.store.read().trial is not None:
            self.version = version if self.store.update(mark) else ""
        if self.version:
            log.info("model %s is on trial (%d analyses or %.1f h)", version,
                     self.config.models.trial_jobs, self.config.models.trial_hours)
        state = self.store.read()
        since = installed_at(state.history, version) if state.active == version else None
        if watching(self.config.models, since):
            self.watched, self.watched_since = f"{self.config.models.name}@{version}", since

    def load_failed(self, reason: str) -> bool:
        """The package on trial did not load or failed its golden cases: roll back."""
        state = self.store.read()
        if self.config.models.version or state.trial is None or \
                state.trial.version != state.active:
            return False
        return self._roll_back(reason)

    def processed(self) -> None:
        """One analysis completed: count it, watch the package's drift, and end the trial
        when it has earned it."""
        self._watch_drift()
        if not self.version:
            return
        self.errors = 0
        limit, hours = self.config.models.trial_jobs, self.config.models.trial_hours
        kept: list[Trial] = []

        def count(state: StoreState) -> bool:
            trial = state.trial
            if trial is None or trial.version != self.version:
                return True
            trial.jobs += 1
            if trial.jobs >= limit or time.time() - trial.since >= hours * 3600:
                state.trial = None
                state.note("kept", version=self.version, jobs=trial.jobs)
                kept.append(trial)
                return True
            return False

        if self.store.update(count):
            if kept:
                settle_orders(self.config, self.version, "kept")
                model_id = f"{self.config.models.name}@{self.version}"
                audit_model(self.config, "model_kept", by=SERVICE_ACTOR,
                            target=f"model:{model_id}",
                            detail=f"trial passed after {kept[-1].jobs} analyses")
                report_event(self.config, "model_kept", "trial_passed", model_id,
                             running=model_id, rollout=kept[-1].rollout,
                             note=f"model {model_id} passed its trial and is kept")
            log.info("model %s passed its trial and is kept", self.version)
            self.version = ""

    def _watch_drift(self) -> None:
        """Every CHECK_EVERY analyses within the watch: measure, and act on a crossed bound."""
        if not self.watched or self.rolled_back:
            return
        self.analyses += 1
        if self.analyses % CHECK_EVERY:
            return
        models = self.config.models
        if not watching(models, self.watched_since):
            self.watched = ""
            return
        try:
            conn = db.open_database(self.config.database_path)
            try:
                figures = measure(conn, self.watched, self.watched_since, models.drift_window)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            log.error("the drift watch of %s could not read the results: %s", self.watched, exc)
            return
        reason = figures.crossed(models)
        self.crossings = self.crossings + 1 if reason else 0
        if self.crossings < CONFIRMATIONS:
            return
        if self.crossings == CONFIRMATIONS:
            log.warning("model %s crossed its %s bound on this box (%d of %d reviews disagree; "
                        "PSI %s)", self.watched, reason, figures.disagreed, figures.reviews,
                        "-" if figures.psi is None else f"{figures.psi:.2f}")
        version = self.watched.rsplit("@", 1)[-1]
        if models.drift_action == "roll_back" and self.store.read().previous \
                and self._roll_back(reason, expect=version):
            self.rolled_back, self.watched = reason, ""
            return
        if report_event(self.config, "model_drift", reason, self.watched,
                        once_per_s=REPORT_EVERY_S,
                        note=f"model {self.watched} crossed its {reason} bound; kept for a "
                             "person to decide"):
            audit_model(self.config, "model_drift", by=SERVICE_ACTOR,
                        target=f"model:{self.watched}", detail=reason)

    def worker_error(self) -> bool:
        """A processing error under the package on trial; roll back after too many in a row."""
        if not self.version:
            return False
        self.errors += 1
        if self.errors < MAX_WORKER_ERRORS or not self._roll_back("worker_errors"):
            return False
        self.rolled_back = "worker_errors"
        return True

    def stopped_cleanly(self) -> None:
        """A clean stop: a later start is not a crash."""
        if not self.version:
            return

        def clear(state: StoreState) -> None:
            if state.trial is not None and state.trial.version == self.version:
                state.trial.running = False

        self.store.update(clear)
