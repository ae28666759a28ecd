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
"""

from __future__ import annotations

import logging
import time

from firmware_app.models.install import (
    UpdateRefused,
    audit_model,
    report_event,
    rollback,
    settle_orders,
)
from firmware_app.models.store import StoreState, Trial, store_for
from firmware_app.settings.box import Config
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

    @property
    def active(self) -> bool:
        """Whether the package this service runs is on trial."""
        return bool(self.version)

    def _roll_back(self, reason: str) -> bool:
        try:
            rollback(self.config, reason)
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

    def load_failed(self, reason: str) -> bool:
        """The package on trial did not load or failed its golden cases: roll back."""
        state = self.store.read()
        if self.config.models.version or state.trial is None or \
                state.trial.version != state.active:
            return False
        return self._roll_back(reason)

    def processed(self) -> None:
        """One analysis completed: count it, and end the trial when it has earned it."""
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
