"""Drift: the PSI arithmetic and the warnings built from summary windows."""

from __future__ import annotations

import math

import pytest

from central.config import HealthConfig
from central.drift import EPSILON, MIN_REVIEWS, drift_warnings, psi, summed_histogram
from tests.telemetry_payloads import summary_payload

BASE = [50, 40, 30, 20, 10, 8, 6, 4, 2, 1]


def test_identical_histograms_have_zero_psi():
    assert psi(BASE, BASE) == 0.0
    assert psi(BASE, [c * 7 for c in BASE]) == pytest.approx(0.0, abs=1e-12)  # scale-free


def test_psi_matches_the_formula_on_a_small_case():
    expected = (0.5 - 0.25) * math.log(0.5 / 0.25) + (0.5 - 0.75) * math.log(0.5 / 0.75)
    assert psi([1, 3], [2, 2]) == pytest.approx(expected)
    assert psi([1, 3], [2, 2]) == pytest.approx(psi([2, 2], [1, 3]))  # symmetric


def test_a_shifted_histogram_exceeds_the_threshold():
    shifted = list(reversed(BASE))
    assert psi(BASE, shifted) > HealthConfig().drift_psi
    slight = [51, 39, 30, 20, 10, 8, 6, 4, 2, 1]
    assert psi(BASE, slight) < 0.01


def test_empty_bins_are_floored_not_infinite():
    value = psi([10, 0], [5, 5])
    assert math.isfinite(value)
    assert value == pytest.approx((0.5 - 1.0) * math.log(0.5 / 1.0)
                                  + (0.5 - EPSILON) * math.log(0.5 / EPSILON))


@pytest.mark.parametrize(("a", "b"), [([1, 2], [1, 2, 3]), ([], []), ([0, 0], [1, 1])])
def test_incomparable_histograms_are_refused(a, b):
    with pytest.raises(ValueError):
        psi(a, b)


def test_histograms_are_summed_over_a_window():
    window = [summary_payload(), summary_payload()]
    assert summed_histogram(window, "confidence_histogram") == [2 * c for c in BASE]
    assert summed_histogram([], "confidence_histogram") == []


def test_stable_windows_give_no_warning():
    window = [summary_payload() for _ in range(24)]
    assert drift_warnings(window, window, HealthConfig()) == []


def test_a_shifted_confidence_histogram_is_reported():
    baseline = [summary_payload() for _ in range(24)]
    recent = [summary_payload(confidence_histogram=list(reversed(BASE))) for _ in range(24)]
    [warning] = drift_warnings(baseline, recent, HealthConfig())
    assert warning.startswith("model confidence has shifted from its baseline (PSI ")
    assert "> 0.25)" in warning


def test_a_shifted_intensity_histogram_is_reported():
    baseline = [summary_payload()]
    recent = [summary_payload(intensity_histogram=[90, 60, 20, 5, 1, 1, 1, 1, 1, 1])]
    warnings = drift_warnings(baseline, recent, HealthConfig())
    assert [w.split(" has")[0] for w in warnings] == ["image intensity"]


def test_the_threshold_comes_from_the_config():
    baseline = [summary_payload()]
    recent = [summary_payload(confidence_histogram=[45, 42, 32, 21, 11, 8, 6, 4, 2, 1])]
    index = psi(BASE, recent[0]["confidence_histogram"])
    assert drift_warnings(baseline, recent, HealthConfig(drift_psi=index * 2)) == []
    assert len(drift_warnings(baseline, recent, HealthConfig(drift_psi=index / 2))) == 1


def test_empty_histograms_are_skipped():
    zero = [0] * 10
    baseline = [summary_payload(confidence_histogram=zero, intensity_histogram=zero)]
    assert drift_warnings(baseline, [summary_payload()], HealthConfig()) == []


def test_frequent_disagreement_is_reported_only_with_enough_reviews():
    few = [summary_payload(feedback={"agree": 2, "disagree": 7, "unsure": 0})]
    assert MIN_REVIEWS > 2 + 7
    assert drift_warnings([], few, HealthConfig()) == []
    many = [summary_payload(feedback={"agree": 6, "disagree": 2, "unsure": 0}),
            summary_payload(feedback={"agree": 2, "disagree": 2, "unsure": 0})]
    [warning] = drift_warnings([], many, HealthConfig())
    assert warning == "clinicians disagreed with 4 of 12 reviewed findings (33%)"
    agreeable = [summary_payload(feedback={"agree": 40, "disagree": 5, "unsure": 0})]
    assert drift_warnings([], agreeable, HealthConfig()) == []
