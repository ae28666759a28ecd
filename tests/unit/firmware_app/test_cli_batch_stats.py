"""Diagnostic accuracy of ``clinibox infer --labels``: Wilson intervals and the DeLong AUC,
against values worked out by hand and published ones."""

from __future__ import annotations

import math

import pytest

from firmware_app.cli.batch_stats import Z95, auc_delong, diagnostic_accuracy, wilson_interval


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    # Newcombe (1998), Stat Med 17:857-872, method 3 (the score interval), its examples
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
    # 8/10 (worked out below); 0/10: the upper end is z² / (n + z²); 10/10 its mirror
    (8, 10, 0.4902, 0.9433), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0),
])
def test_wilson_interval_matches_published_values(k, n, low, high):
    p = wilson_interval(k, n)
    assert p.value == pytest.approx(k / n)
    assert (p.low, p.high) == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_by_hand_for_8_of_10():
    z2 = Z95 ** 2
    centre = (0.8 + z2 / 20) / (1 + z2 / 10)
    half = Z95 / (1 + z2 / 10) * math.sqrt(0.8 * 0.2 / 10 + z2 / 400)
    p = wilson_interval(8, 10)
    assert (p.low, p.high) == pytest.approx((centre - half, centre + half))


def test_an_empty_proportion_has_no_value():
    p = wilson_interval(0, 0)
    assert (p.value, p.low, p.high) == (None, None, None)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_auc_and_its_delong_error_by_hand():
    # positives 0.9, 0.8, 0.4 against negatives 0.7, 0.3, 0.2, 0.1: 11 of 12 pairs ordered
    # V10 = (1, 1, 3/4) -> S10 = 1/48; V01 = (2/3, 1, 1, 1) -> S01 = 1/36
    # var = S10/3 + S01/4 = 1/144 + 1/144 = 1/72
    auc = auc_delong([0.9, 0.8, 0.4], [0.7, 0.3, 0.2, 0.1])
    assert auc.value == pytest.approx(11 / 12)
    assert auc.standard_error == pytest.approx(math.sqrt(1 / 72))
    assert auc.low == pytest.approx(11 / 12 - Z95 * math.sqrt(1 / 72))
    assert auc.high == 1.0  # clipped
    assert (auc.positives, auc.negatives) == (3, 4)


def test_auc_counts_a_tie_as_half_and_needs_both_classes():
    assert auc_delong([0.5], [0.5]).value == 0.5
    assert auc_delong([0.2, 0.6], [0.6, 0.1]).value == pytest.approx((0.5 + 1 + 0 + 1) / 4)
    assert auc_delong([0.4, 0.3], [0.9, 0.8]).value == 0.0
    assert auc_delong([0.9], []).value is None


def test_diagnostic_accuracy_counts_at_the_operating_point():
    truth = [1, 1, 1, 0, 0, 0, 0]
    said = [True, True, False, True, False, False, False]
    score = [0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1]
    accuracy = diagnostic_accuracy(truth, said, score)
    assert (accuracy.true_positives, accuracy.false_negatives,
            accuracy.true_negatives, accuracy.false_positives) == (2, 1, 3, 1)
    assert accuracy.sensitivity.value == pytest.approx(2 / 3)
    assert accuracy.specificity.value == pytest.approx(3 / 4)
    assert accuracy.auc.value == pytest.approx(11 / 12)
    with pytest.raises(ValueError):
        diagnostic_accuracy([2], [True], [0.5])
