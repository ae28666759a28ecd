"""A clinic's own operating threshold: the rule that sets it from the clinic's confirmed
cases, and the codes the box and the hospital read back (issue 60, decision 0057).

A clinic whose machine images differently moves the model's scores: at the package's
threshold it may miss lesions the validation set caught, or flag more clear images than it
should. The box may set the finding threshold of the package it runs from its own images
that people confirmed (``storage/case_labels.py``): the highest threshold that still finds
the package's validated share of the confirmed lesions (its *target sensitivity*). Bounded:

* it waits for ``min_lesions`` confirmed lesions and ``min_clear`` confirmed clear images
  (:attr:`ThresholdState.TOO_FEW_CASES`: the package's threshold stands);
* a threshold above the package's (fewer findings) is taken only when the clinic allows it
  (``may_raise``: ``[models] calibration_raise``), and only while the one-sided 95 % Wilson
  lower bound of its sensitivity on those lesions stays at or above the package's floor
  (``provenance.floors.sensitivity``): a handful of lesions never lowers the sensitivity
  the package was signed with. Reviewed cases are not a random sample (a missed lesion is
  confirmed only when someone reviews an image without a finding), so by default the box
  only ever lowers its threshold;
* it moves at most ``max_shift`` on the logit scale from the package's threshold, and never
  above the alert threshold (:attr:`ThresholdState.BOUNDED` when a bound held it).

The rule is :func:`choose_threshold`; the numbers in, the threshold and its state out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from clinibox_common.i18n import N_

#: z of a one-sided 95 % bound
Z_95 = 1.6449


class ThresholdState(str, Enum):
    """Where a box's finding threshold comes from (a code, sent in the status)."""

    #: the package's own: the clinic chose not to calibrate ([models] calibration = "off")
    PACKAGE = "package"
    #: the package's own, until enough confirmed cases
    TOO_FEW_CASES = "too_few_cases"
    #: the clinic's, set by the rule
    CALIBRATED = "calibrated"
    #: the clinic's, held by a bound (the largest shift, the alert threshold, the floor)
    BOUNDED = "bounded"


THRESHOLD_STATES = tuple(state.value for state in ThresholdState)
#: what each state means, for a person (translated where shown)
THRESHOLD_STATE_WORDS = {
    ThresholdState.PACKAGE.value: N_("the package's"),
    ThresholdState.TOO_FEW_CASES.value: N_("the package's, too few confirmed cases yet"),
    ThresholdState.CALIBRATED.value: N_("this clinic's own"),
    ThresholdState.BOUNDED.value: N_("this clinic's own, held at a bound"),
}


@dataclass(frozen=True)
class ThresholdChoice:
    """What the rule chose, and from what."""

    finding: float
    package_finding: float
    state: ThresholdState
    target_sensitivity: float
    lesions: int
    clear: int
    #: the sensitivity and specificity at ``finding`` on the confirmed cases (None: too few)
    sensitivity: float | None = None
    specificity: float | None = None


def logit(p: float) -> float:
    """log(p / (1 − p)), with p kept inside (0, 1)."""
    p = min(max(p, 1e-6), 1.0 - 1e-6)
    return math.log(p / (1.0 - p))


def sigmoid(x: float) -> float:
    """1 / (1 + e^−x)."""
    return 1.0 / (1.0 + math.exp(-x))


def wilson_lower(found: int, total: int, z: float = Z_95) -> float:
    """The Wilson score interval's lower bound of the share ``found / total``."""
    if total <= 0:
        return 0.0
    share = found / total
    centre = share + z * z / (2 * total)
    spread = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total))
    return max(0.0, (centre - spread) / (1 + z * z / total))


def share_at(scores: Sequence[float], threshold: float, above: bool) -> float:
    """The share of ``scores`` at or above ``threshold`` (``above``), or below it."""
    if not scores:
        return 0.0
    hits = sum(1 for s in scores if (s >= threshold) == above)
    return hits / len(scores)


def allowed_range(package_finding: float, alert: float, max_shift: float,
                  may_raise: bool) -> tuple[float, float]:
    """The lowest and highest finding threshold a clinic may have: ``max_shift`` from the
    package's on the logit scale, never above the alert threshold, and above the package's
    only with ``may_raise``."""
    low = sigmoid(logit(package_finding) - max_shift)
    high = sigmoid(logit(package_finding) + max_shift) if may_raise else package_finding
    return low, min(high, alert)


def choose_threshold(lesions: Sequence[float], clear: Sequence[float], *,
                     package_finding: float, alert: float, target_sensitivity: float,
                     floor_sensitivity: float, min_lesions: int, min_clear: int,
                     max_shift: float, may_raise: bool = False) -> ThresholdChoice:
    """The clinic's finding threshold from the scores of its confirmed ``lesions`` and
    ``clear`` images (the module's rule); above the package's only with ``may_raise``."""
    common = {"package_finding": package_finding, "target_sensitivity": target_sensitivity,
              "lesions": len(lesions), "clear": len(clear)}
    if not target_sensitivity > 0:  # no sensitivity to keep: nothing to set it by
        return ThresholdChoice(package_finding, state=ThresholdState.PACKAGE, **common)
    if len(lesions) < min_lesions or len(clear) < min_clear:
        return ThresholdChoice(package_finding, state=ThresholdState.TOO_FEW_CASES, **common)
    ordered = sorted(lesions)
    total = len(ordered)
    # the most lesions one may miss and still find the target share of them
    misses = max(0, min(total - 1, math.floor((1.0 - target_sensitivity) * total + 1e-9)))
    state = ThresholdState.CALIBRATED
    chosen = ordered[misses]
    while chosen > package_finding and \
            wilson_lower(sum(1 for s in ordered if s >= chosen), total) < floor_sensitivity:
        if misses == 0:
            chosen, state = package_finding, ThresholdState.BOUNDED
            break
        misses -= 1  # the bound guards a raise only: it never takes it below the package's
        chosen, state = max(ordered[misses], package_finding), ThresholdState.BOUNDED
    low, high = allowed_range(package_finding, alert, max_shift, may_raise)
    if not low <= chosen <= high:
        chosen, state = min(max(chosen, low), high), ThresholdState.BOUNDED
    return ThresholdChoice(chosen, state=state, **common,
                           sensitivity=share_at(lesions, chosen, above=True),
                           specificity=share_at(clear, chosen, above=False))
