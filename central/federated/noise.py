"""Client-level differential privacy for a round some boxes may drop out of, and a bound on
what one box gone bad can do to it.

Flower's ``DifferentialPrivacyClientSideFixedClipping`` gives up a round when any box
failed (its noise is sized for every sampled box). Here the round goes on with the boxes
that answered: SecAgg+ hands over their average, one result per box (each weighs 1: a box
that claims another weight is refused), and the Gaussian noise added to it is sized for
their number: ``noise_multiplier × clipping_norm / boxes``. The boxes summed in each round
are kept for the privacy accounting. Clipping is the boxes' own (``fixedclipping_mod``),
which reads the norm this wrapper puts into each round's instructions.

The hospital cannot see one box's head, so it cannot check that a box clipped its change.
It checks the sum instead: the average of changes each at most ``clipping_norm`` long is at
most that long too. A round whose average moved further was sent a change no honest box
sends (a box gone bad, or one sending NaN); it is refused, and the run stops there. Within
the bound, a box gone bad can still pull the average as far as an honest round could.
"""

from __future__ import annotations

from logging import INFO, WARNING

import numpy as np
from flwr.common import parameters_to_ndarrays
from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping
from flwr.supercore import log
from flwr.supercore.differential_privacy import add_gaussian_noise_to_params

from clinibox_common.contracts.federated import MAX_CASES
from clinibox_common.errors import CliniboxError

#: slack on the average's bound for SecAgg+'s quantisation (a few steps of 64 / 2**22 each)
QUANTISATION_SLACK = 1e-3


class RoundRefused(CliniboxError, RuntimeError):
    """A round's answers were not what honest boxes send; its message says which rule."""


class NoisyAverageOfAnswers(DifferentialPrivacyClientSideFixedClipping):
    """The wrapped strategy's average of the boxes that answered, bounded, plus noise sized
    for them."""

    def __init__(self, strategy, noise_multiplier: float, clipping_norm: float,
                 boxes: int) -> None:
        super().__init__(strategy, noise_multiplier=noise_multiplier,
                         clipping_norm=clipping_norm, num_sampled_clients=boxes)
        self.summed_per_round: list[int] = []
        self.aggregated: list[int] = []
        self.sent: list[np.ndarray] = []
        self.cases_per_round: list[int] = []

    def configure_fit(self, server_round, parameters, client_manager):
        """The round's instructions; the head sent is kept to bound the answer's change."""
        self.sent = [np.asarray(a, np.float64) for a in parameters_to_ndarrays(parameters)]
        return super().configure_fit(server_round, parameters, client_manager)

    def configure_evaluate(self, server_round, parameters, client_manager):
        """The round's count of cases, from the boxes connected now; when fewer than the
        round's boxes are (one left after training: its learning hours ended), the count is
        skipped at once, 0 in the record, and the round's head stands (it waits for no box)."""
        wanted = self.num_sampled_clients
        if client_manager.num_available() < wanted:
            log(WARNING, "round %d: %d of the %d boxes are connected after training; its "
                "cases are not counted (0 in the record)", server_round,
                client_manager.num_available(), wanted)
            self.cases_per_round.append(0)
            return []
        return super().configure_evaluate(server_round, parameters, client_manager)

    def moved(self, parameters) -> float:
        """How far ``parameters`` lie from the head sent this round (L2; NaN stays NaN)."""
        got = [np.asarray(a, np.float64) for a in parameters_to_ndarrays(parameters)]
        return float(np.sqrt(sum(np.sum((g - s) ** 2) for g, s in zip(got, self.sent,
                                                                      strict=True))))

    def aggregate_evaluate(self, server_round, results, failures):
        """How many labelled cases the boxes that answered hold (each box says its count and
        nothing else: its loss is not sent); a round none answered counts 0. A count no box
        can hold (below 0, above :data:`MAX_CASES`) is left out of the sum and logged: the
        record, the command's summary and the model card say what honest boxes said."""
        counts = [int(res.num_examples) for _, res in results]
        held = [n for n in counts if 0 <= n <= MAX_CASES]
        if len(held) < len(counts):
            log(WARNING, "round %d: %d box(es) answered a count of cases no box holds; left "
                "out", server_round, len(counts) - len(held))
        self.cases_per_round.append(sum(held))
        return None, {}

    def aggregate_fit(self, server_round, results, failures):
        """The average of ``results`` (boxes that dropped out are left out), checked against
        the clipping norm, then noised; RoundRefused when it breaks a rule."""
        if any(int(fit.num_examples) != 1 for _, fit in results):
            raise RoundRefused(f"round {server_round}: a box claimed a weight other than 1")
        summed = len(results)
        if summed == 0:
            return None, {}
        parameters, metrics = self.strategy.aggregate_fit(server_round, results, [])
        if parameters is None:
            return None, metrics
        if not self.moved(parameters) <= self.clipping_norm + QUANTISATION_SLACK:
            raise RoundRefused(f"round {server_round}: the boxes' average moved further than "
                               "the clipping norm allows (a box did not clip its change); no "
                               "head was written")
        self.summed_per_round.append(summed)
        self.aggregated.append(server_round)
        if self.noise_multiplier > 0:
            parameters = add_gaussian_noise_to_params(parameters, self.noise_multiplier,
                                                      self.clipping_norm, summed)
        log(INFO, "round %d: the average of %d boxes' heads, %d dropped out", server_round,
            summed, max(self.num_sampled_clients - summed, 0))
        return parameters, metrics
