"""The privacy a federated run spent: Flower's Rényi accountant over its rounds.

Each round releases the sum of the boxes' clipped head changes plus Gaussian noise of
``noise_multiplier × clipping_norm`` (Flower's ``DifferentialPrivacyClientSideFixedClipping``):
a Gaussian mechanism at the level of a whole box. Every enrolled box takes part in every
round (no sampling, so no amplification); ε at ``delta`` composes the rounds.
"""

from __future__ import annotations

from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    SamplingMethod,
)
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant


def epsilon_spent(noise_multiplier: float, boxes_per_round: list[int], delta: float
                  ) -> float | None:
    """ε at ``delta`` after the rounds (each with its number of boxes), or None when no
    noise was added (no guarantee to state)."""
    if noise_multiplier <= 0 or not boxes_per_round:
        return None
    population = max(boxes_per_round)
    accountant = RdpAccountant(PrivacyConfig(
        target_delta=delta, population_size=population,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION))
    for boxes in boxes_per_round:
        accountant.compose(GaussianPrivacyEvent(noise_multiplier=noise_multiplier,
                                                sample_size=boxes, population_size=population))
    return float(accountant.get_epsilon(delta))
