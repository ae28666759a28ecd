"""The suite's torchvision (tests/torchvision_cpu.py): its pure-PyTorch ops stand in for the
compiled library the CUDA-only wheel cannot load on these machines."""

from __future__ import annotations

import pytest
import torch

from tests.torchvision_cpu import load

torchvision = load()


def _brute_force_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    """Greedy NMS, one pair at a time, as torchvision's C++ kernel loops."""
    order = sorted(range(len(boxes)), key=lambda i: -float(scores[i]))
    dropped: set[int] = set()
    kept = []
    for n, i in enumerate(order):
        if i in dropped:
            continue
        kept.append(i)
        for j in order[n + 1:]:
            x0, y0 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            x1, y1 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = max(0.0, float(x1 - x0)) * max(0.0, float(y1 - y0))
            area = [float((b[2] - b[0]) * (b[3] - b[1])) for b in (boxes[i], boxes[j])]
            if inter / (area[0] + area[1] - inter) > threshold:
                dropped.add(j)
    return kept


@pytest.mark.parametrize("seed", range(6))
def test_nms_keeps_what_a_brute_force_greedy_nms_keeps(seed):
    g = torch.Generator().manual_seed(seed)
    boxes = torch.rand(120, 4, generator=g) * 60
    boxes[:, 2:] = boxes[:, :2] + 4 + torch.rand(120, 2, generator=g) * 30
    scores = torch.rand(120, generator=g)
    threshold = [0.3, 0.5, 0.7][seed % 3]
    kept = torchvision.ops.nms(boxes, scores, threshold)
    assert kept.dtype == torch.long
    assert kept.tolist() == _brute_force_nms(boxes, scores, threshold)
    assert 1 < len(kept) < 120
    # batched_nms (torchvision's Python, class offsets) never lets another class suppress
    classes = torch.arange(120) % 2
    both = torchvision.ops.batched_nms(boxes, scores, classes, threshold)
    apart = [int(i) * 2 + c for c in (0, 1)
             for i in _brute_force_nms(boxes[c::2], scores[c::2], threshold)]
    assert sorted(both.tolist()) == sorted(apart)
    assert torchvision.ops.nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_roi_align_runs_and_its_gradient_is_autograd_s_through_the_reference():
    from torchvision.ops.roi_align import _roi_align

    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 2.0, 9.5, 12.0], [1, 0.0, 0.0, 15.0, 15.0]])
    out = torchvision.ops.roi_align(x, rois, (4, 4), 0.5, 2, True)
    assert out.shape == (2, 3, 4, 4)
    weights = torch.rand_like(out)
    (out * weights).sum().backward()
    y = x.detach().clone().requires_grad_(True)
    reference = _roi_align.__wrapped__(y, rois, 0.5, 4, 4, 2, True)
    torch.testing.assert_close(out, reference)
    (reference * weights).sum().backward()
    torch.testing.assert_close(x.grad, y.grad)
    assert x.grad.abs().sum() > 0


def test_an_operator_without_a_pure_pytorch_version_says_so():
    with pytest.raises(NotImplementedError, match="roi_pool"):
        torchvision.ops.roi_pool(torch.rand(1, 1, 8, 8), torch.tensor([[0, 0, 0, 4.0, 4.0]]), 2)
