"""Train the demo lesion detector on phantoms and build its signed model package.

    python -m converters.train_demo --out models/clinibox-demo-lesion/1.0.0 [--quick]

Workstation only (``convert`` extra); the box never imports this. Phantoms ->
``letterbox_grey`` (exactly as the box) -> stride-8 CNN -> ONNX / OpenVINO / TFLite,
FP32 and INT8 -> each verified against torch on held-out phantoms -> golden cases ->
signed ``manifest.json`` + ``MODEL_CARD.md``. TFLite needs ``litert-torch`` (too heavy
for this venv): this module re-runs itself as ``--tflite-worker`` under
``--litert-python`` (default ``$CLINIBOX_LITERT_PYTHON`` or ``/tmp/venv-lt/bin/python``)
and skips TFLite with a warning when that interpreter is absent.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from converters.phantoms import dataset_plan, dataset_sample
from firmware_app.imaging.preprocess import letterbox_grey
from firmware_app.inference.postprocess import Box, get_postprocessor, iou, sigmoid

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


# -- metrics ---------------------------------------------------------------------------------


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank (Mann-Whitney) formula, ties counted half."""
    labels = np.asarray(labels).astype(bool)
    pos, neg = np.asarray(scores)[labels][:, None], np.asarray(scores)[~labels][None, :]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def operating_point(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    """Sensitivity and specificity at ``probability >= threshold``."""
    labels, hit = np.asarray(labels).astype(bool), np.asarray(probs) >= threshold
    return {"sensitivity": float(hit[labels].mean()) if labels.any() else float("nan"),
            "specificity": float((~hit[~labels]).mean()) if (~labels).any() else float("nan")}


def choose_thresholds(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """finding: maximises sensitivity + specificity; alert: specificity >= 0.99, above finding."""
    candidates = np.unique(np.round(probs, 4))
    if len(candidates) < 2:
        return 0.5, 0.9
    best = max(candidates, key=lambda t: (sum(operating_point(labels, probs, t).values()), -t))
    finding = float(np.clip(best, 0.05, 0.9))
    negatives = np.sort(probs[~labels.astype(bool)])
    spec99 = float(negatives[min(len(negatives) - 1, math.ceil(0.99 * len(negatives)))])
    alert = float(np.clip(max(spec99 + 1e-4, finding + 0.1), finding + 0.05, 0.99))
    return round(finding, 4), round(alert, 4)


# -- TFLite worker (runs under the litert-torch interpreter) ---------------------------------


def tflite_worker(work: Path) -> None:
    """Convert ``work/state_dict.pt`` to ``model.fp32.tflite`` and ``model.int8.tflite``."""
    import litert_torch
    from litert_torch.quantize import pt2e_quantizer as pt2e
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model = fuse_batchnorm(LesionNet())
    model.load_state_dict(torch.load(work / "state_dict.pt", weights_only=True))
    sample = {"image": torch.zeros(SHAPE)}
    litert_torch.convert(model, sample_kwargs=sample).export(str(work / "model.fp32.tflite"))
    quantizer = pt2e.PT2EQuantizer().set_global(
        pt2e.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    graph = torch.export.export(model, (), sample).module()
    graph = prepare_pt2e(graph, quantizer)
    for x in np.load(work / "calibration.npy"):
        graph(image=torch.from_numpy(x[None]))
    graph = convert_pt2e(graph, fold_quantize=False)
    litert_torch.convert(graph, sample_kwargs=sample,
                         quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(
        str(work / "model.int8.tflite"))


def export_tflite(model: LesionNet, calibration: np.ndarray, out: Path, python: str,
                  log=print) -> list[str]:
    """Run :func:`tflite_worker` on the (BN-fused) model in the litert-torch interpreter."""
    if not python or not Path(python).exists():
        log(f"TFLite skipped: no litert-torch interpreter at {python!r} (--litert-python)")
        return []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.save(model.state_dict(), work / "state_dict.pt")
        np.save(work / "calibration.npy", calibration.astype(np.float32))
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3")
        run = subprocess.run([python, "-m", "converters.train_demo", "--tflite-worker", tmp],
                             cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
        written = [n for n in ("model.fp32.tflite", "model.int8.tflite") if (work / n).exists()]
        if run.returncode != 0:
            log(f"TFLite export failed after {written}; shipping those only:\n"
                + run.stderr[-3000:])
        for name in written:
            shutil.copy(work / name, out / name)
        return written


# -- exports ---------------------------------------------------------------------------------


def export_onnx(model: LesionNet, path: Path) -> None:
    """FP32 ONNX via the dynamo exporter (opset 18, static shape, weights inside the file);
    checked output by output against torch."""
    import onnx

    x = torch.randn(SHAPE)
    program = torch.onnx.export(model.eval(), (x,), dynamo=True, opset_version=18,
                                input_names=["image"], output_names=list(OUTPUTS),
                                external_data=False)
    program.save(str(path), external_data=False)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path), save_as_external_data=False)
    for side in path.parent.glob(path.name + "*.data"):
        side.unlink()
    got, want = runner("onnx", path)(x.numpy()), torch_outputs(model, x.numpy()[:, 0], 0.0, 1.0)
    for name in OUTPUTS:
        if not np.allclose(got[name], want[name], atol=1e-3):
            raise RuntimeError(f"ONNX output {name!r} does not match torch")


def quantize_onnx(fp32: Path, out: Path, calibration: np.ndarray, exclude_heads: bool) -> list:
    """ORT static QDQ int8 (per-channel weights), calibrated on phantoms; returns float nodes."""
    import onnx
    import onnxruntime.quantization as oq
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(oq.CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {"image": x[None].astype(np.float32)}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre)).graph
        shapes = {t.name: list(t.dims) for t in graph.initializer}
        excluded = [n.name for n in graph.node if exclude_heads and n.op_type == "Conv"
                    and shapes.get(n.input[1], [0] * 4)[2:] == [1, 1]]  # cam + output heads
        oq.quantize_static(str(pre), str(out), Reader(), quant_format=oq.QuantFormat.QDQ,
                           per_channel=True, activation_type=oq.QuantType.QInt8,
                           weight_type=oq.QuantType.QInt8, op_types_to_quantize=["Conv", "Relu"],
                           nodes_to_exclude=excluded, calibrate_method=oq.CalibrationMethod.MinMax)
    return excluded


def quantize_openvino(out_dir: Path, calibration: np.ndarray, exclude_heads: bool) -> list:
    """NNCF INT8 of the FP32 IR, calibrated on phantoms; returns the ops kept in float."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    model = ov.Core().read_model(str(out_dir / "model.fp32.xml"))
    excluded = []
    if exclude_heads:
        excluded = [op.get_friendly_name() for op in model.get_ordered_ops()
                    if op.get_type_name() == "Convolution"
                    and list(op.input(1).get_partial_shape().to_shape())[2:] == [1, 1]]
    minmax = AdvancedQuantizationParameters(
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    quantized = nncf.quantize(model, nncf.Dataset([x[None] for x in calibration]),
                              subset_size=len(calibration), advanced_parameters=minmax,
                              fast_bias_correction=False,
                              ignored_scope=nncf.IgnoredScope(names=excluded) if excluded else None)
    ov.save_model(quantized, str(out_dir / "model.int8.xml"), compress_to_fp16=False)
    return excluded


def runner(fmt: str, path: Path):
    """A function ``image [1,1,H,W] float32 -> {output name: array}`` for one artifact."""
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        return lambda x: dict(zip(names, sess.run(None, {"image": x}), strict=True))
    if fmt == "openvino-ir":
        import openvino as ov

        # the CPU plugin defaults to bf16 on AMX/AVX512-BF16 CPUs: ask for real f32
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        outs = compiled.outputs

        def run_ov(x):
            res = compiled([x])
            return {o.get_any_name(): np.asarray(res[o]) for o in outs}

        return run_ov
    from ai_edge_litert.interpreter import Interpreter

    sig = Interpreter(model_path=str(path), num_threads=2).get_signature_runner()
    qin = sig.get_input_details()["image"]
    qout = sig.get_output_details()

    def run_tflite(x):
        if qin["dtype"] != np.float32:
            scale, zero = qin["quantization"]
            info = np.iinfo(qin["dtype"])
            x = np.clip(np.rint(x / scale + zero), info.min, info.max).astype(qin["dtype"])
        res = sig(image=x)
        for name, detail in qout.items():
            if detail["dtype"] != np.float32:
                scale, zero = detail["quantization"]
                res[name] = (res[name].astype(np.float32) - zero) * scale
        return res

    return run_tflite


def run_all(fn, planes: np.ndarray, mean: float, std: float) -> dict[str, np.ndarray]:
    """Run an artifact one image at a time (static batch 1); outputs stacked."""
    rows = [fn(((p.astype(np.float32) - mean) / std)[None, None]) for p in planes]
    return {k: np.concatenate([r[k] for r in rows]) for k in OUTPUTS}


def ms_per_image(fn, runs: int = 40) -> float:
    """Median wall time of one inference in ms, after five warm-up runs."""
    x, times = np.zeros(SHAPE, np.float32), []
    for i in range(runs + 5):
        start = time.perf_counter()
        fn(x)
        times += [(time.perf_counter() - start) * 1000] if i >= 5 else []
    return round(float(np.median(times)), 3)


def validate(outs: dict, ref: dict, labels: np.ndarray, finding: float) -> dict:
    """Fidelity of an artifact's outputs against torch's, and its own accuracy."""
    p, q = sigmoid(outs["lesion_logit"][:, 0]), sigmoid(ref["lesion_logit"][:, 0])
    return {"auc": round(auc(labels, p), 4),
            **{k: round(v, 4) for k, v in operating_point(labels, p, finding).items()},
            "max_abs_delta_probability": round(float(np.abs(p - q).max()), 5),
            "decision_agreement": round(float(((p >= finding) == (q >= finding)).mean()), 4),
            "max_abs_delta_heatmap": round(float(np.abs(
                outs["centre_heatmap"] - ref["centre_heatmap"]).max()), 5),
            "heldout_images": len(labels), "reference": "torch fp32"}


# -- packaging -------------------------------------------------------------------------------


def box_metrics(outs: dict, split: Split, threshold: float, params: dict) -> dict:
    """Lesion recall / box precision at IoU >= 0.3, decoded by the box's own decoder."""
    decode = get_postprocessor("centre_heatmap_boxes")
    found = predicted = matched = truth = 0
    for i, transform in enumerate(split.transforms):
        one = {k: v[i : i + 1] for k, v in outs.items()}
        boxes = decode(one, params, {"box": threshold}, transform).boxes
        gts = [Box(*b, 1.0, "lesion") for b in split.source_boxes[i]]
        predicted, truth = predicted + len(boxes), truth + len(gts)
        matched += sum(any(iou(b, g) >= 0.3 for g in gts) for b in boxes)
        found += sum(any(iou(b, g) >= 0.3 for b in boxes) for g in gts)
    recall, precision = found / max(truth, 1), matched / max(predicted, 1)
    f1 = 2 * recall * precision / max(recall + precision, 1e-9)
    return {"lesion_recall": round(recall, 4), "box_precision": round(precision, 4),
            "f1": round(f1, 4), "threshold": threshold}


def false_positive_analysis(outs: dict, split: Split, finding: float) -> dict:
    """Where false positives sit: on a distractor (cyst, vessel) or elsewhere; per-kind AUC."""
    probs, neg = sigmoid(outs["lesion_logit"][:, 0]), split.labels == 0
    on_distractor, fps = {"cyst": 0, "vessel": 0}, np.nonzero(neg & (probs >= finding))[0]
    for i in fps:
        y, x = np.unravel_index(np.argmax(outs["cam"][i, 0]), (GRID, GRID))
        cx, cy = (x + 0.5) * STRIDE, (y + 0.5) * STRIDE
        for what, (x0, y0, x1, y1) in split.distractors[i]:
            if x0 - STRIDE <= cx <= x1 + STRIDE and y0 - STRIDE <= cy <= y1 + STRIDE:
                on_distractor[what] += 1
                break
    with_cyst = np.array([any(w == "cyst" for w, _ in d) for d in split.distractors]) & neg
    kinds = np.array(split.kinds)
    return {"false_positives": len(fps), "negatives": int(neg.sum()),
            "false_positives_peaking_on": on_distractor,
            "specificity_negatives_with_cyst": round(float(
                (probs[with_cyst] < finding).mean()), 4) if with_cyst.any() else None,
            "specificity_negatives_without_cyst": round(float(
                (probs[neg & ~with_cyst] < finding).mean()), 4),
            "auc_by_kind": {k: round(auc(split.labels[kinds == k], probs[kinds == k]), 4)
                            for k in sorted(set(split.kinds))}}


def golden_cases(split: Split, ref: dict, art_probs: dict[str, np.ndarray], finding: float,
                 out: Path, mean: float, std: float) -> list[dict]:
    """CT/US cases with and without lesion for the self-test, saved exactly as preprocessed.

    Chosen in the sensitive range (lesion p near 0.85, normal near 0.15, not saturated)
    among images every artifact decides correctly, preferring close agreement."""
    probs = sigmoid(ref["lesion_logit"][:, 0])
    stacked = np.stack(list(art_probs.values()))
    spread = np.abs(stacked - probs).max(axis=0)
    plan = dataset_plan(SEEDS["test"], len(split.labels))
    cases = []
    for kind in ("ct", "us"):
        for lesion, target in ((True, 0.85), (False, 0.15)):
            right = (stacked >= finding).all(0) if lesion else (stacked < finding).all(0)
            pool = [i for i in range(len(probs)) if split.kinds[i] == kind
                    and bool(split.labels[i]) == lesion]
            pool = [i for i in pool if right[i]] or pool  # an untrained (--quick) model
            if not pool:
                continue
            i = min(pool, key=lambda j: spread[j] + 0.5 * abs(probs[j] - target))
            phantom = dataset_sample(SEEDS["test"], i, plan)
            tensor, _ = letterbox_grey(phantom.image, SHAPE, mean, std, {})
            name = f"golden/{kind}-{'lesion' if lesion else 'normal'}.npy"
            (out / "golden").mkdir(exist_ok=True)
            np.save(out / name, tensor.astype(np.float32))
            h, w = phantom.image.shape
            cases.append({"input": name, "description": f"{kind.upper()} phantom {w}x{h}, "
                          f"{'with' if lesion else 'without'} lesion",
                          "phantom": {"seed": SEEDS["test"], "index": int(i),
                                      "count": len(split.labels)}})
    return cases


def _artifact(fmt: str, precision: str, path: str, out: Path, extra: tuple = ()) -> dict:
    from firmware_app.models import sha256_file

    files = {p: sha256_file(out / p) for p in (path, *extra)}
    return {"format": fmt, "precision": precision, "path": path, "files": files,
            "validation": {}}


def export_all(fused: LesionNet, stage: Path, calib: np.ndarray, val: Split, ref_val: dict,
               norm: tuple[float, float], finding: float, args: argparse.Namespace,
               log=print) -> tuple[list[dict], dict]:
    """Write every artifact. An INT8 one is accepted when, on validation, decisions agree
    on >= 97 % and AUC is within 0.01 of torch; otherwise it is re-made with the 1x1 output
    convs kept in float. Returns (artifacts, quantisation notes)."""
    export_onnx(fused, stage / "model.fp32.onnx")
    arts = [_artifact("onnx", "fp32", "model.fp32.onnx", stage)]
    notes: dict = {}
    val_auc = auc(val.labels, sigmoid(ref_val["lesion_logit"][:, 0]))

    def int8(make, fmt: str, path: str, extra: tuple = ()) -> None:
        for heads_float in (False, True):
            kept = make(heads_float)
            v = validate(run_all(runner(fmt, stage / path), val.planes, *norm), ref_val,
                         val.labels, finding)
            if v["decision_agreement"] >= 0.97 and v["auc"] >= val_auc - 0.01:
                break
        notes[fmt] = {"kept_float": kept, "val_decision_agreement": v["decision_agreement"]}
        arts.append(_artifact(fmt, "int8", path, stage, extra))

    int8(lambda h: quantize_onnx(stage / "model.fp32.onnx", stage / "model.int8.onnx", calib,
                                 h), "onnx", "model.int8.onnx")
    if not args.quick:
        import openvino as ov

        (stage / "openvino").mkdir()
        ov.save_model(ov.convert_model(str(stage / "model.fp32.onnx")),
                      str(stage / "openvino" / "model.fp32.xml"), compress_to_fp16=False)
        arts.append(_artifact("openvino-ir", "fp32", "openvino/model.fp32.xml", stage,
                              ("openvino/model.fp32.bin",)))
        int8(lambda h: quantize_openvino(stage / "openvino", calib, h), "openvino-ir",
             "openvino/model.int8.xml", ("openvino/model.int8.bin",))
        for art in arts[-2:]:
            art["runtime_config"] = {"INFERENCE_PRECISION_HINT": "f32"}
        for name in export_tflite(fused, calib[:128], stage, args.litert_python, log):
            arts.append(_artifact("tflite", name.split(".")[1], name, stage))
            if "int8" in name:
                arts[-1]["io"] = {"dtype": "int8", "note": "full-integer: (de)quantise "
                                  "input/outputs with each tensor's (scale, zero_point)"}
    return arts, notes


def verify_all(arts: list[dict], stage: Path, test: Split, ref: dict,
               norm: tuple[float, float], finding: float, log=print) -> dict[str, np.ndarray]:
    """Fill each artifact's ``validation`` on the held-out split; returns its probabilities."""
    probs = {}
    for art in arts:
        fn = runner(art["format"], stage / art["path"])
        outs = run_all(fn, test.planes, *norm)
        probs[art["path"]] = sigmoid(outs["lesion_logit"][:, 0])
        art["validation"] = validate(outs, ref, test.labels, finding)
        art["validation"]["ms_per_image"] = ms_per_image(fn)
        log(f"{art['path']}: {art['validation']}")
    return probs


def golden_expectations(cases: list[dict], arts: list[dict], stage: Path) -> None:
    """Expected probability from FP32 ONNX; one tolerance every artifact meets (x1.5, >=0.02)."""
    from firmware_app.models import sha256_file

    deltas = []
    for case in cases:
        x = np.load(stage / case["input"])
        probs = {a["path"]: float(sigmoid(runner(a["format"], stage / a["path"])(x)[
            "lesion_logit"])[0, 0]) for a in arts}
        case["expected"] = {"lesion_probability": round(probs["model.fp32.onnx"], 5)}
        case["sha256"] = sha256_file(stage / case["input"])
        deltas += [abs(p - probs["model.fp32.onnx"]) for p in probs.values()]
    for case in cases:
        case["tolerance"] = round(max(0.02, math.ceil(max(deltas) * 150) / 100), 2)


def provenance(args: argparse.Namespace, fused: LesionNet, seconds: float, calib: int,
               notes: dict, metrics: dict) -> dict:
    """Where the package came from: checkpoint hash, data, training and quantisation."""
    from firmware_app.models import sha256_file

    methods = {"onnx": "ORT quant_pre_process + quantize_static QDQ, per-channel s8/s8, MinMax",
               "openvino-ir": "nncf.quantize, MinMax activation ranges, full bias correction",
               "tflite": "litert-torch PT2E static, per-channel symmetric, int8 I/O"}
    return {
        "source": "converters/train_demo.py",
        "checkpoint": {"file": args.checkpoint.name, "sha256": sha256_file(args.checkpoint),
                       "note": "torch state dict (before BN folding), kept outside the package"},
        "training": {"data": "procedural phantoms (converters/phantoms.py), CT + US, varied "
                             "sizes, letterbox_grey", "seeds": SEEDS,
                     "images": {"train": args.train, "val": args.val, "test": args.test},
                     "epochs": args.epochs, "batch": 32, "augmentation": "horizontal flip",
                     "optimizer": "AdamW 3e-3 one-cycle, wd 1e-4, bf16 autocast if supported",
                     "losses": "BCE(lesion_logit) + focal(centre_heatmap) + 10 L1(box_size at "
                               "centres) + 0.5 BCE(cam vs lesion extent)",
                     "seconds": seconds, "quick": bool(args.quick)},
        "architecture": {"name": "LesionNet", "stride": STRIDE,
                         "parameters": sum(p.numel() for p in fused.parameters()),
                         "cam_pooling": f"log-sum-exp, sharpness {LSE_SHARPNESS}"},
        "quantization": {"calibration_images": calib,
                         **{f: {"method": m, **notes.get(f, {})} for f, m in methods.items()}},
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
        "test_metrics_torch": metrics,
        "thresholds_from": "validation split: finding maximises sensitivity + specificity; "
                           "alert at >= 99 % specificity (and >= finding + 0.1); box maximises "
                           "box F1 at IoU >= 0.3",
    }


def build_package(args: argparse.Namespace) -> int:
    """Train, export, verify, write golden cases, sign the manifest, write the card."""
    from firmware_app import models, signing

    t0 = time.time()
    torch.set_num_threads(2)

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.1f} s] {msg}", flush=True)

    if not args.key.with_suffix(".pub").exists():
        raise SystemExit(f"{args.key.with_suffix('.pub')} is missing (needed to verify)")
    out = args.out.resolve()
    stage = out.parent / f".{out.name}.staging"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        tr, val, test = (make_split(n, c) for n, c in (("train", args.train),
                                                        ("val", args.val), ("test", args.test)))
        sample = tr.planes[:: max(1, len(tr.planes) // 512)].astype(np.float32)
        norm = (round(float(sample.mean()), 4), round(float(sample.std()), 4))
        log(f"phantoms ready: {args.train}/{args.val}/{args.test}; mean, std {norm}")
        t_train = time.time()
        model = train(tr, *norm, args.epochs, log=log)
        seconds = round(time.time() - t_train, 1)
        args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), args.checkpoint)
        fused = fuse_batchnorm(model)
        ref_val, ref = (torch_outputs(fused, s.planes, *norm) for s in (val, test))
        finding, alert = choose_thresholds(val.labels, sigmoid(ref_val["lesion_logit"][:, 0]))
        params = {"stride": STRIDE, "input_size": [SIZE, SIZE], "max_boxes": 5, "nms_iou": 0.3,
                  "pool": 3, "label": "lesion", "display": "cam"}
        box = max((box_metrics(ref_val, val, t, params) for t in np.arange(0.15, 0.76, 0.05)),
                  key=lambda m: m["f1"])["threshold"]
        thresholds = {"finding": finding, "alert": alert, "box": round(float(box), 2)}
        log(f"thresholds {thresholds}")
        pick = np.random.default_rng(0).permutation(len(tr.labels))[: 32 if args.quick else 256]
        calib = ((tr.planes[pick].astype(np.float32) - norm[0]) / norm[1])[:, None]
        arts, notes = export_all(fused, stage, calib, val, ref_val, norm, finding, args, log)
        art_probs = verify_all(arts, stage, test, ref, norm, finding, log)
        cases = golden_cases(test, ref, art_probs, finding, stage, *norm)
        golden_expectations(cases, arts, stage)
        probs = sigmoid(ref["lesion_logit"][:, 0])
        metrics = {"auc": round(auc(test.labels, probs), 4),
                   **{k: round(v, 4) for k, v in operating_point(test.labels, probs,
                                                                 finding).items()},
                   "boxes": box_metrics(ref, test, thresholds["box"], params),
                   "false_positive_analysis": false_positive_analysis(ref, test, finding)}
        manifest = make_manifest(*norm, thresholds, params, arts, cases, provenance(
            args, fused, seconds, len(calib), notes, metrics))
        signed = signing.sign_document(manifest, signing.load_private_key(args.key))
        (stage / "manifest.json").write_text(json.dumps(signed, indent=2, ensure_ascii=False)
                                             + "\n", encoding="utf-8")
        (stage / "MODEL_CARD.md").write_text(make_card(signed), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    models.load_package(out, [args.key.with_suffix(".pub")])
    size_kb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1024
    log(f"package {out} verified; {size_kb:.0f} KiB; training {seconds} s")
    return 0


OUTPUT_MEANINGS = {
    "lesion_logit": "image-level lesion logit [1,1]; probability = sigmoid",
    "centre_heatmap": "sigmoid probability of a lesion centre per 8x8-pixel cell [1,1,32,32]",
    "box_size": "lesion box width, height as a fraction of the 256-pixel input [1,2,32,32]",
    "cam": "class-activation map (logits) [1,1,32,32]; its log-sum-exp pool is lesion_logit",
}
INTENDED_USE = ("DEMONSTRATION ONLY — trained on procedurally generated phantoms; "
                "not for clinical use")


def make_manifest(mean: float, std: float, thresholds: dict, params: dict, artifacts: list,
                  cases: list, provenance: dict) -> dict:
    """The unsigned manifest (schema clinibox.model-package/1)."""
    from firmware_app.models import SCHEMA

    return {
        "schema": SCHEMA, "name": NAME, "version": VERSION, "task": "lesion-detection",
        "intended_use": INTENDED_USE,
        "modalities": ["CT", "US", "MR", "CR", "DX", "MG", "OT"], "labels": ["lesion"],
        "inputs": [{"name": "image", "shape": list(SHAPE), "dtype": "float32", "layout": "NCHW",
                    "normalisation": {"mean": mean, "std": std}}],
        "outputs": [{"name": k, "meaning": v} for k, v in OUTPUT_MEANINGS.items()],
        "thresholds": thresholds,
        "preprocessing": {"name": "letterbox_grey", "params": {}},
        "postprocessing": {"name": "centre_heatmap_boxes", "params": params},
        "artifacts": artifacts, "provenance": provenance, "golden_cases": cases,
    }


def make_card(m: dict) -> str:
    """MODEL_CARD.md text from a finished manifest."""
    p, t, norm = m["provenance"], m["thresholds"], m["inputs"][0]["normalisation"]
    tm, tr = p["test_metrics_torch"], p["training"]
    fpa, n = tm["false_positive_analysis"], tr["images"]
    rows = "\n".join(
        f"| {a['format']} {a['precision']} | `{a['path']}` | {v['auc']} | {v['sensitivity']} | "
        f"{v['specificity']} | {v['max_abs_delta_probability']} | {v['decision_agreement']} | "
        f"{v['ms_per_image']} |" for a in m["artifacts"] for v in [a["validation"]])
    return f"""# Model card — {m['name']} {m['version']}

**NOT FOR CLINICAL USE. {m['intended_use']}.** It has never seen a patient image; on real
images its output means nothing. It lets clinibox be demonstrated and tested without patients.

**Data.** Procedural phantoms (`converters/phantoms.py`): CT-like slices 256–512 px (body,
fat, organs, spine, ribs, vessels, water cysts, gas) and ultrasound sector frames 240×320 to
480×640 px (speckle, attenuation, anechoic cysts with posterior enhancement, vessels). Half
hold 1–2 lesions (radius 2–15 % of the width, hypo/hyper, lobulated or spiculated, US
shadowing). Seeds {tr['seeds']}: {n['train']} train, {n['val']} validation, {n['test']} test.

**Model.** `LesionNet`, {p['architecture']['parameters']} parameters: eight 3×3 conv+BN+ReLU
(stride 8, dilations 2, 4), CenterNet-style `centre_heatmap` + `box_size`, and a 1×1-conv
class-activation map `cam` whose log-sum-exp pool is `lesion_logit`. Input [1,1,256,256] from
`letterbox_grey` (mean {norm['mean']}, std {norm['std']}). {tr['epochs']} epochs,
{tr['seconds']} s on 2 CPU cores; {tr['optimizer']}; {tr['losses']}.

**Thresholds.** finding {t['finding']}, alert {t['alert']}, box {t['box']} ({p['thresholds_from']}).

**Held-out test ({n['test']} phantoms), torch FP32.** AUC {tm['auc']} (by kind
{fpa['auc_by_kind']}), sensitivity {tm['sensitivity']}, specificity {tm['specificity']}; boxes
at IoU ≥ 0.3: recall {tm['boxes']['lesion_recall']}, precision {tm['boxes']['box_precision']}.
False positives {fpa['false_positives']}/{fpa['negatives']}, peaking on a distractor:
{fpa['false_positives_peaking_on']}; specificity on normals with a cyst
{fpa['specificity_negatives_with_cyst']}, without {fpa['specificity_negatives_without_cyst']}.

| artifact | file | AUC | sens. | spec. | max abs Δp vs torch | agreement | ms/image |
| --- | --- | --- | --- | --- | --- | --- | --- |
{rows}

ms/image: median single-image latency on the 2-core build machine (informational). Golden
cases (`golden/`, exact preprocessed inputs) hold for every artifact within
{m['golden_cases'][0]['tolerance'] if m['golden_cases'] else 'n/a'}.

**Limitations.** Modalities CT, US, MR, CR, DX, MG, OT are accepted so the demo runs on
whatever a clinic sends, but it learnt CT- and US-like phantoms only. Synthetic data; no
calibration to real prevalence; boxes on an 8-pixel grid; INT8 differs from FP32 by the Δp
above. TFLite INT8 is full-integer (int8 input/outputs, see its `io`). OpenVINO on
AMX/AVX512-BF16 CPUs runs bf16 unless `INFERENCE_PRECISION_HINT` is `f32` (each IR's
`runtime_config`); the figures above use f32.
"""


# -- CLI -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m converters.train_demo``: train, convert, verify, sign."""
    parser = argparse.ArgumentParser(prog="python -m converters.train_demo",
                                     description="Train the phantom demo model and package it.")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "models" / NAME / VERSION)
    parser.add_argument("--quick", action="store_true",
                        help="tiny data, one epoch, ONNX FP32+INT8 only (smoke test)")
    parser.add_argument("--key", type=Path, help="Ed25519 private key; its .pub must sit beside it",
                        default=REPO_ROOT / "models/keys/DEMO-ONLY-model-signing.pem")
    parser.add_argument("--train", type=int, default=5200, help="training phantoms")
    parser.add_argument("--val", type=int, default=800, help="threshold-selection phantoms")
    parser.add_argument("--test", type=int, default=1000, help="held-out phantoms")
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--checkpoint", type=Path,
                        default=REPO_ROOT / "build" / "demo-train" / f"{NAME}-{VERSION}.pt",
                        help="where the torch state dict is kept (outside the package)")
    parser.add_argument("--litert-python", default=os.environ.get(
        "CLINIBOX_LITERT_PYTHON", "/tmp/venv-lt/bin/python"))
    parser.add_argument("--tflite-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tflite_worker:
        tflite_worker(args.tflite_worker)
        return 0
    if args.quick:
        args.train, args.val, args.test, args.epochs = 192, 64, 64, 1
    return build_package(args)


if __name__ == "__main__":
    raise SystemExit(main())
