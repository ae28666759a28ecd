"""INT8 where it matters: a ResNet-18-class classifier through the real `clinibox convert`.

MONAI's 2-D ResNet-18 (one grey channel, normal / lesion, torchvision's stem:
7×7 stride-2 convolution, so about 1.7 G MACs at 1×224×224) is trained briefly
on the project's own phantoms (written as a PNG folder, decoded and
preprocessed as the box does), converted by `clinibox convert --targets
onnx,x86-cpu` (ONNX Runtime FP32 and QDQ INT8, OpenVINO FP32 and NNCF INT8,
each through the fidelity gate), then every (backend, artifact) pair the box's
``auto`` choice considers is timed through the box's own runtime backends:
single-image latency, 1 thread and the runtime's default threads, interleaved
rounds, median and p95, with ONNX Runtime FP32 as the reference in the same
run. Every pair's golden cases are run, and the run ends with what ``auto``
picks (``load_verified``, as the service loads a package) and the issue's
targets on this CPU. An extra row is the same FP32 ONNX quantised with int8
activations (the converter's setting before uint8), for comparison. On a CPU
with VNNI, OpenVINO is also timed under oneDNN ISA caps (AVX2, AVX-512 without
VNNI, VNNI without AMX): an emulation on this core of what those CPUs allow.
The model is trained on procedurally generated phantoms only; it is not for
clinical use.

    .venv/bin/python -m bench.int8_resnet [--train 960] [--data 300] [--epochs 12]
        [--rounds 20] [--runs 5] [--settle-ms 100] [--work DIR] [--skip-convert]
        [--accept-weak-model] [--gate KEY=VALUE] [--no-isa-caps]

With ``--work DIR`` the trained weights are kept there and reused by a later
run (``--skip-convert`` also reuses the package and only times it again).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    CPUID_MASKS,
    REPO,
    cpuid_mask_environment,
    figure,
    machine,
    percentiles,
    save,
)

SIZE = 224
CELLS = SIZE // 32  #: the last feature grid of a ResNet (7 x 7 at 224)
MODULE_NAME = "clinic_resnet18"
FACTORY = "lesion_resnet18"
MODULE = f'''"""MONAI's 2-D ResNet-18 with torchvision's stem, one grey channel, normal / lesion."""
from monai.networks.nets import resnet18


def {FACTORY}():
    """ResNet-18 (7x7 stride-2 stem, max pool), 1 input channel, 2 classes."""
    return resnet18(spatial_dims=2, n_input_channels=1, num_classes=2, conv1_t_stride=2)
'''
PACKAGE = "lesion-resnet18"
REFERENCE = "onnxruntime:onnx/fp32"
#: the issue's targets: ORT INT8 vs its FP32, OpenVINO INT8 vs ORT FP32 (VNNI / AVX2 only)
TARGET_ORT_INT8 = 1.5
TARGET_OPENVINO_INT8 = {"vnni": 3.0, "avx2": 1.8}


def write_phantom_folder(folder: Path, count: int, seed: int) -> Path:
    """``count`` phantoms (CT and US, half with lesions, the generator's own sizes) as 8-bit
    PNGs plus ``labels.csv`` (``file,label``: 1 = lesion); returns the CSV path. Beside
    them, ``lesion_cells.npy``: which cells of the model's last feature grid (the
    letterboxed image in 32-pixel cells) hold lesion pixels, one [CELLS, CELLS] grid a row.
    """
    from PIL import Image

    from engine.imaging.preprocess import letterbox
    from phantoms.images import dataset

    folder.mkdir(parents=True, exist_ok=True)
    labels, cells_file = folder / "labels.csv", folder / "lesion_cells.npy"
    if (labels.exists() and cells_file.exists()
            and len(labels.read_text().splitlines()) == count + 1):
        return labels
    cells = np.zeros((count, CELLS, CELLS), bool)
    with open(labels, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label"])
        for i, phantom in enumerate(dataset(seed, count)):
            name = f"{phantom.kind}{i:04d}.png"
            pixels = np.round(np.clip(phantom.image, 0, 1) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name)
            writer.writerow([name, int(phantom.lesion)])
            mask, _ = letterbox(phantom.truth_mask().astype(np.float32), SIZE, SIZE)
            cell = SIZE // CELLS
            cells[i] = (mask > 0.25).reshape(CELLS, cell, CELLS, cell).any(axis=(1, 3))
    np.save(cells_file, cells)
    return labels


def load_images(folder: Path, labels: Path, mean: float, std: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Every image of the folder decoded and preprocessed as the box does: x [N,1,H,W], y [N]."""
    from converters.data import Preprocessing, load_folder

    prep = Preprocessing("letterbox_grey", (1, 1, SIZE, SIZE), mean, std, {})
    data = load_folder(folder, labels, prep, 2, {"train": 1.0}, seed=0)
    return data.x.astype(np.float32), data.labels.astype(np.int64)


def auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    pos, neg = scores[truth == 1], scores[truth == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def train(x: np.ndarray, y: np.ndarray, cells: np.ndarray, epochs: int, lr: float,
          threads: int, seed: int, check: Callable[[Any], float] | None = None):
    """A fresh ResNet-18 trained with AdamW (one-cycle schedule, flips), channels-last and,
    where the CPU runs bf16 natively (AMX or AVX-512 BF16: about 3x faster), bf16 autocast,
    in eval mode. Elsewhere (AVX2) autocast would emulate bf16 at a tenth of float32's
    speed: 33 min an epoch on an AMD EPYC with AVX2, so it trains in float32 there.

    The loss is the image's cross-entropy plus a localisation term: the linear head
    applied at every cell of the last feature maps (the class-activation map the
    converter builds into the graph) is pushed towards the lesion cells (``cells``),
    which a plain classifier trained from scratch on a few hundred phantoms needs to
    find small lesions in a few epochs. The network itself is MONAI's, unchanged.
    ``check(model)`` (e.g. a held-out AUC) is printed after each epoch.
    """
    import torch
    import torch.nn.functional as F

    from converters.training import bf16_supported

    bf16 = bf16_supported()
    print(f"  forward pass in {'bf16 (autocast)' if bf16 else 'float32'}", flush=True)
    namespace: dict = {}
    exec(MODULE, namespace)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    model = namespace[FACTORY]().to(memory_format=torch.channels_last)
    grabbed: dict[str, torch.Tensor] = {}
    hook = model.layer4.register_forward_hook(lambda _m, _i, out: grabbed.update(maps=out))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x) + 15) // 16)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    ct = torch.from_numpy(cells.astype(np.float32))
    model.train()
    for epoch in range(epochs):
        order, total = torch.randperm(len(xt)), 0.0
        for i in range(0, len(order), 16):
            idx = order[i:i + 16]
            batch, target = xt[idx], ct[idx]
            flip = torch.rand(len(idx)) < 0.5
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
            target = torch.where(flip[:, None, None], target.flip(-1), target)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(batch.contiguous(memory_format=torch.channels_last))
            cam = torch.einsum("bchw,kc->bkhw", grabbed["maps"].float(), model.fc.weight)
            lesion_map = cam[:, 1] - cam[:, 0] + (model.fc.bias[1] - model.fc.bias[0])
            loss = (F.cross_entropy(logits.float(), yt[idx])
                    + F.binary_cross_entropy_with_logits(lesion_map, target,
                                                         pos_weight=torch.tensor(8.0)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            total += loss.item() * len(idx)
        note = ""
        if check is not None:
            note = f", check {check(model.eval()):.4f}"
            model.train()
        print(f"  epoch {epoch + 1}/{epochs}: loss {total / len(xt):.3f}{note}", flush=True)
    hook.remove()
    return model.eval().to(memory_format=torch.contiguous_format)


def scores_of(model, x: np.ndarray) -> np.ndarray:
    """P(lesion) of each image from the PyTorch model."""
    import torch

    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(x[i:i + 32])) for i in range(0, len(x), 32)])
    return torch.softmax(logits, dim=1)[:, 1].numpy()


def convert(work: Path, weights: Path, labels: Path, mean: float, std: float, key: Path,
            out: Path, accept_weak: bool, gate: dict[str, float] | None = None) -> dict:
    """The real `clinibox convert` (a module of this interpreter); seconds and exit status.
    ``gate``: fidelity-gate limits changed deliberately (a ``[gate]`` table of a convert.toml;
    the manifest records them)."""
    if out.exists():
        shutil.rmtree(out)
    args = ["convert", "--model", f"{MODULE_NAME}:{FACTORY}", "--weights", str(weights),
            "--input-shape", f"1,{SIZE},{SIZE}", "--mean", f"{mean:.4f}", "--std", f"{std:.4f}",
            "--class-names", "normal,lesion", "--negative-label", "normal",
            "--data", str(labels.parent), "--labels", str(labels),
            "--targets", "onnx,x86-cpu", "--out", str(out), "--name", PACKAGE,
            "--key", str(key)]
    if accept_weak:
        args.append("--accept-weak-model")
    if gate:
        toml = work / "convert.toml"
        toml.write_text("[gate]\n" + "".join(f"{k} = {v}\n" for k, v in gate.items()))
        args += ["--config", str(toml)]
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{work}", CLINIBOX_QUIET="1",
               TF_CPP_MIN_LOG_LEVEL="3")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "clinibox", *args], cwd=work, env=env,
                          capture_output=True, text=True)
    seconds = round(time.monotonic() - started, 1)
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-6000:], sep="\n", file=sys.stderr)
    return {"seconds": seconds, "returncode": done.returncode, "targets": "onnx,x86-cpu",
            "command": "clinibox " + " ".join(args), "gate_changed": gate or {}}


def int8_activation_copy(package, labels: Path, mean: float, std: float, out: Path) -> dict:
    """The package's FP32 ONNX quantised as the converter did before this benchmark (QDQ,
    per-channel 7-bit weights, asymmetric **int8** activations) on the converter's own
    calibration rows: the reference for what uint8 activations changed."""
    import onnxruntime.quantization as oq
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from converters.config import ConvertConfig
    from converters.data import Preprocessing, load_folder

    spec = package.input
    prep = Preprocessing("letterbox_grey", spec.shape, mean, std, {})
    calib = load_folder(labels.parent, labels, prep, 2, ConvertConfig().split_fractions(),
                        seed=0).subset("calibration").x
    feeds = iter([{spec.name: calib[i:i + 1]} for i in range(len(calib))])

    class Reader(oq.CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    fp32 = next(a for a in package.artifacts if a.label == "onnx/fp32")
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32.path), str(pre), skip_symbolic_shape=True)
        oq.quantize_static(
            str(pre), str(out), Reader(), quant_format=oq.QuantFormat.QDQ, per_channel=True,
            activation_type=oq.QuantType.QInt8, weight_type=oq.QuantType.QInt8,
            calibrate_method=oq.CalibrationMethod.MinMax, reduce_range=True,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    return {"path": str(out), "calibration_images": len(calib)}


def time_pairs(package, threads: int, rounds: int, runs: int, settle_s: float,
               extra: dict[str, Path] | None = None) -> dict[str, dict]:
    """Every (backend, artifact) pair ``auto`` considers, loaded with ``threads`` (0: the
    runtime's default), golden cases run, then timed in interleaved rounds of ``runs``.

    Each pair first runs untimed for ``settle_s`` in every round: with several threads,
    the worker threads of the pair before it (ONNX Runtime's spin while idle) still
    hold the cores for a while, which here doubled the next pair's latency (ORT INT8
    after ORT FP32: 8.6 instead of 4.4 ms). A box runs one of them, so that is not
    what it would see. ``extra``: further ONNX files run on the onnxruntime backend.
    """
    import dataclasses

    from engine.golden import run_golden_cases
    from engine.runtime.selection import Candidate, candidates, load_candidate
    from engine.settings import RuntimeConfig

    config = RuntimeConfig(threads=threads)
    from backends import inputs_for  # phantoms preprocessed as the box does it

    feeds = inputs_for(package, 8, None)
    loaded, found = [], {}
    int8 = next(a for a in package.artifacts if a.label == "onnx/int8")
    more = [Candidate("onnxruntime", dataclasses.replace(int8, path=path), f" ({label})")
            for label, path in (extra or {}).items()]
    for candidate in [*candidates(package, config), *more]:
        backend = load_candidate(candidate, package, config)
        report = run_golden_cases(package, backend, candidate.label)
        for feed in feeds:
            backend.infer(feed)
        loaded.append((candidate, backend))
        found[candidate.label] = {"golden_passed": report.passed, "golden": report.describe(),
                                  "runtime": backend.describe(), "samples": []}
    try:
        for r in range(rounds):
            for candidate, backend in loaded if r % 2 == 0 else loaded[::-1]:
                samples = found[candidate.label]["samples"]
                settled = time.perf_counter() + settle_s
                while True:
                    backend.infer(feeds[r % len(feeds)])
                    if time.perf_counter() >= settled:
                        break
                for i in range(runs):
                    feed = feeds[(r * runs + i) % len(feeds)]
                    began = time.perf_counter()
                    backend.infer(feed)
                    samples.append((time.perf_counter() - began) * 1000.0)
    finally:
        for _candidate, backend in loaded:
            backend.close()
    reference = statistics.median(found[REFERENCE]["samples"])
    for row in found.values():
        samples = row.pop("samples")
        row.update(percentiles(samples), runs=len(samples),
                   speedup_vs_ort_fp32=round(reference / statistics.median(samples), 2))
    return found


ISA_CHILD = """
import json, statistics, sys, time
from pathlib import Path
import numpy as np
from engine.model_package import load_package
from engine.runtime.selection import candidates, load_candidate
from engine.settings import RuntimeConfig
package = load_package(Path(sys.argv[1]), [Path(sys.argv[2])])
config = RuntimeConfig(backend="openvino", threads=1)
x = {package.input.name: np.random.default_rng(0).standard_normal(package.input.shape)
     .astype(np.float32)}
pairs = [(c.label, load_candidate(c, package, config)) for c in candidates(package, config)
         if c.artifact.format == "openvino-ir"]
times = {label: [] for label, _ in pairs}
for _ in range(5):
    for _label, backend in pairs:
        backend.infer(x)
for _ in range(int(sys.argv[3])):
    for label, backend in pairs:
        settled = time.perf_counter() + float(sys.argv[4])
        while time.perf_counter() < settled:
            backend.infer(x)
        for _ in range(5):
            began = time.perf_counter()
            backend.infer(x)
            times[label].append((time.perf_counter() - began) * 1000.0)
print(json.dumps({label: statistics.median(t) for label, t in times.items()}))
"""
#: oneDNN's ISA caps (``ONEDNN_MAX_CPU_ISA``, which OpenVINO's CPU plugin obeys): what
#: OpenVINO does on this core without AMX, without VNNI, with AVX2 only
ISA_CAPS = ("AVX512_CORE_VNNI", "AVX512_CORE", "AVX2")


def openvino_under_isa_caps(root: Path, pub: Path, rounds: int, settle_s: float
                            ) -> dict[str, dict]:
    """OpenVINO FP32 and INT8 IR, 1 thread, in a child process per ISA cap (and uncapped),
    interleaved like :func:`time_pairs`: median ms and INT8's speed-up over FP32 under the
    same cap. An emulation on this core (ONNX Runtime's kernels cannot be capped), not a
    measurement of those CPUs."""
    found = {}
    for cap in ("native", *ISA_CAPS):
        env = dict(os.environ, PYTHONPATH=str(REPO))
        if cap != "native":
            env["ONEDNN_MAX_CPU_ISA"] = cap
        done = subprocess.run([sys.executable, "-c", ISA_CHILD, str(root), str(pub),
                               str(rounds), str(settle_s)], env=env, cwd=REPO, capture_output=True,
                              text=True, check=True)
        ms = json.loads(done.stdout.strip().splitlines()[-1])
        fp32, int8 = ms["openvino:openvino-ir/fp32"], ms["openvino:openvino-ir/int8"]
        found[cap] = {"fp32_ms": round(fp32, 2), "int8_ms": round(int8, 2),
                      "int8_vs_fp32": round(fp32 / int8, 2)}
        print(f"  OpenVINO, oneDNN ISA {cap:17s} FP32 {fp32:6.2f} ms, INT8 {int8:6.2f} ms "
              f"({fp32 / int8:.2f}x)", flush=True)
    return found


def gates(package) -> dict[str, dict]:
    """Each artifact's fidelity figures and conversion notes, from the signed manifest."""
    keep = ("auc", "auc_delta", "sensitivity", "sensitivity_delta", "specificity",
            "decision_agreement", "max_abs_delta_probability", "ms_per_image", "size_bytes")
    rows = {}
    for entry in package.manifest["artifacts"]:
        label = f"{entry['format']}/{entry['precision']}"
        notes = entry.get("conversion", {})
        rows[label] = {**{k: entry["validation"].get(k) for k in keep},
                       "kept_float": notes.get("kept_float", []),
                       "method": notes.get("method"),
                       "activations": notes.get("activations"),
                       "safe_without_vnni": notes.get("kernels", {}).get("safe_without_vnni")}
    return rows


def cpu_class(features: str) -> str:
    """``vnni`` when the CPU has an 8-bit dot-product instruction (VNNI, AMX), else ``avx2``."""
    return "vnni" if {"avx512_vnni", "avx_vnni", "amx_int8"} & set(features.split()) else "avx2"


def print_table(timings: dict[str, dict[str, dict]], gate_rows: dict[str, dict]) -> None:
    """The latency table, 1 thread and default threads, with each artifact's gate figures."""
    one, default = timings["1"], timings["default"]
    print(f"\n{'backend:artifact':42s} {'1 thr p50':>9s} {'p95':>7s} {'x':>5s}  "
          f"{'dflt p50':>9s} {'p95':>7s} {'x':>5s}  {'ΔAUC':>8s} {'agree':>6s} golden")
    for label in sorted(one, key=lambda k: one[k]["p50_ms"]):
        a, b = one[label], default.get(label, {})
        gate = gate_rows.get(label.split(":", 1)[1], {})
        print(f"{label:42s} {a['p50_ms']:9.2f} {a['p95_ms']:7.2f} {a['speedup_vs_ort_fp32']:5.2f}"
              f"  {b.get('p50_ms', float('nan')):9.2f} {b.get('p95_ms', float('nan')):7.2f} "
              f"{b.get('speedup_vs_ort_fp32', float('nan')):5.2f}  "
              f"{gate.get('auc_delta', float('nan')):8.4f} "
              f"{gate.get('decision_agreement', float('nan')):6.3f} "
              f"{'ok' if a['golden_passed'] else 'FAIL'}")


def main() -> int:
    """Train, convert, time, choose; print the table and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=960, help="training phantoms")
    parser.add_argument("--data", type=int, default=300,
                        help="phantoms given to the converter (calibration + validation)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--train-threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds")
    parser.add_argument("--runs", type=int, default=5, help="inferences per pair per round")
    parser.add_argument("--settle-ms", type=float, default=100,
                        help="untimed runs of each pair before its timed ones, every round")
    parser.add_argument("--work", type=Path, help="keep weights and package here")
    parser.add_argument("--skip-convert", action="store_true",
                        help="time the package already in --work")
    parser.add_argument("--accept-weak-model", action="store_true")
    parser.add_argument("--gate", action="append", default=[], metavar="KEY=VALUE",
                        help="a fidelity-gate limit changed deliberately (converters.verify.Gate "
                             "keys, e.g. int8_max_sensitivity_loss=0.011); recorded in the "
                             "manifest and the figures")
    parser.add_argument("--no-isa-caps", action="store_true",
                        help="skip OpenVINO under oneDNN ISA caps (AVX2, AVX-512, VNNI)")
    parser.add_argument("--cpuid-mask", choices=sorted(CPUID_MASKS),
                        help="run on this CPU with CPUID hiding AVX-512/VNNI/AMX (avx2) or "
                             "VNNI/AMX (avx512): every runtime picks that instruction set's "
                             "kernels, run by this core (cpu_mask/cpuid_mask.c)")
    args = parser.parse_args()
    if args.cpuid_mask and os.environ.get("CLINIBOX_CPUID_MASK") != args.cpuid_mask:
        os.execve(sys.executable, [sys.executable, "-m", "bench.int8_resnet", *sys.argv[1:]],
                  cpuid_mask_environment(args.cpuid_mask))

    import torch

    from clinibox_common.contracts import signing
    from converters.prune import count_macs, count_parameters
    from converters.spec import ModelSpec
    from engine.golden import load_verified
    from engine.model_package import load_package
    from engine.settings import RuntimeConfig

    scratch = None if args.work else tempfile.TemporaryDirectory(prefix="bench-int8-")
    work = (args.work or Path(scratch.name)).resolve()  # convert runs with cwd=work
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{MODULE_NAME}.py").write_text(MODULE)
    figures: dict = {"machine": machine("onnxruntime", "openvino", "nncf", "torch", "monai")}
    features = figures["machine"]["cpu_features"]
    print(f"CPU: {figures['machine']['cpu']} ({features}), {figures['machine']['cores']} cores")

    namespace: dict = {}
    exec(MODULE, namespace)
    spec = ModelSpec((1, 1, SIZE, SIZE), ("logits",), "logits", "softmax", ("normal", "lesion"),
                     "normal")
    fresh = namespace[FACTORY]()
    figures["model"] = {"name": f"monai.networks.nets.resnet18 (conv1_t_stride=2), 1×{SIZE}×{SIZE}",
                        "macs": count_macs(fresh, spec), "parameters": count_parameters(fresh)}
    print(f"model: {figures['model']['macs'] / 1e9:.2f} G MACs, "
          f"{figures['model']['parameters'] / 1e6:.1f} M parameters")

    train_labels = write_phantom_folder(work / "train", args.train, seed=101)
    data_labels = write_phantom_folder(work / "data", args.data, seed=202)
    raw, _ = load_images(work / "train", train_labels, 0.0, 1.0)
    mean, std = float(raw.mean()), float(raw.std())
    weights = work / "weights.pt"
    if weights.exists():
        model = namespace[FACTORY]()
        model.load_state_dict(torch.load(weights))
        model.eval()
        kept = work / "training.json"
        trained = json.loads(kept.read_text()) if kept.exists() else {"reused": str(weights)}
    else:
        x, y = load_images(work / "train", train_labels, mean, std)
        print(f"training on {len(x)} phantoms, {args.epochs} epochs, "
              f"{args.train_threads} thread(s)", flush=True)
        started = time.monotonic()
        cells = np.load(work / "train" / "lesion_cells.npy")
        model = train(x, y, cells, args.epochs, args.lr, args.train_threads, seed=0)
        trained = {"images": len(x), "epochs": args.epochs,
                   "seconds": round(time.monotonic() - started, 1)}
        torch.save(model.state_dict(), weights)
    vx, vy = load_images(work / "data", data_labels, mean, std)
    trained["auc_on_converter_data"] = round(auc(scores_of(model, vx), vy), 4)
    (work / "training.json").write_text(json.dumps(trained))
    figures["training"] = {**trained, "mean": round(mean, 4), "std": round(std, 4)}
    print(f"trained: AUC {trained['auc_on_converter_data']} on the converter's "
          f"{len(vy)} phantoms", flush=True)

    key = work / "keys" / "bench.pem"
    if not key.exists():
        key.parent.mkdir(exist_ok=True)
        signing.generate_key_pair(key, key.with_suffix(".pub"))
    out = work / "packages" / PACKAGE / "1.0.0"
    if not args.skip_convert:
        print("clinibox convert --targets onnx,x86-cpu …", flush=True)
        gate = {k: float(v) for k, v in (item.split("=", 1) for item in args.gate)}
        figures["convert"] = convert(work, weights, data_labels, mean, std, key, out,
                                     args.accept_weak_model, gate)
        print(f"converted in {figures['convert']['seconds']} s "
              f"(exit {figures['convert']['returncode']})", flush=True)
        if figures["convert"]["returncode"] != 0:
            save("int8_resnet", figures, {"convert exit status": figure(
                figures["convert"]["returncode"], "exit status")},
                 notes="clinibox convert failed: no timings")
            return 1
        (work / "convert.json").write_text(json.dumps(figures["convert"]))
    elif (work / "convert.json").exists():
        figures["convert"] = {**json.loads((work / "convert.json").read_text()),
                              "reused": True}
    package = load_package(out, [key.with_suffix(".pub")])
    provenance = package.manifest["provenance"]
    figures["source_metrics"] = provenance.get("source_metrics")
    figures["weakness"] = provenance.get("weakness")
    figures["gates"] = gates(package)

    before = work / "model.int8-s8act.onnx"
    figures["int8_activations_reference"] = int8_activation_copy(package, data_labels, mean,
                                                                  std, before)
    figures["timings"] = {}
    for name, threads in (("1", 1), ("default", 0)):
        print(f"timing every pair, {name} thread(s) …", flush=True)
        figures["timings"][name] = time_pairs(package, threads, args.rounds, args.runs,
                                              args.settle_ms / 1000,
                                              {"int8 activations": before})
    print_table(figures["timings"], figures["gates"])

    if cpu_class(features) == "vnni" and not args.no_isa_caps:
        print("\nOpenVINO under oneDNN ISA caps (emulated on this core, 1 thread):")
        figures["openvino_isa_caps"] = openvino_under_isa_caps(
            out, key.with_suffix(".pub"), args.rounds, args.settle_ms / 1000)

    loaded, report = load_verified(package, RuntimeConfig())
    figures["auto"] = {"label": loaded.label, "reason": loaded.reason,
                       "ms_per_run": {k: round(v, 3) for k, v in loaded.ms_per_run.items()},
                       "golden_passed": report.passed, "golden": report.describe(),
                       "fell_back_from": loaded.fell_back_from}
    loaded.close()
    default = figures["timings"]["default"]
    passing = {k: v["p50_ms"] for k, v in default.items()
               if v["golden_passed"] and " (" not in k}  # the package's own artifacts
    fastest = min(passing, key=passing.__getitem__)
    figures["auto"]["fastest_passing_here"] = fastest
    print(f"\nauto: {loaded.label} ({report.describe()}); fastest passing pair in the timing "
          f"above (default threads): {fastest}")

    klass = cpu_class(features)
    met = {}
    for name, row in figures["timings"].items():
        ort_int8 = row["onnxruntime:onnx/int8"]["speedup_vs_ort_fp32"]
        ov_int8 = row["openvino:openvino-ir/int8"]["speedup_vs_ort_fp32"]
        met[name] = {"onnxruntime_int8_x": ort_int8,
                     "onnxruntime_int8_met": ort_int8 >= TARGET_ORT_INT8,
                     "openvino_int8_x": ov_int8,
                     "openvino_int8_target": TARGET_OPENVINO_INT8[klass],
                     "openvino_int8_met": ov_int8 >= TARGET_OPENVINO_INT8[klass]}
    figures["targets"] = {"cpu_class": klass, **met}
    for name, row in met.items():
        print(f"{name} thread(s) on {klass}: ORT INT8 {row['onnxruntime_int8_x']}× its FP32 "
              f"(target {TARGET_ORT_INT8}×), OpenVINO INT8 {row['openvino_int8_x']}× ORT FP32 "
              f"(target {row['openvino_int8_target']}×)")
    reference = "onnxruntime:onnx/fp32, same threads, interleaved, same run"
    kept = {}
    for name, row in figures["timings"].items():
        for label, pair in row.items():
            ref = None if label == "onnxruntime:onnx/fp32" else reference
            kept[f"{label}, {name} thread(s) p50"] = figure(pair["p50_ms"], "ms/image", ref)
            if ref:
                kept[f"{label}, {name} thread(s) speed-up"] = figure(
                    pair["speedup_vs_ort_fp32"], "×", ref)
    save("int8_resnet" + (f"-{args.cpuid_mask}" if args.cpuid_mask else ""), figures, kept,
         notes=f"{figures['model']['name']}, {figures['model']['macs'] / 1e9:.2f} G MACs; "
               f"auto chose {figures['auto']['label']}; CPU class {klass}"
               + (f"; CPUID masked to {args.cpuid_mask}" if args.cpuid_mask else ""))
    if scratch is not None:
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
