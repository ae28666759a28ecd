"""The demo lesion model (LesionNet), its phantom training data and training loop."""

from __future__ import annotations

import math
import multiprocessing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.imaging.preprocess import letterbox, letterbox_grey
from phantoms.images import CLASSES, dataset_plan, dataset_sample

REPO_ROOT = Path(__file__).resolve().parent.parent
NAME, VERSION = "clinibox-demo-lesion", "1.0.0"
SIZE, STRIDE, MASK_STRIDE = 256, 8, 4
GRID, MASK_GRID = SIZE // STRIDE, SIZE // MASK_STRIDE
SHAPE = (1, 1, SIZE, SIZE)
OUTPUTS = ("lesion_logit", "centre_heatmap", "box_size", "cam", "lesion_class", "lesion_mask",
           "features")
LSE_SHARPNESS = 4.0
SEEDS = {"train": 101, "val": 202, "test": 303}
#: a 32x32 cell counts as a lesion cell (class target) from this share of lesion inside
CLASS_COVER = 0.2
#: added to the scaled pooled features before their log (keeps dead channels finite)
FEATURE_EPS = 0.1


# -- model -----------------------------------------------------------------------------------


def _cbr(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout), nn.ReLU())


class LesionNet(nn.Module):
    """Stride-8 CNN: centre heatmap + box sizes (CenterNet-style), a CAM-pooled logit,
    per-cell benign/malignant logits, a stride-4 lesion mask and pooled features.

    ``lesion_logit`` is the log-sum-exp pool (sharpness r) of ``cam``, a 1x1
    conv of the final features: ``max + log(mean(exp(r (cam - max)))) / r``.
    ``lesion_mask`` comes from a light decoder: the final features, lifted and
    upsampled x2, joined with the stride-4 features (a skip connection).
    ``features`` is what the validated range (OOD guard) measures of the model,
    beside the input's own statistics that the box computes in float
    (``engine/inference/validated_range.py``): the global average pool of
    the final feature maps. Each value is divided by
    its mean on the training phantoms before ``log(· + FEATURE_EPS)`` (closer
    to Gaussian; the scaling keeps the log's argument well above an INT8
    quantisation step, so no artifact gives log(0)), then standardised, so
    every dimension weighs alike in the range's shrunk covariance
    (:func:`scale_features` sets the constants).
    """

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 48), head: int = 16,
                 mask: int | None = None) -> None:
        super().__init__()
        a, b, c = widths
        m = mask or head
        self.stem = nn.Sequential(_cbr(1, a, 2), _cbr(a, b, 2), _cbr(b, b))  # stride 4
        self.body = nn.Sequential(_cbr(b, c, 2), _cbr(c, c), _cbr(c, c, dilation=2),
                                  _cbr(c, c, dilation=4), _cbr(c, c))  # stride 8
        self.heat = nn.Sequential(_cbr(c, head), nn.Conv2d(head, 1, 1))
        self.size = nn.Sequential(_cbr(c, head), nn.Conv2d(head, 2, 1))
        self.kind = nn.Sequential(_cbr(c, head), nn.Conv2d(head, len(CLASSES), 1))
        self.cam = nn.Conv2d(c, 1, 1)
        self.lift = _cbr(c, m)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.fuse = nn.Sequential(_cbr(m + b, m), _cbr(m, m), nn.Conv2d(m, 1, 1))
        nn.init.constant_(self.heat[-1].bias, -2.2)
        nn.init.constant_(self.cam.bias, -2.0)
        nn.init.constant_(self.fuse[-1].bias, -3.0)
        # set by scale_features: 1 / the training phantoms' mean of each pooled value, then
        # the mean and 1 / the standard deviation of its log
        for name, value in (("feature_gain", 1.0), ("feature_centre", 0.0),
                            ("feature_spread", 1.0)):
            self.register_buffer(name, torch.full((c,), value))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image [N,1,256,256] -> the seven named outputs."""
        s4 = self.stem(image)
        f = self.body(s4)
        cam = self.cam(f)
        flat = cam.flatten(1)
        top = flat.amax(dim=1, keepdim=True)
        pooled = torch.mean(torch.exp((flat - top) * LSE_SHARPNESS), dim=1, keepdim=True)
        logit = top + torch.log(pooled) * (1.0 / LSE_SHARPNESS)
        mask = self.fuse(torch.cat([self.up(self.lift(f)), s4], dim=1))
        pooled = f.mean(dim=(2, 3))
        features = (torch.log(pooled * self.feature_gain + FEATURE_EPS) - self.feature_centre
                    ) * self.feature_spread
        return {"lesion_logit": logit, "centre_heatmap": torch.sigmoid(self.heat(f)),
                "box_size": torch.sigmoid(self.size(f)), "cam": cam,
                "lesion_class": self.kind(f), "lesion_mask": mask, "features": features}


def scale_features(model: LesionNet, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Set the ``features`` constants from inputs ``x`` [N, 1, H, W] (training phantoms):
    ``feature_gain`` = 1 / each pooled value's mean, then the mean (``feature_centre``) and
    1 / the standard deviation (``feature_spread``) of its log. In place, the model left in
    eval; returns the standardised features of ``x``."""
    model.eval()

    def run() -> torch.Tensor:
        return torch.cat([model(torch.from_numpy(np.ascontiguousarray(
            x[i:i + batch], np.float32)))["features"] for i in range(0, len(x), batch)])

    with torch.no_grad():
        for name in ("feature_gain", "feature_spread"):
            getattr(model, name).fill_(1.0)
        model.feature_centre.fill_(0.0)
        raw = torch.exp(run()) - FEATURE_EPS
        model.feature_gain.copy_(1.0 / raw.mean(dim=0).clamp(min=1e-3))
        logs = run()
        model.feature_centre.copy_(logs.mean(dim=0))
        model.feature_spread.copy_(1.0 / logs.std(dim=0).clamp(min=1e-3))
        return run().numpy()


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


def lesion_net_from_onnx(path: str | Path, widths: tuple[int, int, int], head: int,
                         mask: int) -> LesionNet:
    """The BN-folded LesionNet that an FP32 ONNX graph exported from one holds (a demo
    package's ``model.fp32.onnx``), weights and buffers read back by their names.

    Every conv takes the channel counts its weights have, so a pruned network comes back
    with its pruned widths; ``widths``, ``head`` and ``mask`` name the architecture it was
    pruned from. For rebuilding a package when its first stage's checkpoint is lost: the
    package's own float graph is that checkpoint, BatchNorm folded. Raises ``ValueError``
    when the graph lacks a weight the network has.
    """
    import onnx
    from onnx import numpy_helper

    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
               for t in onnx.load(str(path)).graph.initializer}
    model = fuse_batchnorm(LesionNet(widths, head, mask))
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Conv2d):
            continue
        weight = weights.get(f"{name}.weight")
        if weight is None:
            raise ValueError(f"{path} holds no weight for {name}")
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, nn.Conv2d(
            weight.shape[1], weight.shape[0], module.kernel_size, module.stride,
            module.padding, module.dilation))
    missing = sorted(set(model.state_dict()) - set(weights))
    if missing:
        raise ValueError(f"{path} holds no {', '.join(missing)}")
    model.load_state_dict({k: weights[k] for k in model.state_dict()})
    return model.eval()


# -- data ------------------------------------------------------------------------------------


@dataclass
class Split:
    """Letterboxed phantoms (un-normalised planes) with labels and ground truth.

    ``cover`` is the share of each stride-4 cell inside a lesion (the mask
    target); ``classes`` the class index of each stride-8 lesion cell (-1:
    not a lesion cell); ``truth`` each lesion's class, source box and sizes
    (``LesionTruth.to_dict``), ``spacings`` each phantom's (row, column) mm.
    """

    planes: np.ndarray  # float16 [N, 256, 256], letterbox of the [0,1] image
    labels: np.ndarray  # float32 [N]
    kinds: list[str]
    boxes: list[list[tuple[float, float, float, float]]]  # model-input pixels
    source_boxes: list[list[tuple[float, float, float, float]]]
    distractors: list[list[tuple[str, tuple[float, float, float, float]]]]
    transforms: list = field(default_factory=list)
    cover: np.ndarray | None = None  # float16 [N, 64, 64]
    classes: np.ndarray | None = None  # int8 [N, 32, 32]
    truth: list[list[dict]] = field(default_factory=list)
    spacings: list[tuple[float, float]] = field(default_factory=list)


def _pool(plane: np.ndarray, stride: int) -> np.ndarray:
    """Mean over stride x stride cells of a [256, 256] plane."""
    n = plane.shape[0] // stride
    return plane.reshape(n, stride, n, stride).mean(axis=(1, 3))


def lesion_maps(phantom, plane_size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Mask target (lesion share of every stride-4 cell) and class target (class index of
    every stride-8 cell holding at least ``CLASS_COVER`` of a lesion, or its box centre;
    -1 elsewhere) in model-input geometry."""
    cover = np.zeros((MASK_GRID, MASK_GRID), np.float32)
    share = np.zeros((GRID, GRID), np.float32)
    classes = np.full((GRID, GRID), -1, np.int8)
    h, w = phantom.image.shape
    for lesion in phantom.lesions:
        plane, t = letterbox(lesion.full_mask(h, w).astype(np.float32), plane_size, plane_size)
        cover = np.maximum(cover, _pool(plane, MASK_STRIDE))
        cells = _pool(plane, STRIDE)
        x0, y0, x1, y1 = lesion.box
        cx = min(GRID - 1, int(((x0 + x1) / 2 * t.scale + t.offset_x) / STRIDE))
        cy = min(GRID - 1, int(((y0 + y1) / 2 * t.scale + t.offset_y) / STRIDE))
        cells[cy, cx] = max(cells[cy, cx], CLASS_COVER)
        mine = (cells >= CLASS_COVER) & (cells > share)
        classes[mine] = CLASSES.index(lesion.label)
        share = np.maximum(share, cells)
    return cover, classes


def _make(job: tuple[int, int, list]) -> tuple:
    seed, index, plan = job
    p = dataset_sample(seed, index, plan)
    plane, t = letterbox_grey(p.image, SHAPE, 0.0, 1.0, {})
    inp = lambda b: tuple(v * t.scale + (t.offset_y if i % 2 else t.offset_x)  # noqa: E731
                          for i, v in enumerate(b))
    cover, classes = lesion_maps(p)
    return (plane[0, 0].astype(np.float16), float(p.lesion), p.kind, [inp(b) for b in p.boxes],
            list(p.boxes), [(what, inp(b)) for what, b in p.distractors if b], t,
            cover.astype(np.float16), classes, [x.to_dict() for x in p.lesions], p.spacing)


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
                 list(cols[3]), list(cols[4]), list(cols[5]), list(cols[6]),
                 np.stack(cols[7]), np.stack(cols[8]), list(cols[9]), list(cols[10]))


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


def _mask_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE summed over the mask and divided by the lesion area (+ 64 cells per image), so a
    lesion's boundary weighs as much in a batch of small lesions as of large ones."""
    loss = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="sum")
    return loss / (target.sum() + 64.0 * len(target))


def _dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice of the mask, averaged over the images that hold a lesion (0 if none):
    it penalises a mask too small or too large as a whole, which BCE on uncertain cells
    does not (their 0.5 contour shrinks)."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    held = (t.sum(dim=1) > 0).float()
    dice = (2 * (p * t).sum(dim=1) + 1) / (p.sum(dim=1) + t.sum(dim=1) + 1)
    return ((1 - dice) * held).sum() / held.sum().clamp(min=1)


class LesionTask:
    """The demo model's objective, for ``converters.training.train_epochs``.

    Hard loss: BCE (image logit) + focal (centre heatmap) + 10 L1 (box sizes at
    centres) + ``cam_weight`` BCE pulling the CAM towards the lesion extent +
    ``class_weight`` cross-entropy of the benign/malignant logits at lesion
    cells + ``mask_weight`` BCE of the stride-4 mask against each cell's lesion
    share (per lesion area) + ``dice_weight`` soft Dice of the mask. The
    ``features`` output is not trained.
    Soft loss (distillation): BCE of the student's logit and CAM against the
    teacher's at temperature T (times T²), MSE of the heatmap and sizes, KL of
    the class logits at T (times T²) where the teacher's CAM sees a lesion, and
    BCE and Dice of the mask against the teacher's mask probabilities.
    """

    def __init__(self, cam_weight: float = 0.5, class_weight: float = 1.0,
                 mask_weight: float = 3.0, dice_weight: float = 1.0) -> None:
        self.cam_weight, self.class_weight, self.mask_weight = cam_weight, class_weight, mask_weight
        self.dice_weight = dice_weight
        self.bce = nn.BCEWithLogitsLoss()

    def hard_loss(self, out: dict[str, torch.Tensor], t: dict[str, torch.Tensor]) -> torch.Tensor:
        """Loss against the phantoms' ground truth."""
        m = t["mask"]
        cls = t["cls"][:, 0].long()
        cells = (cls >= 0).float()
        ce = nn.functional.cross_entropy(out["lesion_class"], cls.clamp(min=0), reduction="none")
        return (self.bce(out["lesion_logit"], t["label"][:, None].float())
                + _focal(out["centre_heatmap"], t["heat"])
                + 10 * (torch.abs(out["box_size"] - t["size"]) * m).sum() / m.sum().clamp(min=1)
                + self.cam_weight * self.bce(out["cam"], t["extent"])
                + self.class_weight * (ce * cells).sum() / cells.sum().clamp(min=1)
                + self.mask_weight * _mask_bce(out["lesion_mask"], t["cover"])
                + self.dice_weight * _dice(out["lesion_mask"], t["cover"]))

    def soft_loss(self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                  temperature: float) -> torch.Tensor:
        """Loss against the teacher's outputs (soft targets)."""
        def soft(name: str) -> torch.Tensor:
            return nn.functional.binary_cross_entropy_with_logits(
                student[name] / temperature, torch.sigmoid(teacher[name] / temperature))

        where = torch.sigmoid(teacher["cam"])[:, 0]
        teacher_mask = torch.sigmoid(teacher["lesion_mask"])
        kl = nn.functional.kl_div(
            nn.functional.log_softmax(student["lesion_class"] / temperature, dim=1),
            nn.functional.log_softmax(teacher["lesion_class"] / temperature, dim=1),
            reduction="none", log_target=True).sum(dim=1)
        return (temperature**2 * (soft("lesion_logit") + self.cam_weight * soft("cam"))
                + 10 * nn.functional.mse_loss(student["centre_heatmap"],
                                              teacher["centre_heatmap"])
                + 10 * nn.functional.mse_loss(student["box_size"], teacher["box_size"])
                + self.class_weight * temperature**2 * (kl * where).sum()
                / where.sum().clamp(min=1)
                + self.mask_weight * _mask_bce(student["lesion_mask"], teacher_mask)
                + self.dice_weight * _dice(student["lesion_mask"], teacher_mask))

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
    """A split as ``converters.training.TrainData`` with the detection, class and mask
    targets."""
    from converters.training import TrainData

    maps = [targets(b) for b in split.boxes]
    return TrainData(model_inputs(split.planes, mean, std), {
        "label": split.labels.astype(np.int64),
        **{k: np.stack([m[i] for m in maps])
           for i, k in enumerate(("heat", "size", "mask", "extent"))},
        "cover": split.cover.astype(np.float32)[:, None],
        "cls": split.classes.astype(np.int64)[:, None]})
