"""The assessment of one instance: what the box may say about it, in four words.

* ``finding``: the model found something above its operating threshold;
* ``no_finding``: the model looked at an image it can judge and found nothing;
* ``not_assessable``: the image cannot be judged (blank, too dark, saturated,
  too small): its reason, and "rescan suggested", never "no suspicious area
  found";
* ``outside_validated_range``: the image is unlike what the model was
  validated on: neither an alert nor "no finding".

A frame is judged only when its quality allows; an instance is not
assessable when none of its analysed frames is.
"""

from __future__ import annotations

from clinibox_common.contracts.egress import ASSESSMENTS
from clinibox_common.contracts.reasons import ReasonCode
from clinibox_common.contracts.statuses import AssessmentKind

__all__ = [
    "ASSESSMENTS",
    "JUDGED",
    "NOT_ASSESSABLE_CODES",
    "UNJUDGED",
    "AssessmentKind",
    "frame_blockers",
    "is_judged",
    "shown_probability",
]
#: quality codes (``imaging/quality.py``) that make a frame impossible to judge
NOT_ASSESSABLE_CODES = (ReasonCode.BLANK, ReasonCode.TOO_DARK, ReasonCode.SATURATED,
                        ReasonCode.TOO_SMALL)


def frame_blockers(codes: list[str]) -> list[str]:
    """The quality codes of one frame that keep it from being judged, in a fixed order."""
    return [code for code in NOT_ASSESSABLE_CODES if code in codes]


#: assessments on which the model gave a result: its probability may be shown
JUDGED = (AssessmentKind.FINDING, AssessmentKind.NO_FINDING)
#: assessments on which the model gives no result: a doctor must read the image; its
#: probability is kept for the record (``probability_not_shown``) and never shown
UNJUDGED = (AssessmentKind.NOT_ASSESSABLE, AssessmentKind.OUTSIDE_VALIDATED_RANGE)

#: The clinical order of a worklist (and of a study's images): alerts, findings, images a
#: doctor must read because the model gives no result, then no finding.
BAND_ALERT = 0
BAND_FINDING = 1
BAND_DOCTOR_MUST_READ = 2
BAND_NO_FINDING = 3


def is_judged(assessment: str | None) -> bool:
    """True when the model gave a result for an image with this assessment."""
    return (assessment or AssessmentKind.NO_FINDING) in JUDGED


def shown_probability(assessment: str | None, probability: float | None) -> float | None:
    """The probability a person may read: None where the model gives no result."""
    return probability if is_judged(assessment) else None

