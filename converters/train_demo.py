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
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from converters.demo_export import (
    export_onnx,
    export_tflite,
    quantize_onnx,
    quantize_openvino,
    runner,
    tflite_worker,
)
from converters.demo_metrics import (
    auc,
    box_metrics,
    choose_thresholds,
    false_positive_analysis,
    ms_per_image,
    operating_point,
    run_all,
    validate,
)
from converters.demo_model import (
    LSE_SHARPNESS,
    NAME,
    REPO_ROOT,
    SEEDS,
    SHAPE,
    SIZE,
    STRIDE,
    VERSION,
    LesionNet,
    Split,
    fuse_batchnorm,
    make_split,
    torch_outputs,
    train,
)
from converters.phantoms import dataset_plan, dataset_sample
from firmware_app.imaging.preprocess import letterbox_grey
from firmware_app.inference.postprocess import sigmoid


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
