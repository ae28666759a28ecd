"""Is a box still seeing what its model was validated on? Drift signals from summaries.

Two signals, both from the hourly summaries a box sends:

* the population stability index (PSI) between a baseline window (the first
  summaries a model sent on that box) and the recent window, for the model's
  confidence histogram and the input intensity histogram;
* how often clinicians disagreed with the findings recently.

One rule for both places that judge drift, the console's mark (``central/fleet.py``, a
drift point per summary) and ``clinibox central report``'s warning: :func:`windows`
picks the two windows, :func:`figures` judges them. The recent window is the latest
``[health] recent_summaries`` summaries; the baseline is the first
``baseline_summaries`` summaries of the model on that box that come before the recent
window, and only a whole one counts: with fewer, the histograms are not compared yet
(not enough history for a fair comparison) and only the clinicians' disagreement is
judged.

PSI and the histograms are ``clinibox_common/contracts/drift.py``'s, the same measures the box
watches a newly installed package with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from central.config import HealthConfig
from clinibox_common.contracts.drift import EPSILON as EPSILON  # re-exported
from clinibox_common.contracts.drift import psi
from clinibox_common.contracts.statuses import Verdict
from clinibox_common.i18n import N_, gettext

#: Reviews needed in the recent window before the disagreement rate is judged.
MIN_REVIEWS = 10

_HISTOGRAMS = (
    ("confidence_histogram", "psi_confidence", N_("model confidence")),
    ("intensity_histogram", "psi_intensity", N_("image intensity")),
)


def windows(first: Sequence[tuple[int, Mapping[str, Any]]],
            latest: Sequence[tuple[int, Mapping[str, Any]]],
            health: HealthConfig) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """The (baseline, recent) summary payloads the drift rule compares, oldest first.

    ``first`` are a model's first ``health.baseline_summaries`` summaries on a box and
    ``latest`` its latest ``health.recent_summaries``, each as (sequence number, payload)
    in any order. The baseline keeps the first ones that come before the recent window,
    and is empty unless a whole ``baseline_summaries`` of them are left.
    """
    recent = sorted(latest, key=lambda item: item[0])
    start = recent[0][0] if recent else None
    baseline = sorted((item for item in first if start is None or item[0] < start),
                      key=lambda item: item[0])
    if len(baseline) < health.baseline_summaries:
        baseline = []  # not enough history yet for a fair comparison
    return [payload for _, payload in baseline], [payload for _, payload in recent]


def summed_histogram(summaries: Iterable[Mapping[str, Any]], name: str) -> list[int]:
    """The bin-wise sum of histogram ``name`` over ``summaries`` (empty when none)."""
    total: list[int] = []
    for summary in summaries:
        counts = summary.get(name)
        if not isinstance(counts, list):
            continue
        if not total:
            total = [0] * len(counts)
        if len(counts) == len(total):
            total = [t + int(c) for t, c in zip(total, counts, strict=True)]
    return total


def disagreement(summaries: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """(disagreements, reviews) summed over the summaries' clinician feedback."""
    agree = disagree = 0
    for summary in summaries:
        feedback = summary.get("feedback") or {}
        agree += int(feedback.get(Verdict.AGREE, 0))
        disagree += int(feedback.get(Verdict.DISAGREE, 0))
    return disagree, agree + disagree


def figures(baseline: Sequence[Mapping[str, Any]], recent: Sequence[Mapping[str, Any]],
            health: HealthConfig) -> dict[str, Any]:
    """The drift figures :func:`drift_warnings` judges, as numbers (the fleet's drift points).

    ``psi_confidence`` and ``psi_intensity`` are None where a histogram cannot be compared
    (a window without counts for it), ``disagree_rate`` None without reviews (``disagreed``
    of ``reviews``); ``drift`` is 1 when a PSI passes ``health.drift_psi`` or, with at least
    ``MIN_REVIEWS`` reviews, the disagreement rate passes ``health.disagree_warn``.
    """
    out: dict[str, Any] = {"psi_confidence": None, "psi_intensity": None}
    if baseline and recent:
        for field, name, _what in _HISTOGRAMS:
            before = summed_histogram(baseline, field)
            after = summed_histogram(recent, field)
            if len(before) == len(after) and sum(before) > 0 and sum(after) > 0:
                out[name] = psi(before, after)
    disagreed, reviews = disagreement(recent)
    out["disagree_rate"] = disagreed / reviews if reviews else None
    out["disagreed"] = disagreed
    out["reviews"] = reviews
    shifted = any(out[name] is not None and out[name] > health.drift_psi
                  for _field, name, _what in _HISTOGRAMS)
    out["drift"] = int(shifted or _disagreeing(disagreed, reviews, health))
    return out


def _disagreeing(disagreed: int, reviews: int, health: HealthConfig) -> bool:
    return reviews >= MIN_REVIEWS and disagreed / reviews > health.disagree_warn


def drift_warnings(baseline: Sequence[Mapping[str, Any]], recent: Sequence[Mapping[str, Any]],
                   health: HealthConfig) -> list[str]:
    """Short sentences about drift between ``baseline`` and ``recent`` summary payloads
    (the judgement of :func:`figures` in words).

    A histogram is compared only when both windows hold counts for it; the
    disagreement rate is judged only with at least ``MIN_REVIEWS`` reviews.
    """
    numbers = figures(baseline, recent, health)
    warnings: list[str] = []
    for _field, name, what in _HISTOGRAMS:
        index = numbers[name]
        if index is not None and index > health.drift_psi:
            warnings.append(gettext("%(what)s has shifted from its baseline (PSI %(psi)s > "
                                    "%(limit)s)", what=gettext(what), psi=f"{index:.2f}",
                                    limit=f"{health.drift_psi:g}"))
    disagreed, reviews = numbers["disagreed"], numbers["reviews"]
    if _disagreeing(disagreed, reviews, health):
        warnings.append(gettext("clinicians disagreed with %(n)s of %(reviews)s reviewed "
                                "findings (%(rate)s)", n=disagreed, reviews=reviews,
                                rate=f"{disagreed / reviews:.0%}"))
    return warnings
