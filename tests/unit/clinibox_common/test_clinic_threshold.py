"""The rule that sets a clinic's own finding threshold from its confirmed cases: it keeps the
target share of confirmed lesions, raises the threshold only while the package's floor is
safe, and stays within its bounds."""

from __future__ import annotations

import numpy as np

from clinibox_common.contracts.clinic_threshold import (
    ThresholdState,
    choose_threshold,
    logit,
    sigmoid,
    wilson_lower,
)

RULE = {"package_finding": 0.13, "alert": 0.98, "target_sensitivity": 0.94,
        "floor_sensitivity": 0.9, "min_lesions": 20, "min_clear": 20, "max_shift": 1.0}


def test_too_few_confirmed_cases_keep_the_packages_threshold():
    choice = choose_threshold([0.5] * 19, [0.01] * 40, **RULE)
    assert choice.state == ThresholdState.TOO_FEW_CASES
    assert choice.finding == 0.13 and (choice.lesions, choice.clear) == (19, 40)
    assert choose_threshold([0.5] * 40, [0.01] * 19, **RULE).state == \
        ThresholdState.TOO_FEW_CASES


def test_a_machine_that_scores_lesions_low_gets_a_lower_threshold_that_finds_them():
    rng = np.random.default_rng(3)
    lesions = list(rng.uniform(0.07, 0.6, 50))  # many below the package's 0.13
    clear = list(rng.uniform(0.0, 0.05, 50))
    at_package = sum(s >= 0.13 for s in lesions) / 50
    choice = choose_threshold(lesions, clear, **RULE)
    assert at_package < 0.94
    assert choice.state == ThresholdState.CALIBRATED
    assert choice.finding < 0.13
    assert choice.sensitivity is not None and choice.sensitivity >= 0.94
    # the highest such threshold: one step up misses one lesion too many
    above = min(s for s in lesions if s > choice.finding)
    assert sum(s >= above for s in lesions) / 50 < 0.94
    assert choice.specificity == 1.0


def test_a_threshold_above_the_packages_needs_enough_lesions_to_trust_the_floor():
    clear = [0.01 * k for k in range(1, 41)]  # up to 0.40: raising would spare clear images
    few = [0.25] * 2 + [0.5] * 18  # 20 lesions: 90 % at 0.5, but not 95 % sure of the floor
    choice = choose_threshold(few, clear, **{**RULE, "target_sensitivity": 0.9,
                                             "may_raise": True})
    assert wilson_lower(18, 20) < 0.9
    assert choice.state == ThresholdState.BOUNDED
    assert choice.finding <= 0.25  # finds every lesion: the only share it can vouch for
    many = [0.25] * 2 + [0.5] * 198  # 200 lesions, 99 % found at 0.5: the floor is safe
    sure = choose_threshold(many, clear, **{**RULE, "target_sensitivity": 0.9,
                                            "max_shift": 5.0, "may_raise": True})
    assert wilson_lower(198, 200) >= 0.9
    assert sure.state == ThresholdState.CALIBRATED and sure.finding == 0.5
    # by default the box only lowers: reviewed cases may lack the lesions it missed
    held = choose_threshold(many, clear, **{**RULE, "target_sensitivity": 0.9, "max_shift": 5.0})
    assert held.state == ThresholdState.BOUNDED and held.finding == 0.13


def test_the_threshold_moves_at_most_max_shift_and_never_above_the_alert_threshold():
    lesions = [0.001] + [0.9] * 60
    low = choose_threshold(lesions, [0.0005] * 30, **{**RULE, "target_sensitivity": 1.0})
    assert low.state == ThresholdState.BOUNDED
    assert abs(logit(low.finding) - (logit(0.13) - 1.0)) < 1e-9
    high = choose_threshold([0.99] * 500, [0.5] * 30,
                            **{**RULE, "max_shift": 5.0, "alert": 0.8, "may_raise": True})
    assert high.state == ThresholdState.BOUNDED and high.finding == 0.8
    assert abs(sigmoid(logit(0.3)) - 0.3) < 1e-12


def test_without_a_sensitivity_to_keep_the_packages_threshold_stands():
    """A package with neither a validated sensitivity nor a floor gives the rule nothing to
    keep: it never moves the threshold (least of all up to its largest shift)."""
    choice = choose_threshold([0.9] * 50, [0.01] * 50,
                              **{**RULE, "target_sensitivity": 0.0, "floor_sensitivity": 0.0,
                                 "may_raise": True})
    assert choice.state == ThresholdState.PACKAGE and choice.finding == 0.13


def test_the_floors_bound_never_lowers_a_threshold_whose_target_is_met_at_the_packages():
    """The Wilson bound guards a raise: when the target share is found above the package's
    threshold but too few lesions make the bound safe, the package's threshold stands;
    the rule does not step down onto a confirmed miss below it."""
    rule = {**RULE, "package_finding": 0.5, "floor_sensitivity": 0.85,
            "target_sensitivity": 0.9}
    lesions = [0.45, 0.46, *np.linspace(0.6, 0.92, 18)]
    for may_raise in (False, True):
        choice = choose_threshold(lesions, [0.01] * 20, **rule, may_raise=may_raise)
        assert choice.finding == 0.5, (may_raise, choice)
