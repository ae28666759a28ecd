"""Client-level differential privacy for a round some boxes may drop out of.

Flower's ``DifferentialPrivacyClientSideFixedClipping`` gives up a round when any box
failed (its noise is sized for every sampled box). Here the round goes on with the boxes
that answered: SecAgg+ hands over one sum whose weight is the number of boxes in it (each
weighs 1), and the Gaussian noise added to their average is sized for that number:
``noise_multiplier × clipping_norm / boxes``. The boxes summed in each round are kept for
the privacy accounting. Clipping is the boxes' own (``fixedclipping_mod``), which reads the
norm this wrapper puts into each round's instructions.
"""

from __future__ import annotations

from logging import INFO

from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping
from flwr.supercore import log
from flwr.supercore.differential_privacy import add_gaussian_noise_to_params


class NoisyAverageOfAnswers(DifferentialPrivacyClientSideFixedClipping):
    """The wrapped strategy's average of the boxes that answered, plus noise sized for them."""

    def __init__(self, strategy, noise_multiplier: float, clipping_norm: float,
                 boxes: int) -> None:
        super().__init__(strategy, noise_multiplier=noise_multiplier,
                         clipping_norm=clipping_norm, num_sampled_clients=boxes)
        self.summed_per_round: list[int] = []

    def aggregate_fit(self, server_round, results, failures):
        """The average of ``results`` (boxes that dropped out are left out), noised."""
        summed = sum(int(fit.num_examples) for _, fit in results)
        if summed == 0:
            return None, {}
        parameters, metrics = self.strategy.aggregate_fit(server_round, results, [])
        if parameters is None:
            return None, metrics
        self.summed_per_round.append(summed)
        if self.noise_multiplier > 0:
            parameters = add_gaussian_noise_to_params(parameters, self.noise_multiplier,
                                                      self.clipping_norm, summed)
        log(INFO, "round %d: the average of %d boxes' heads, %d dropped out", server_round,
            summed, max(self.num_sampled_clients - summed, 0))
        return parameters, metrics
