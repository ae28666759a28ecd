"""A federated run's record and the privacy it states."""

from __future__ import annotations

import math

import pytest

from central.federated.privacy import epsilon_spent
from clinibox_common.contracts.federated import FederatedRun, PrivacyBudget, SecureAggregation


def _run(epsilon: float | None = 3.2) -> FederatedRun:
    return FederatedRun(package="clinibox-demo-lesion 1.0.0", rounds=2, boxes_per_round=[5, 4],
                        local_steps=40, proximal=0.1,
                        privacy=PrivacyBudget(1.0, 2.0, 1e-3, epsilon),
                        secure_aggregation=SecureAggregation("secagg+", 5, 3),
                        started="2026-11-28T10:00:00+00:00", ended="2026-11-28T10:02:00+00:00",
                        flower_version="1.42.0")


def test_the_record_reads_back_as_written(tmp_path):
    path = _run().write(tmp_path / "run.json")
    assert FederatedRun.read(path) == _run()


def test_a_file_of_another_schema_is_refused(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"schema": "something-else/1"}')
    with pytest.raises(ValueError, match="not a federated run record"):
        FederatedRun.read(path)


def test_no_noise_states_no_guarantee():
    assert epsilon_spent(0.0, [5, 5], 1e-3) is None


def test_epsilon_grows_with_rounds_and_shrinks_with_noise():
    few, many = epsilon_spent(2.0, [5] * 2, 1e-3), epsilon_spent(2.0, [5] * 8, 1e-3)
    assert few < many
    assert epsilon_spent(4.0, [5] * 8, 1e-3) < many


@pytest.mark.parametrize(("noise", "rounds"), [(1.0, 5), (2.0, 10), (4.0, 3)])
def test_epsilon_is_within_the_classic_renyi_bound(noise, rounds):
    """Flower's accountant against the Gaussian mechanism's Rényi DP written out here
    (Mironov 2017) for one box's data replaced (sensitivity 2C, noise zC):
    ε(α) = R α (2/z)² / 2, converted at δ by ε + log(1/δ) / (α − 1); the accountant's
    conversion is tighter, never looser."""
    delta = 1e-3
    bound = min(rounds * a * (2 / noise) ** 2 / 2 + math.log(1 / delta) / (a - 1)
                for a in [1 + x / 100 for x in range(1, 20000)])
    spent = epsilon_spent(noise, [5] * rounds, delta)
    assert 0.6 * bound < spent <= bound + 1e-9
