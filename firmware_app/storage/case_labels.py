"""The labels people gave the box's own images, with who gave them and when: what federated
fine-tuning trains on, and what never leaves the box (issue 60, decision 0056).

Two sources, read where they are kept (no copy):

* **a clinician's review** of an image's finding (``feedback``, the image as a whole:
  ``finding = -1``): *agree* labels the image as the box judged it, *disagree* as the
  opposite; *unsure* labels nothing. Given by the clinician's account, when they reviewed.
* **the hospital's verdict** on a study's alert (``hospital_reviews``, the latest per study):
  *refer* labels the image the alert was about (its model's most suspicious image of the
  study when the alert was sent) a lesion, *no action* labels it no lesion; *follow up* and
  *send the case* label nothing (yet). Given by the hospital, when its radiologist reviewed.

An image with several labels is labelled by the latest (a clinic doctor who looked again
after the hospital's verdict has the last word). :func:`hospital_disagrees` lists the
images where the hospital's verdict contradicts what the box said and no one at the clinic
has looked since: the doctor's list to confirm or correct.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from enum import Enum

from clinibox_common.contracts.downlink import HospitalVerdict
from clinibox_common.contracts.statuses import Verdict


class LabelSource(str, Enum):
    """Who gave a label."""

    CLINICIAN = "clinician"
    HOSPITAL = "hospital"


#: the hospital's verdicts that say whether there is a lesion (the others say nothing yet)
HOSPITAL_LABELS = {HospitalVerdict.REFER.value: True, HospitalVerdict.NO_ACTION.value: False}


@dataclass(frozen=True)
class CaseLabel:
    """One label of one image."""

    instance_id: int
    lesion: bool
    source: LabelSource
    given_by: str  # the clinician's account ('' once removed), or 'hospital'
    given_at: float
    model_id: str  # the package whose result the label judged
    box_said: bool  # whether that result was a finding


_CLINICIANS = (
    "SELECT f.instance_id, f.verdict, COALESCE(a.name, ''), f.at, r.model_id, r.finding"
    " FROM feedback f JOIN results r ON r.instance_id = f.instance_id"
    " LEFT JOIN accounts a ON a.id = f.account_id"
    " WHERE f.finding = -1 AND f.verdict IN (?, ?)")
# the latest verdict on each alert (an amended verdict names the same alert), and the image
# the alert was about (``alerted_studies.instance_id``, found by the alert's sequence number,
# which the verdict names: a study that alerted for two models has two alerts, two images);
# for an alert sent before the box kept it (v27), the study's most suspicious analysed image
# (``studies.top_instance_id``), unless it was received after the verdict (then it cannot be
# the one the verdict judged)
_HOSPITAL = (
    "SELECT r.instance_id, h.verdict, h.reviewed_at, r.model_id, r.finding"
    " FROM hospital_reviews h JOIN studies s ON s.study_key = h.study_key"
    " LEFT JOIN alerted_studies a ON a.seq = h.alert_seq AND a.study_key = h.study_key"
    " JOIN results r ON r.instance_id = COALESCE(a.instance_id, s.top_instance_id)"
    " JOIN instances i ON i.id = r.instance_id"
    "  AND (a.instance_id IS NOT NULL OR i.received_at <= h.received_at)"
    " WHERE h.seq = (SELECT MAX(seq) FROM hospital_reviews"
    "  WHERE study_key = h.study_key AND alert_seq = h.alert_seq)")


def clinician_labels(conn: sqlite3.Connection) -> list[CaseLabel]:
    """Every clinician's label of every image, oldest first."""
    return sorted((
        CaseLabel(int(i), bool(finding) == (verdict == Verdict.AGREE), LabelSource.CLINICIAN,
                  str(name), float(at), str(model), bool(finding))
        for i, verdict, name, at, model, finding in conn.execute(
            _CLINICIANS, (Verdict.AGREE.value, Verdict.DISAGREE.value))),
        key=lambda label: (label.given_at, label.instance_id))


def all_labels(conn: sqlite3.Connection) -> list[CaseLabel]:
    """Every label of every image, oldest first."""
    labels = clinician_labels(conn)
    labels += [
        CaseLabel(int(i), HOSPITAL_LABELS[verdict], LabelSource.HOSPITAL, "hospital",
                  float(at), str(model), bool(finding))
        for i, verdict, at, model, finding in conn.execute(_HOSPITAL)
        if verdict in HOSPITAL_LABELS]
    return sorted(labels, key=lambda label: (label.given_at, label.instance_id))


def image_labels(conn: sqlite3.Connection) -> dict[int, CaseLabel]:
    """Each labelled image's label: its latest."""
    latest: dict[int, CaseLabel] = {}
    for label in all_labels(conn):
        latest[label.instance_id] = label
    return latest


def labelled_objects(conn: sqlite3.Connection, name: str) -> list[tuple[str, int, bool]]:
    """(received object's path, key frame, lesion) of each labelled image a model named
    ``name`` (any version) judged, the latest label first: what the case file is made of."""
    labels = sorted((label for label in image_labels(conn).values()
                     if label.model_id.partition("@")[0] == name),
                    key=lambda label: -label.given_at)
    if not labels:
        return []
    kept = {int(i): (str(path), int(frame)) for i, path, frame in conn.execute(
        "SELECT i.id, i.spool_path, r.key_frame FROM instances i JOIN results r"
        " ON r.instance_id = i.id WHERE i.id IN (SELECT value FROM json_each(?))",
        (json.dumps([label.instance_id for label in labels]),))}
    return [(*kept[label.instance_id], label.lesion) for label in labels
            if label.instance_id in kept]


def hospital_disagrees(conn: sqlite3.Connection) -> list[CaseLabel]:
    """The hospital's labels that contradict the box's finding and that no clinician's
    review came after: the images for the clinic's doctor to confirm or correct."""
    return [label for label in image_labels(conn).values()
            if label.source == LabelSource.HOSPITAL and label.lesion != label.box_said]


@dataclass(frozen=True)
class ToConfirm:
    """One image of the doctor's list: its study, what the box said, what the hospital said."""

    study_id: int
    study_date: str
    description: str
    modality: str
    received_at: float
    probability: float
    box_said: bool
    hospital_verdict: str
    reviewed_at: float


#: the hospital's verdict that gave a label (:data:`HOSPITAL_LABELS` turned round)
_VERDICT_OF = {lesion: verdict for verdict, lesion in HOSPITAL_LABELS.items()}


def to_confirm(conn: sqlite3.Connection) -> list[ToConfirm]:
    """:func:`hospital_disagrees` with each image's study and the verdict that labelled it,
    newest verdict first."""
    waiting = {label.instance_id: label for label in hospital_disagrees(conn)}
    if not waiting:
        return []
    rows = conn.execute(
        "SELECT r.instance_id, s.id, s.study_date, s.study_description,"
        " COALESCE(s.modality, ''), s.received_at, r.probability, r.finding FROM results r"
        " JOIN instances i ON i.id = r.instance_id"
        " JOIN studies s ON s.study_key = i.study_instance_uid"
        " WHERE r.instance_id IN (SELECT value FROM json_each(?))",
        (json.dumps(sorted(waiting)),)).fetchall()
    found = [ToConfirm(int(a), str(b), str(c), str(d), float(e), float(f), bool(g),
                       _VERDICT_OF[waiting[int(i)].lesion], waiting[int(i)].given_at)
             for i, a, b, c, d, e, f, g in rows]
    return sorted(found, key=lambda row: (-row.reviewed_at, row.study_id))
