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

from firmware_app.contracts.egress import ASSESSMENTS

__all__ = ["ASSESSMENTS", "NOT_ASSESSABLE_CODES", "frame_blockers"]
#: quality codes (``imaging/quality.py``) that make a frame impossible to judge
NOT_ASSESSABLE_CODES = ("blank", "too_dark", "saturated", "too_small")


def frame_blockers(codes: list[str]) -> list[str]:
    """The quality codes of one frame that keep it from being judged, in a fixed order."""
    return [code for code in NOT_ASSESSABLE_CODES if code in codes]
