"""The demo lesion model (LesionNet), its phantom training data and training loop."""

from __future__ import annotations

import math
import multiprocessing
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from converters.phantoms import dataset_plan, dataset_sample
from firmware_app.imaging.preprocess import letterbox_grey

REPO_ROOT = Path(__file__).resolve().parent.parent
NAME, VERSION = "clinibox-demo-lesion", "1.0.0"
SIZE, STRIDE = 256, 8
GRID = SIZE // STRIDE
SHAPE = (1, 1, SIZE, SIZE)
OUTPUTS = ("lesion_logit", "centre_heatmap", "box_size", "cam")
LSE_SHARPNESS = 4.0
SEEDS = {"train": 101, "val": 202, "test": 303}


# -- model -----------------------------------------------------------------------------------


def _cbr(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout), nn.ReLU())


class LesionNet(nn.Module):
    """Stride-8 CNN: centre heatmap + box sizes (CenterNet-style) and a CAM-pooled logit.

    ``lesion_logit`` is the log-sum-exp pool (sharpness r) of ``cam``, a 1x1
    conv of the final features: ``max + log(mean(exp(r (cam - max)))) / r``.
    """

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 48), head: int = 16) -> None:
        super().__init__()
        a, b, c = widths
        self.features = nn.Sequential(
            _cbr(1, a, 2), _cbr(a, b, 2), _cbr(b, b), _cbr(b, c, 2), _cbr(c, c),
            _cbr(c, c, dilation=2), _cbr(c, c, dilation=4), _cbr(c, c))
        self.heat = nn.Sequential(_cbr(c, head), nn.Conv2d(head, 1, 1))
        self.size = nn.Sequential(_cbr(c, head), nn.Conv2d(head, 2, 1))
        self.cam = nn.Conv2d(c, 1, 1)
        nn.init.constant_(self.heat[-1].bias, -2.2)
        nn.init.constant_(self.cam.bias, -2.0)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image [N,1,256,256] -> the four named outputs."""
        f = self.features(image)
        cam = self.cam(f)
        flat = cam.flatten(1)
        top = flat.amax(dim=1, keepdim=True)
        pooled = torch.mean(torch.exp((flat - top) * LSE_SHARPNESS), dim=1, keepdim=True)
        logit = top + torch.log(pooled) * (1.0 / LSE_SHARPNESS)
        return {"lesion_logit": logit, "centre_heatmap": torch.sigmoid(self.heat(f)),
                "box_size": torch.sigmoid(self.size(f)), "cam": cam}


def fuse_batchnorm(model: LesionNet) -> LesionNet:
    """Fold every BatchNorm into its conv (eval mode), in place; returns the model."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Sequential) and len(module) == 3 and isinstance(
                module[1], nn.BatchNorm2d):
            module[0] = fuse_conv_bn_eval(module[0], module[1])
            module[1] = nn.Identity()
    return model


# -- data ------------------------------------------------------------------------------------


@dataclass
class Split:
    """Letterboxed phantoms (un-normalised planes) with labels and ground truth."""

    planes: np.ndarray  # float16 [N, 256, 256], letterbox of the [0,1] image
    labels: np.ndarray  # float32 [N]
    kinds: list[str]
    boxes: list[list[tuple[float, float, float, float]]]  # model-input pixels
    source_boxes: list[list[tuple[float, float, float, float]]]
    distractors: list[list[tuple[str, tuple[float, float, float, float]]]]
    transforms: list = field(default_factory=list)


def _make(job: tuple[int, int, list]) -> tuple:
    seed, index, plan = job
    p = dataset_sample(seed, index, plan)
    plane, t = letterbox_grey(p.image, SHAPE, 0.0, 1.0, {})
    inp = lambda b: tuple(v * t.scale + (t.offset_y if i % 2 else t.offset_x)  # noqa: E731
                          for i, v in enumerate(b))
    return (plane[0, 0].astype(np.float16), float(p.lesion), p.kind, [inp(b) for b in p.boxes],
            list(p.boxes), [(what, inp(b)) for what, b in p.distractors if b], t)


def make_split(name: str, count: int, workers: int = 2) -> Split:
    """Generate and letterbox ``count`` phantoms (CT/US alternating, half with lesions)."""
    seed = SEEDS[name]
    plan = dataset_plan(seed, count)
    jobs = [(seed, i, plan) for i in range(count)]
    if workers > 1 and count >= 64:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            rows = pool.map(_make, jobs, chunksize=16)
    else:
        rows = [_make(j) for j in jobs]
    cols = list(zip(*rows, strict=True))
    return Split(np.stack(cols[0]), np.asarray(cols[1], np.float32), list(cols[2]),
                 list(cols[3]), list(cols[4]), list(cols[5]), list(cols[6]))


def targets(boxes: list) -> tuple[np.ndarray, ...]:
    """Gaussian centre heatmap, size map (fraction of input), centre mask, lesion extent."""
    heat = np.zeros((1, GRID, GRID), np.float32)
    size = np.zeros((2, GRID, GRID), np.float32)
    mask = np.zeros((1, GRID, GRID), np.float32)
    extent = np.zeros((1, GRID, GRID), np.float32)
    yy, xx = np.mgrid[0:GRID, 0:GRID] + 0.5
    for x0, y0, x1, y1 in boxes:
        ix = min(GRID - 1, max(0, int((x0 + x1) / 2 / STRIDE)))
        iy = min(GRID - 1, max(0, int((y0 + y1) / 2 / STRIDE)))
        w, h = (x1 - x0) / SIZE, (y1 - y0) / SIZE
        sigma = max(0.7, math.sqrt(w * h) * GRID / 6)
        g = np.exp(-((xx - 0.5 - ix) ** 2 + (yy - 0.5 - iy) ** 2) / (2 * sigma**2))
        heat[0] = np.maximum(heat[0], g)
        heat[0, iy, ix] = 1.0
        size[:, iy, ix] = (w, h)
        mask[0, iy, ix] = 1.0
        rx, ry = max(0.5, w * GRID / 2), max(0.5, h * GRID / 2)
        ex, ey = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
        extent[0][((xx - ex) / rx) ** 2 + ((yy - ey) / ry) ** 2 <= 1] = 1.0
        extent[0, iy, ix] = 1.0
    return heat, size, mask, extent


# -- training --------------------------------------------------------------------------------


def _focal(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    pred = pred.clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    pos_loss = -(torch.log(pred) * (1 - pred) ** 2 * pos).sum()
    neg_loss = -(torch.log(1 - pred) * pred**2 * (1 - gt) ** 4 * (1 - pos)).sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1.0)


def train(split: Split, mean: float, std: float, epochs: int, batch: int = 32,
          seed: int = 0, cam_weight: float = 0.5, log=print) -> LesionNet:
    """Train LesionNet: BCE (image logit), focal (centre heatmap), L1 (sizes at centres)
    and a deep-supervision BCE pulling the CAM towards the lesion extent."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = LesionNet().to(memory_format=torch.channels_last)
    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    maps = [targets(b) for b in split.boxes]
    heat = torch.from_numpy(np.stack([m[0] for m in maps]))
    size = torch.from_numpy(np.stack([m[1] for m in maps]))
    mask = torch.from_numpy(np.stack([m[2] for m in maps]))
    extent = torch.from_numpy(np.stack([m[3] for m in maps]))
    labels = torch.from_numpy(split.labels)[:, None]
    planes = torch.from_numpy(split.planes)
    steps = epochs * math.ceil(len(labels) / batch)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps, pct_start=0.15)
    bce = nn.BCEWithLogitsLoss()
    for epoch in range(epochs):
        model.train()
        order, total, start = rng.permutation(len(labels)), 0.0, time.time()
        for i in range(0, len(order), batch):
            idx = torch.from_numpy(order[i : i + batch])
            x = ((planes[idx].float() - mean) / std)[:, None].contiguous(
                memory_format=torch.channels_last)
            h, s, m, e = heat[idx], size[idx], mask[idx], extent[idx]
            if rng.random() < 0.5:
                x, h, s, m, e = (t.flip(-1) for t in (x, h, s, m, e))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = {k: v.float() for k, v in model(x).items()}
            loss = (bce(out["lesion_logit"], labels[idx]) + _focal(out["centre_heatmap"], h)
                    + 10 * (torch.abs(out["box_size"] - s) * m).sum() / m.sum().clamp(min=1)
                    + cam_weight * bce(out["cam"], e))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        log(f"epoch {epoch + 1}/{epochs}: loss {total / len(labels):.4f} "
            f"({time.time() - start:.0f} s{', bf16 autocast' if bf16 else ''})")
    return model.to(memory_format=torch.contiguous_format).eval()


@torch.no_grad()
def torch_outputs(model: nn.Module, planes: np.ndarray, mean: float, std: float,
                  batch: int = 64) -> dict[str, np.ndarray]:
    """Run the torch model over letterboxed planes; outputs stacked on axis 0."""
    model.eval()
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in OUTPUTS}
    for i in range(0, len(planes), batch):
        x = ((torch.from_numpy(planes[i : i + batch]).float() - mean) / std)[:, None]
        for k, v in model(x).items():
            chunks[k].append(v.numpy())
    return {k: np.concatenate(v) for k, v in chunks.items()}


