"""Studies a clinician disagreed with, as the technician lists and exports them (the box database).

A study is listed when at least one of its findings (or one of its images as
a whole) carries a ``disagree`` verdict. Each of its processed images comes
with the model's output (model id, assessment, probability, finding, lesion
records) and the clinicians' verdicts on it, so the export can write them
beside the de-identified images (``dicom_out/disagreements.py``). A study
counts as exported when an export whose target starts with
:data:`TARGET_PREFIX` was recorded for it (``storage/exports.py``).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from clinibox_common.contracts.statuses import Verdict

#: what the ``exports`` record's target (and so the audit detail) of these exports begins with
TARGET_PREFIX = "disagreements"


@dataclass(frozen=True)
class ImageOpinion:
    """One processed image: the model's output on it and the clinicians' verdicts."""

    instance_id: int
    model_id: str
    assessment: str
    probability: float
    finding: bool
    lesions: list[dict[str, Any]]
    #: finding index (-1: the image as a whole) -> the verdicts given on it
    verdicts: dict[int, list[str]]

    @property
    def verdict(self) -> str:
        """One verdict for the image: the verdict on the image as a whole (-1, the latest)
        when there is one; else ``agree`` when any finding was agreed with, ``disagree``
        when findings were only disagreed with, otherwise ``unsure`` (or ``""``: none
        given)."""
        if self.verdicts.get(-1):
            return self.verdicts[-1][-1]
        given = {v for finding, values in self.verdicts.items() if finding >= 0 for v in values}
        for verdict in (Verdict.AGREE, Verdict.DISAGREE):
            if verdict in given:
                return verdict
        return Verdict.UNSURE if given else ""


@dataclass
class DisagreementCase:
    """One study with a ``disagree`` verdict, for the technician's list and the export."""

    study_id: int
    study_key: str
    study_date: str
    received_at: float
    modality: str
    model_id: str
    assessment: str
    probability: float
    last_verdict_at: float
    exported: bool
    images: list[ImageOpinion] = field(default_factory=list)


def list_cases(conn: sqlite3.Connection, since: float | None = None) -> list[DisagreementCase]:
    """Studies with a ``disagree`` verdict (given at or after ``since``), newest verdict first."""
    rows = conn.execute(
        "SELECT s.id, s.study_key, s.study_date, s.received_at, MAX(f.at) AS last_at"
        " FROM feedback f JOIN instances i ON i.id = f.instance_id"
        " JOIN studies s ON s.study_key = i.study_instance_uid"
        " WHERE f.verdict = ? AND f.at >= ?"
        " GROUP BY s.id ORDER BY last_at DESC, s.id DESC",
        (Verdict.DISAGREE, since if since is not None else 0.0)).fetchall()
    exported = _exported_keys(conn)
    cases = []
    for row in rows:
        images = _images(conn, str(row[1]))
        top = max(images, key=lambda image: image.probability) if images else None
        modalities = sorted({m for m, in conn.execute(
            "SELECT DISTINCT modality FROM instances WHERE study_instance_uid = ?"
            " AND modality IS NOT NULL AND modality != ''", (row[1],))})
        cases.append(DisagreementCase(
            study_id=int(row[0]), study_key=str(row[1]), study_date=str(row[2] or ""),
            received_at=float(row[3]), modality="/".join(modalities),
            model_id=top.model_id if top else "", assessment=top.assessment if top else "",
            probability=top.probability if top else 0.0, last_verdict_at=float(row[4]),
            exported=str(row[1]) in exported, images=images))
    return cases


def _exported_keys(conn: sqlite3.Connection) -> set[str]:
    """Study keys with a recorded disagreement export."""
    return {str(key) for key, in conn.execute(
        "SELECT DISTINCT study_key FROM exports WHERE target LIKE ?", (TARGET_PREFIX + "%",))}


def _images(conn: sqlite3.Connection, study_key: str) -> list[ImageOpinion]:
    """The study's processed images with results, in the order the export writes them."""
    images = []
    for row in conn.execute(
            "SELECT i.id, r.model_id, r.assessment, r.probability, r.finding, r.lesions_json"
            " FROM instances i JOIN results r ON r.instance_id = i.id"
            " WHERE i.study_instance_uid = ? ORDER BY i.received_at, i.id", (study_key,)):
        verdicts: dict[int, list[str]] = {}
        for finding, verdict in conn.execute(
                "SELECT finding, verdict FROM feedback WHERE instance_id = ?"
                " ORDER BY finding, at, id", (row[0],)):
            verdicts.setdefault(int(finding), []).append(str(verdict))
        images.append(ImageOpinion(int(row[0]), str(row[1]), str(row[2]), float(row[3]),
                                   bool(row[4]), json.loads(row[5] or "[]"), verdicts))
    return images
