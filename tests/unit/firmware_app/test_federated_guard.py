"""The box's own checks on a round's instructions: what would expose its head is refused
with a code, whatever the hospital's ServerApp asks."""

from __future__ import annotations

import pytest

from firmware_app.learning.guard_mod import (
    MAX_CLIPPING_NORM,
    RoundRefused,
    check_clipping,
    check_setup,
    check_share_keys,
    check_unmask,
)


def test_a_setup_that_protects_is_taken():
    check_setup(shares=5, threshold=3, sample=5)
    check_setup(shares=3, threshold=2, sample=3)


@pytest.mark.parametrize(("shares", "threshold", "sample", "code"), [
    (3, 2, 5, "secagg_shares_not_all_boxes"),   # some boxes hold no share of a mask
    (5, 2, 5, "secagg_threshold_too_low"),      # two boxes could rebuild a third's mask
    (4, 2, 4, "secagg_threshold_too_low"),
    (1, 1, 1, "secagg_too_few_boxes"),          # a round of one: its only share is its seed
    (2, 2, 2, "secagg_too_few_boxes"),
])
def test_a_setup_that_exposes_is_refused(shares, threshold, sample, code):
    with pytest.raises(RoundRefused, match=f"^{code}$"):
        check_setup(shares, threshold, sample)


def test_a_box_named_both_alive_and_dropped_out_is_refused():
    check_unmask([11, 12, 13], [14])
    with pytest.raises(RoundRefused, match=r"^secagg_box_alive_and_dropped$"):
        check_unmask([11, 12, 13], [13])


@pytest.mark.parametrize("norm", [0.0, -1.0, MAX_CLIPPING_NORM * 2, float("nan")])
def test_a_clipping_norm_past_the_boxs_ceiling_is_refused(norm):
    with pytest.raises(RoundRefused, match=r"^clipping_norm_out_of_bounds$"):
        check_clipping(norm)
    check_clipping(1.0)


def test_masks_shared_among_fewer_boxes_than_a_round_needs_are_refused():
    """After a setup of five, a hospital naming only two boxes at the key exchange would hold
    every share of this box's masks but one."""
    check_share_keys(["7", "11", "12"])
    for names in ([], ["7"], ["7", "11"]):
        with pytest.raises(RoundRefused, match=r"^secagg_too_few_boxes$"):
            check_share_keys(names)


@pytest.mark.parametrize("names", [["7", "07", "99"], ["7", "+7", "99"], ["7", " 7", "99"],
                                   ["7", "-1", "99"]])
def test_one_box_written_two_ways_does_not_count_as_two(names):
    """Flower reads the numbers as numbers: "7" and "07" are one box, and with a made-up
    third the box would share its mask's seed among two."""
    with pytest.raises(RoundRefused, match=r"^secagg_box_named_twice$"):
        check_share_keys(names)
