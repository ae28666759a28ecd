"""The demo lesion model (LesionNet), its phantom training data and training loop."""

from __future__ import annotations

import math
import multiprocessing
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


class LesionTask:
    """The demo model's objective, for ``converters.training.train_epochs``.

    Hard loss: BCE (image logit) + focal (centre heatmap) + 10 L1 (box sizes at
    centres) + ``cam_weight`` BCE pulling the CAM towards the lesion extent.
    Soft loss (distillation): BCE of the student's logit and CAM against the
    teacher's at temperature T (times T²), plus MSE of the heatmap and sizes.
    """

    def __init__(self, cam_weight: float = 0.5) -> None:
        self.cam_weight = cam_weight
        self.bce = nn.BCEWithLogitsLoss()

    def hard_loss(self, out: dict[str, torch.Tensor], t: dict[str, torch.Tensor]) -> torch.Tensor:
        """Loss against the phantoms' ground truth."""
        m = t["mask"]
        return (self.bce(out["lesion_logit"], t["label"][:, None].float())
                + _focal(out["centre_heatmap"], t["heat"])
                + 10 * (torch.abs(out["box_size"] - t["size"]) * m).sum() / m.sum().clamp(min=1)
                + self.cam_weight * self.bce(out["cam"], t["extent"]))

    def soft_loss(self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                  temperature: float) -> torch.Tensor:
        """Loss against the teacher's outputs (soft targets)."""
        def soft(name: str) -> torch.Tensor:
            return nn.functional.binary_cross_entropy_with_logits(
                student[name] / temperature, torch.sigmoid(teacher[name] / temperature))

        return (temperature**2 * (soft("lesion_logit") + self.cam_weight * soft("cam"))
                + 10 * nn.functional.mse_loss(student["centre_heatmap"],
                                              teacher["centre_heatmap"])
                + 10 * nn.functional.mse_loss(student["box_size"], teacher["box_size"]))

    def augment(self, x: torch.Tensor, t: dict[str, torch.Tensor], rng: np.random.Generator
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Horizontal flip of half the batches (image and every map)."""
        if rng.random() < 0.5:
            return x.flip(-1), {k: (v.flip(-1) if v.ndim == 4 else v) for k, v in t.items()}
        return x, t


def model_inputs(planes: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Letterboxed planes [N, H, W] → normalised model inputs float32 [N, 1, H, W]."""
    return ((planes.astype(np.float32) - mean) / std)[:, None]


def train_data(split: Split, mean: float, std: float):
    """A split as ``converters.training.TrainData`` with the detection targets."""
    from converters.training import TrainData

    maps = [targets(b) for b in split.boxes]
    return TrainData(model_inputs(split.planes, mean, std), {"label": split.labels.astype(np.int64),
                         **{k: np.stack([m[i] for m in maps])
                            for i, k in enumerate(("heat", "size", "mask", "extent"))}})
