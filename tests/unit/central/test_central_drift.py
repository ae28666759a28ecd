"""Drift: the PSI arithmetic and the warnings built from summary windows."""

from __future__ import annotations

import math

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.config import HealthConfig
from central.drift import EPSILON, MIN_REVIEWS, drift_warnings, psi, summed_histogram
from central.report import build_report
from central.store import Store
from clinibox_common.contracts.envelope import Header
from tests.telemetry_payloads import public_pem, summary_payload

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


def test_the_consoles_mark_and_the_reports_warning_follow_one_rule(tmp_path):
    """The same summaries, stored as the receiver stores them: after each one, the console's
    drift mark (``box_state.drift``, its drift point) and ``central report``'s drift warning
    agree, while the baseline is still too short, when it shifts and when it settles."""
    health = HealthConfig(baseline_summaries=3, recent_summaries=2)
    store = Store(f"sqlite:///{tmp_path}/central.db", health=health)
    now = 1_700_100_000.0
    store.enrol("clinic-a", "box-1", public_pem(Ed25519PrivateKey.generate()), now=now - 1e5)
    shifted = list(reversed(BASE))
    histograms = [BASE, BASE, BASE, shifted, shifted, BASE, BASE]
    marks, warned = [], []
    try:
        for seq, histogram in enumerate(histograms, start=1):
            store.store(Header("clinic-a", "box-1", "summary", seq),
                        summary_payload(confidence_histogram=histogram), now - 600 + seq)
            marks.append(bool(store.box_state("clinic-a", "box-1")["drift"]))
            [row] = build_report(store, health, now)
            warned.append(bool(row["drift"]))
    finally:
        store.close()
    # the old rules disagreed at the 4th: the console compared a baseline that overlapped
    # the recent window, the report waited for a whole baseline before it
    assert marks == warned
    # 3 baseline + 2 recent summaries are needed before the histograms are compared; then
    # the shift is drift while it is in the recent window
    assert marks == [False, False, False, False, True, True, False]
