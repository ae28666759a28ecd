"""The hospital's side of a round: the average of the boxes that answered, refused when it
moved further than honest boxes can move it, and noised for the boxes in it."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAvg

from central.federated.noise import NoisyAverageOfAnswers, RoundRefused

CLIP = 1.0


def _strategy(noise: float = 0.0, boxes: int = 3) -> NoisyAverageOfAnswers:
    strategy = NoisyAverageOfAnswers(FedAvg(), noise, CLIP, boxes)
    strategy.sent = [np.zeros(4)]
    return strategy


def _answers(vector, boxes: int = 1, weight: int = 1) -> list[tuple[None, FitRes]]:
    """What SecAgg+ hands over: one result per box summed, each holding their average."""
    parameters = ndarrays_to_parameters([np.asarray(vector, np.float32)])
    return [(None, FitRes(Status(Code.OK, ""), parameters, weight, {})) for _ in range(boxes)]


def test_the_average_of_clipped_changes_is_taken_and_counted():
    strategy = _strategy()
    parameters, _ = strategy.aggregate_fit(1, _answers([0.3, 0.4, 0.0, 0.0], boxes=3), [])
    np.testing.assert_allclose(parameters_to_ndarrays(parameters)[0], [0.3, 0.4, 0, 0],
                               atol=1e-7)
    assert strategy.aggregated == [1] and strategy.summed_per_round == [3]


def test_a_box_that_did_not_clip_is_caught_by_the_sum():
    strategy = _strategy()
    with pytest.raises(RoundRefused, match="round 2: the boxes' average moved further"):
        strategy.aggregate_fit(2, _answers([3.0, 0.0, 0.0, 0.0], boxes=3), [])
    with pytest.raises(RoundRefused, match="round 3"):
        strategy.aggregate_fit(3, _answers([np.nan, 0.0, 0.0, 0.0], boxes=3), [])
    assert strategy.aggregated == []


def test_a_box_claiming_more_weight_cannot_shrink_the_noise():
    strategy = _strategy(noise=1.0)
    answers = _answers([0.1, 0.0, 0.0, 0.0], boxes=2) + _answers([0.1, 0, 0, 0], weight=1000)
    with pytest.raises(RoundRefused, match="a box claimed a weight other than 1"):
        strategy.aggregate_fit(1, answers, [])


def test_boxes_that_dropped_out_leave_the_round_to_the_others():
    strategy = _strategy()
    parameters, _ = strategy.aggregate_fit(1, _answers([0.1, 0.0, 0.0, 0.0], boxes=2),
                                           [RuntimeError("box 3 switched off")])
    assert parameters is not None and strategy.summed_per_round == [2]


def test_the_noise_is_sized_for_the_boxes_summed():
    strategy = NoisyAverageOfAnswers(FedAvg(), 2.0, CLIP, 5)
    strategy.sent = [np.zeros(20_000)]
    parameters, _ = strategy.aggregate_fit(1, _answers(np.zeros(20_000), boxes=4), [])
    noise = parameters_to_ndarrays(parameters)[0]
    assert abs(float(np.std(noise)) - 2.0 * CLIP / 4) < 0.02
    assert strategy.summed_per_round == [4]
