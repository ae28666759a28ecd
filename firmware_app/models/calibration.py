"""The clinic's own finding threshold (issue 60, decision 0057): set, kept and applied.

``[models] calibration = "keep_sensitivity"`` lets the box set the finding threshold of the
package it runs from this clinic's confirmed cases, by the rule of
``clinibox_common/contracts/clinic_threshold.py``; ``off`` keeps the package's. The choice is
kept per model and runtime (``storage/clinic_thresholds.py``: an INT8 artifact's scores are
not the FP32 one's), applied to the runner when it loads (:func:`apply_kept`, the service
and ``clinibox infer`` alike), set again every :data:`CALIBRATE_EVERY` analyses
(:class:`ThresholdWatch`), noted in the audit trail when it moves, and sent in the box's
status for the hospital's console.

Only the finding threshold moves: the alert threshold, the hospital's, stays the package's
(and bounds the clinic's from above).
"""

from __future__ import annotations

import logging
import sqlite3
import time

from clinibox_common.contracts.clinic_threshold import (
    ThresholdChoice,
    ThresholdState,
    allowed_range,
    choose_threshold,
)
from engine.inference.runner import ModelRunner
from firmware_app.models.install import audit_model
from firmware_app.settings.box import Config
from firmware_app.settings.models import ModelsConfig
from firmware_app.storage import clinic_thresholds, db
from firmware_app.storage.audit import SERVICE_ACTOR

log = logging.getLogger(__name__)

#: the box sets its threshold again after this many analyses of a model
CALIBRATE_EVERY = 20
#: a move smaller than this is not noted in the audit trail
NOTED_MOVE = 1e-4


def floor_sensitivity(runner: ModelRunner) -> float:
    """The package's sensitivity floor (``provenance.floors.sensitivity``; 0 when none)."""
    floors = (runner.package.manifest.get("provenance") or {}).get("floors") or {}
    value = floors.get("sensitivity", 0.0)
    return float(value) if isinstance(value, (int, float)) else 0.0


def target_sensitivity(runner: ModelRunner, models: ModelsConfig) -> float:
    """The share of confirmed lesions the clinic's threshold must find: the setting, else
    the running artifact's validated sensitivity, never below the package's floor."""
    validated = runner.validation.get("sensitivity")
    chosen = models.calibration_sensitivity or (
        float(validated) if isinstance(validated, (int, float)) else 0.0)
    return max(chosen, floor_sensitivity(runner))


def choose(conn: sqlite3.Connection, runner: ModelRunner, models: ModelsConfig) -> ThresholdChoice:
    """The threshold ``runner`` should use on this box now."""
    shipped = runner.shipped_thresholds
    package_finding = float(shipped.get("finding", 0.5))
    target = target_sensitivity(runner, models)
    if models.calibration == "off":
        return ThresholdChoice(package_finding, package_finding, ThresholdState.PACKAGE,
                               target, 0, 0)
    lesions, clear = clinic_thresholds.labelled_scores(conn, runner.package.model_id,
                                                       runner.backend_label)
    return choose_threshold(
        lesions, clear, package_finding=package_finding,
        alert=float(shipped.get("alert", 1.0)), target_sensitivity=target,
        floor_sensitivity=floor_sensitivity(runner), min_lesions=models.calibration_min_lesions,
        min_clear=models.calibration_min_clear, max_shift=models.calibration_max_shift,
        may_raise=models.calibration_raise)


def _use(runner: ModelRunner, finding: float) -> None:
    runner.thresholds = {**runner.shipped_thresholds, "finding": finding}


def within_bounds(kept: ThresholdChoice, runner: ModelRunner, models: ModelsConfig) -> bool:
    """Whether a kept threshold still belongs to this package as it ships and to today's
    settings (the package's threshold, the shift, the alert threshold, raising allowed)."""
    shipped = runner.shipped_thresholds
    package = float(shipped.get("finding", 0.5))
    low, high = allowed_range(package, float(shipped.get("alert", 1.0)),
                              models.calibration_max_shift, models.calibration_raise)
    return abs(kept.package_finding - package) < 1e-9 and \
        low - 1e-9 <= kept.finding <= high + 1e-9


def apply_kept(conn: sqlite3.Connection, runner: ModelRunner, models: ModelsConfig) -> None:
    """Give ``runner`` the threshold the box last set for it: the package's when calibration
    is off, when none was set, or when the kept one no longer fits (:func:`within_bounds`)."""
    kept = clinic_thresholds.read(conn, runner.package.model_id, runner.backend_label)
    use = kept is not None and models.calibration != "off" and \
        within_bounds(kept, runner, models)
    _use(runner, kept.finding if use and kept else runner.shipped_thresholds.get("finding", 0.5))


def calibrate(config: Config, conn: sqlite3.Connection, runner: ModelRunner) -> ThresholdChoice:
    """Set ``runner``'s threshold from the confirmed cases now, keep it, and note a move."""
    model_id, backend = runner.package.model_id, runner.backend_label
    # the threshold in use, not the kept one: a kept one that no longer fits was not used
    was = float(runner.thresholds.get("finding", runner.shipped_thresholds.get("finding", 0.5)))
    choice = choose(conn, runner, config.models)
    with db.transaction(conn):
        clinic_thresholds.save(conn, model_id, backend, choice, time.time())
    _use(runner, choice.finding)
    if abs(choice.finding - was) >= NOTED_MOVE:
        detail = (f"finding {was:.4f} -> {choice.finding:.4f} ({choice.state.value}; "
                  f"{choice.lesions} lesions, {choice.clear} clear)")
        log.info("model %s on %s: finding threshold %s", model_id, backend, detail)
        audit_model(config, "threshold_set", by=SERVICE_ACTOR, target=f"model:{model_id}",
                    detail=detail)
    return choice


class ThresholdWatch:
    """Sets each running model's threshold again every :data:`CALIBRATE_EVERY` analyses
    (the first analysis after a start included)."""

    def __init__(self, config: Config, conn: sqlite3.Connection) -> None:
        self.config, self.conn = config, conn
        self.analyses: dict[str, int] = {}

    def processed(self, runner: ModelRunner) -> None:
        """One analysis by ``runner`` completed."""
        key = f"{runner.package.model_id} {runner.backend_label}"
        count = self.analyses.get(key, 0)
        self.analyses[key] = count + 1
        if count % CALIBRATE_EVERY:
            return
        try:
            calibrate(self.config, self.conn, runner)
        except Exception:  # the threshold it has stands; the next turn tries again
            log.exception("the clinic's threshold of %s could not be set",
                          runner.package.model_id)
