"""The hospital's side of a round: the average of the boxes that answered, refused when it
moved further than honest boxes can move it, and noised for the boxes in it."""

from __future__ import annotations

import numpy as np
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAvg

from central.federated.noise import NoisyAverageOfAnswers

CLIP = 1.0


def _strategy(noise: float = 0.0, boxes: int = 3) -> NoisyAverageOfAnswers:
    strategy = NoisyAverageOfAnswers(FedAvg(), noise, CLIP, boxes)
    strategy.sent = [np.zeros(4)]
    return strategy


def _answer(vector) -> tuple[None, FitRes]:
    """What SecAgg+ hands over: one sum of the boxes' heads, weighted by their count."""
    return None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(
        [np.asarray(vector, np.float32)]), 1, {})


def test_the_average_of_clipped_changes_is_taken_and_counted():
    strategy = _strategy()
    parameters, _ = strategy.aggregate_fit(1, [_answer([0.3, 0.4, 0.0, 0.0])], [])
    np.testing.assert_allclose(parameters_to_ndarrays(parameters)[0], [0.3, 0.4, 0, 0],
                               atol=1e-7)
    assert strategy.aggregated == [1] and strategy.summed_per_round == [1]


def test_a_box_that_did_not_clip_is_caught_by_the_sum():
    strategy = _strategy()
    parameters, _ = strategy.aggregate_fit(2, [_answer([3.0, 0.0, 0.0, 0.0])], [])
    assert parameters is None and strategy.refused == [2] and strategy.aggregated == []
    parameters, _ = strategy.aggregate_fit(3, [_answer([np.nan, 0.0, 0.0, 0.0])], [])
    assert parameters is None and strategy.refused == [2, 3]


def test_boxes_that_dropped_out_leave_the_round_to_the_others():
    strategy = _strategy()
    parameters, _ = strategy.aggregate_fit(1, [_answer([0.1, 0.0, 0.0, 0.0])],
                                           [RuntimeError("box 3 switched off")])
    assert parameters is not None and strategy.aggregated == [1]


def test_the_noise_is_sized_for_the_boxes_summed():
    strategy = NoisyAverageOfAnswers(FedAvg(), 2.0, CLIP, 5)
    strategy.sent = [np.zeros(20_000)]
    sum_of_four = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(
        [np.zeros(20_000, np.float32)]), 4, {})
    parameters, _ = strategy.aggregate_fit(1, [(None, sum_of_four)], [])
    noise = parameters_to_ndarrays(parameters)[0]
    assert abs(float(np.std(noise)) - 2.0 * CLIP / 4) < 0.02
    assert strategy.summed_per_round == [4]
