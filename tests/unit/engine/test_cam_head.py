"""The head a box trains: its gradient is the loss's, training lowers the loss, and the
proximal pull keeps it near its anchor."""

from __future__ import annotations

import numpy as np
import pytest

from engine.learning.cam_head import CamHead, TrainingSettings, fine_tune, loss_gradient


def _cases(seed: int = 3, n: int = 30, c: int = 6, p: int = 16):
    rng = np.random.default_rng(seed)
    maps = rng.random((n, c, p)).astype(np.float32)
    labels = (rng.random(n) < 0.5).astype(np.int8)
    maps[labels == 1, 0, :3] += 2.0  # a lesion lights channel 0 in a few cells
    return maps, labels


def test_the_gradient_is_the_losss_own():
    maps, labels = _cases()
    vector = np.random.default_rng(1).normal(size=7)
    _, grad = loss_gradient(vector, maps.astype(np.float64), labels)
    step = 1e-6
    numeric = np.array([
        (loss_gradient(vector + step * e, maps.astype(np.float64), labels)[0]
         - loss_gradient(vector - step * e, maps.astype(np.float64), labels)[0]) / (2 * step)
        for e in np.eye(7)])
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)


def test_the_logit_is_the_log_sum_exp_pool_of_the_map():
    maps, _ = _cases()
    head = CamHead(np.linspace(-1, 1, 6), -0.5, sharpness=4.0)
    cam = np.einsum("c,ncp->np", head.weights, maps) + head.bias
    expected = np.log(np.mean(np.exp(4.0 * cam), axis=1)) / 4.0
    np.testing.assert_allclose(head.logits(maps), expected, rtol=1e-9)


def test_fine_tuning_lowers_the_loss_and_separates_the_cases():
    maps, labels = _cases()
    head = CamHead(np.zeros(6), 0.0)
    trained = fine_tune(head, maps, labels, TrainingSettings(steps=200, learning_rate=0.05,
                                                             proximal=0.0))
    before = loss_gradient(head.as_vector(), maps.astype(np.float64), labels)[0]
    after = loss_gradient(trained.as_vector(), maps.astype(np.float64), labels)[0]
    assert after < 0.5 * before
    logits = trained.logits(maps)
    assert logits[labels == 1].min() > logits[labels == 0].max()


def test_the_proximal_pull_keeps_the_head_near_its_anchor():
    maps, labels = _cases()
    head = CamHead(np.zeros(6), 0.0)
    free = fine_tune(head, maps, labels, TrainingSettings(100, 0.05, 0.0))
    held = fine_tune(head, maps, labels, TrainingSettings(100, 0.05, 50.0))
    assert np.linalg.norm(held.as_vector()) < 0.2 * np.linalg.norm(free.as_vector())


def test_no_cases_leave_the_head_as_it_was_and_a_mismatch_is_refused():
    head = CamHead(np.ones(6), 0.5)
    assert fine_tune(head, np.zeros((0, 6, 4)), np.zeros(0)) is head
    with pytest.raises(ValueError, match="3 cases but 2 labels"):
        fine_tune(head, np.zeros((3, 6, 4)), np.zeros(2))
    with pytest.raises(ValueError, match=r"maps must be \[N, 6"):
        head.logits(np.zeros((3, 5, 4)))
    with pytest.raises(ValueError, match="7 numbers; got 3"):
        head.with_vector(np.zeros(3))
