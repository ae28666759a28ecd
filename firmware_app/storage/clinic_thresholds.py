"""The clinic's own finding thresholds (``clinic_thresholds``): what the box set for each
model and runtime from its confirmed cases (``models/calibration.py``), and the scores of
those cases.
"""

from __future__ import annotations

import json
import sqlite3

from clinibox_common.contracts.clinic_threshold import ThresholdChoice, ThresholdState
from firmware_app.storage.case_labels import clinician_labels

_COLUMNS = ("finding, package_finding, state, target_sensitivity, lesions, clear, sensitivity,"
            " specificity")


def labelled_scores(conn: sqlite3.Connection, model_id: str,
                    backend: str) -> tuple[list[float], list[float]]:
    """The probabilities ``model_id`` on ``backend`` gave the images clinicians reviewed,
    split into (lesions, clear) by each image's latest clinician's label. The hospital's
    verdicts are left out, also on an image a clinician reviewed: the hospital sees only
    alerts, chosen by their score, and they would draw the threshold up."""
    # oldest first: the latest clinician's label of an image stays
    labels = {label.instance_id: label.lesion for label in clinician_labels(conn)
              if label.model_id == model_id}
    lesions: list[float] = []
    clear: list[float] = []
    for instance_id, probability in conn.execute(
            "SELECT instance_id, probability FROM results WHERE model_id = ? AND backend = ?"
            " AND instance_id IN (SELECT value FROM json_each(?))",
            (model_id, backend, json.dumps(sorted(labels)))):
        (lesions if labels[int(instance_id)] else clear).append(float(probability))
    return lesions, clear


def save(conn: sqlite3.Connection, model_id: str, backend: str, choice: ThresholdChoice,
         at: float) -> None:
    """Keep ``choice`` as ``model_id``'s threshold on ``backend``."""
    conn.execute(
        f"INSERT OR REPLACE INTO clinic_thresholds (model_id, backend, {_COLUMNS}, computed_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (model_id, backend, choice.finding, choice.package_finding, choice.state.value,
         choice.target_sensitivity, choice.lesions, choice.clear, choice.sensitivity,
         choice.specificity, at))


def _choice(row: tuple) -> ThresholdChoice:
    finding, package, state, target, lesions, clear, sensitivity, specificity = row
    return ThresholdChoice(float(finding), float(package), ThresholdState(state), float(target),
                           int(lesions), int(clear), sensitivity, specificity)


def read(conn: sqlite3.Connection, model_id: str, backend: str) -> ThresholdChoice | None:
    """``model_id``'s threshold on ``backend`` as the box last set it (None: never)."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM clinic_thresholds WHERE model_id = ?"
                       " AND backend = ?", (model_id, backend)).fetchone()
    return _choice(row) if row else None


def latest(conn: sqlite3.Connection, model_id: str) -> ThresholdChoice | None:
    """``model_id``'s threshold as the box last set it on any runtime (the one it runs)."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM clinic_thresholds WHERE model_id = ?"
                       " ORDER BY computed_at DESC LIMIT 1", (model_id,)).fetchone()
    return _choice(row) if row else None
