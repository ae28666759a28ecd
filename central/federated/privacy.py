"""The privacy a federated run spent: Flower's Rényi accountant over its rounds.

Each round releases the sum of the boxes' clipped head changes plus Gaussian noise of
``noise_multiplier × clipping_norm``: a Gaussian mechanism at the level of a whole box. Every
enrolled box takes part in every round (no sampling, so no amplification); ε at ``delta``
composes the rounds.

The neighbouring runs are the same boxes with **one box's data replaced** (the number of
boxes is known: it sizes the average): one box's clipped change can move the sum by up to
2 × clipping_norm. Flower's accountant offers that relation only with sampling, so it is
accounted as adding or removing one box (sensitivity clipping_norm) with half the noise
multiplier: the same ratio of noise to sensitivity.
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
        accountant.compose(GaussianPrivacyEvent(noise_multiplier=noise_multiplier / 2,
                                                sample_size=boxes, population_size=population))
    return float(accountant.get_epsilon(delta))
