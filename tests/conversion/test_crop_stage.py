"""The demo's second stage: the crop looked at in one or several orientations, averaged; the
shipped look and the mask offset folded into the net."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from converters.stage import export_stage
from demo import crop_stage
from demo.crop_stage import SHIPPED_ORIENTATIONS, CropNet, Orientations, shift_mask_logits


def _net() -> CropNet:
    torch.manual_seed(3)
    net = CropNet(width=4).eval()
    with torch.no_grad():  # a net that is not symmetric by accident
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return net


def test_the_average_is_the_mean_of_the_eight_looks():
    net, x = _net(), torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        mask, classes = Orientations(net, tuple(range(8)))(x)
        looks = [net(torch.rot90(x if k < 4 else x.flip(3), k % 4, (2, 3))) for k in range(8)]
        back = [torch.rot90(m, -(k % 4), (2, 3)) for k, (m, _) in enumerate(looks)]
        back = [b if k < 4 else b.flip(3) for k, b in enumerate(back)]
        one_look, _ = net(x)
    assert torch.allclose(mask, torch.stack(back).mean(0), atol=1e-5)
    assert torch.allclose(classes, torch.stack([c for _, c in looks]).mean(0), atol=1e-5)
    assert not torch.allclose(mask, one_look, atol=1e-3)  # the looks do differ


def test_the_shipped_look_is_the_crop_as_cut():
    net, x = _net(), torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        (mask, classes), (as_cut_mask, as_cut_classes) = Orientations(net)(x), net(x)
    assert SHIPPED_ORIENTATIONS == (0,)
    assert torch.allclose(mask, as_cut_mask) and torch.allclose(classes, as_cut_classes)


def test_two_looks_are_the_crop_and_its_anti_transpose_averaged():
    net, x = _net(), torch.randn(2, 1, 64, 64)
    both = Orientations(net, (0, 7))
    with torch.no_grad():
        mask, classes = both(x)
        as_cut, turned = net(x), net(x.flip(2).flip(3).transpose(2, 3))
    turned_back = turned[0].transpose(2, 3).flip(2).flip(3)
    assert torch.allclose(mask, (as_cut[0] + turned_back) / 2, atol=1e-5)
    assert torch.allclose(classes, (as_cut[1] + turned[1]) / 2, atol=1e-5)
    # looked at over the anti-diagonal, the two looks answer the same
    flipped_mask, flipped_classes = both(x.flip(2).flip(3).transpose(2, 3))
    assert torch.allclose(flipped_mask, mask.flip(2).flip(3).transpose(2, 3), atol=1e-5)
    assert torch.allclose(flipped_classes, classes, atol=1e-5)


def test_a_mask_offset_shifts_the_mask_logits_only():
    net, x = _net(), torch.randn(2, 1, 64, 64)
    shifted = shift_mask_logits(net, 0.6)
    with torch.no_grad():
        (mask, classes), (moved, same) = net(x), shifted(x)
    assert torch.allclose(moved, mask + 0.6, atol=1e-5)
    assert torch.allclose(same, classes)
    assert not torch.allclose(net(x)[0], moved)  # the original net is left as it was


def test_a_turned_crop_gives_the_turned_mask_and_the_same_class():
    shipped, x = Orientations(_net(), tuple(range(8))), torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        mask, classes = shipped(x)
        turned_mask, turned_classes = shipped(torch.rot90(x, 1, (2, 3)))
        mirrored_mask, _ = shipped(x.flip(2))
    assert torch.allclose(turned_mask, torch.rot90(mask, 1, (2, 3)), atol=1e-5)
    assert torch.allclose(turned_classes, classes, atol=1e-5)
    assert torch.allclose(mirrored_mask, mask.flip(2), atol=1e-5)


def test_the_exported_graph_answers_as_torch(tmp_path):
    crops = np.random.default_rng(1).standard_normal((6, 1, 64, 64)).astype(np.float32)
    artifacts = export_stage(Orientations(_net()).eval(), tmp_path, crop_stage.SPEC,
                             ["onnx"], crops, log=lambda _: None)
    [onnx] = artifacts
    assert (tmp_path / onnx["path"]).is_file()
    assert onnx["validation"]["max_abs_difference"] < 1e-4  # ONNX Runtime against torch
    assert onnx["validation"]["mask_iou_with_torch"] > 0.99


def test_a_stage_of_another_width_trains_under_bf16_autocast_and_stays_float32():
    crops = crop_stage.make_crops("val", 6)
    logs: list[str] = []
    seen: dict[bool, set[torch.dtype]] = {False: set(), True: set()}

    def training_convolutions(run: bool):
        """Record the dtype every convolution of a training step answers in."""
        def hook(module, _inputs, output):
            if module.training and isinstance(module, torch.nn.Conv2d):
                seen[run].add(output.dtype)
        return torch.nn.modules.module.register_module_forward_hook(hook)

    with training_convolutions(False):
        crop_stage.train_stage(crops, 1, batch=4, width=8, log=logs.append)
    with training_convolutions(True):
        bf16 = crop_stage.train_stage(crops, 1, batch=4, width=8, bf16=True, log=logs.append)
    torch.manual_seed(0)
    untrained = CropNet(width=8)
    assert bf16.enc1[0].out_channels == 8
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    # trained, and its forward pass ran in bfloat16 (on every CPU: autocast emulates bf16 where
    # it has no native kernels; two AdamW steps can leave the same weights either way)
    assert not torch.equal(dict(bf16.named_parameters())["mask.weight"], untrained.mask.weight)
    assert seen == {False: {torch.float32}, True: {torch.bfloat16}}
    mask, classes = bf16(torch.from_numpy(crops.x[:2]))
    assert mask.dtype == torch.float32 and torch.isfinite(mask).all()
    assert classes.shape == (2, 2)
    assert len(logs) == 2 and all("loss" in line for line in logs)


def test_a_stage_with_a_fourth_scale_sees_the_whole_crop_and_exports_as_the_shipped_one(
        tmp_path):
    shipped, deeper = CropNet(width=4), CropNet(width=4, depth=4)
    assert "enc4.0.weight" in deeper.state_dict() and "enc4.0.weight" not in shipped.state_dict()
    assert set(shipped.state_dict()) < set(deeper.state_dict())  # the shipped names kept
    # the receptive field: the crop's corners reach the mask at its centre only through
    # the fourth scale
    torch.manual_seed(5)
    x = torch.randn(1, 1, 64, 64, requires_grad=True)
    for net, reaches in ((shipped, False), (deeper, True)):
        mask, _ = net.eval()(x)
        (grad,) = torch.autograd.grad(mask[0, 0, 32, 32], x)
        assert bool(grad[0, 0, :4, :4].abs().sum() > 0) is reaches
        assert grad[0, 0, 28:36, 28:36].abs().sum() > 0
    crops = crop_stage.make_crops("val", 6)
    trained = crop_stage.train_stage(crops, 1, batch=4, width=4, depth=4, log=lambda _: None)
    mask, classes = trained(torch.from_numpy(crops.x[:2]))
    assert mask.shape == (2, 1, 64, 64) and classes.shape == (2, 2)
    [onnx] = export_stage(Orientations(trained).eval(), tmp_path, crop_stage.SPEC, ["onnx"],
                          crops.x[:4], log=lambda _: None)
    assert onnx["validation"]["max_abs_difference"] < 1e-4
    with pytest.raises(ValueError, match="3 or 4 scales"):
        CropNet(depth=5)
