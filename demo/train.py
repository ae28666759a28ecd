"""Rebuild the demo lesion model package with the converter pipeline (phantoms only).

    python -m demo.train [--out models/clinibox-demo-lesion/1.0.0] [--quick]

NOT FOR CLINICAL USE: every image is a procedurally generated phantom
(``phantoms/images.py``, with true classes, masks and pixel spacing).
Steps: phantoms → ``letterbox_grey`` (exactly as the box) → teacher LesionNet
(detection, benign/malignant per lesion, mask, heatmap, features) → distilled
student (≤ ¼ of the teacher's MACs) → structured pruning + teacher-guided
fine-tune → mask offset calibrated on threshold-selection phantoms → BN
folding → the validated range (features fitted on training phantoms,
threshold from threshold-selection phantoms) → the converter's export,
quantize, verify (held-out phantoms) and package steps for every target
profile, with the heads declared in the manifest → lesion metrics (class AUC,
sizes in mm through the box's own decoder) and the range checked on held-out
phantoms and pydicom's real CT/MR files → ``MODEL_CARD.md``. Workstation only
(``convert`` extra).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from clinibox_common.contracts.manifest import SCHEMA, ModelPackage, sha256_file
from converters import chain
from converters.config import ConvertConfig
from converters.data import LabelledData
from converters.distill import distill
from converters.export import torch_outputs
from converters.heatmap_check import choose_heatmap
from converters.ood import (
    IMAGE_STATISTICS,
    fit_validated_range,
    input_statistics,
    measured,
    spread_floors,
)
from converters.package import alert_from
from converters.pipeline import Conversion
from converters.prune import count_macs, fine_tune, load_module, prune, save_module
from converters.source import SourceModel
from converters.spec import ModelSpec
from converters.stage import export_stage, stage_section, torch_lesion_stage
from converters.stage import golden_cases as stage_golden_cases
from converters.training import bf16_supported, train_epochs
from converters.verify import auc, choose_threshold, operating_point
from demo import crop_stage
from demo.card import write_card
from demo.metrics import (
    box_metrics,
    false_positive_analysis,
    lesion_metrics,
    range_report,
    real_images,
)
from demo.model import (
    NAME,
    OUTPUTS,
    REPO_ROOT,
    SEEDS,
    SHAPE,
    SIZE,
    VERSION,
    LesionNet,
    LesionTask,
    fuse_batchnorm,
    lesion_net_from_onnx,
    make_split,
    model_inputs,
    scale_features,
    train_data,
)
from engine.inference.postprocess import sigmoid
from engine.inference.stage import LesionStage
from engine.model_stages import load_stage
from engine.settings import RuntimeConfig
from phantoms.images import CLASSES, dataset_plan, dataset_sample

TEACHER = {"widths": (16, 32, 48), "head": 16, "mask": 16}
STUDENT = {"widths": (8, 16, 24), "head": 4, "mask": 8}
#: --quick trains for one epoch: its INT8 copy is not held to the clinical gate
QUICK_GATE = {"int8_max_auc_delta": 1.0, "int8_max_sensitivity_loss": 1.0,
              "int8_min_agreement": 0.0, "int8_max_specificity_loss": 1.0}
TARGETS = ["onnx", "x86-cpu", "intel-npu", "arm-cpu", "jetson"]
OUTPUT_MEANINGS = {
    "lesion_logit": "image-level lesion logit [1,1]; probability = sigmoid",
    "centre_heatmap": "sigmoid probability of a lesion centre per 8x8-pixel cell [1,1,32,32]",
    "box_size": "lesion box width, height as a fraction of the 256-pixel input [1,2,32,32]",
    "cam": "class-activation map (logits) [1,1,32,32]; its log-sum-exp pool is lesion_logit",
    "lesion_class": "benign, malignant logits per 8x8-pixel cell [1,2,32,32]; softmax, read "
                    "under a lesion",
    "lesion_mask": "lesion mask logits per 4x4-pixel cell [1,1,64,64]; sigmoid, threshold 0.5",
    "features": "what the validated range measures of the model [1,24], after the input's "
                "own intensity histogram and texture (computed by the box): the log of the "
                "scaled global average pool of the final feature maps",
}
INTENDED_USE = ("DEMONSTRATION ONLY — trained on procedurally generated phantoms; "
                "not for clinical use")
HEADS = [
    {"kind": "detection", "score_output": "lesion_logit", "heatmap_output": "centre_heatmap",
     "size_output": "box_size", "label": "lesion", "max_boxes": 5, "nms_iou": 0.3, "pool": 3},
    {"kind": "classification", "output": "lesion_class", "activation": "softmax",
     "labels": list(CLASSES), "per": "lesion"},
    {"kind": "segmentation", "output": "lesion_mask", "activation": "sigmoid",
     "labels": ["lesion"], "threshold": 0.5},
    {"kind": "heatmap", "output": "cam", "activation": "sigmoid"},
]
HEAD_PARAMS = {"input_size": [SIZE, SIZE]}
#: the validated range's threshold: this quantile of the threshold-selection phantoms' distances
OOD_QUANTILE, OOD_MARGIN = 0.995, 1.1
#: mask logit offsets tried by :func:`calibrate_mask`
MASK_OFFSETS = (-0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
SPEC = ModelSpec(SHAPE, OUTPUTS, "lesion_logit", "sigmoid", ("lesion",),
                 output_shapes={"lesion_logit": (1, 1), "centre_heatmap": (1, 1, 32, 32),
                                "box_size": (1, 2, 32, 32), "cam": (1, 1, 32, 32),
                                "lesion_class": (1, 2, 32, 32), "lesion_mask": (1, 1, 64, 64),
                                "features": (1, 24)})


def torch_summary(model: torch.nn.Module, split, norm: tuple[float, float],
                  finding: float) -> dict:
    """AUC, sensitivity/specificity and MACs of a torch model on a split."""
    outs = torch_outputs(model, SPEC, model_inputs(split.planes, *norm))
    probs = sigmoid(outs["lesion_logit"][:, 0])
    labels = split.labels.astype(bool)
    return {"auc": round(auc(labels, probs), 4), "macs": count_macs(model, SPEC),
            "parameters": sum(p.numel() for p in model.parameters()),
            **{k: round(v, 4) for k, v in operating_point(labels, probs, finding).items()}}


def thresholds_for(model: torch.nn.Module, val, norm: tuple[float, float]) -> dict:
    """finding (the converter's ``choose_threshold`` on validation), alert (>= 99 %
    specificity) and box (best box F1)."""
    outs = torch_outputs(model, SPEC, model_inputs(val.planes, *norm))
    probs, labels = sigmoid(outs["lesion_logit"][:, 0]), val.labels.astype(bool)
    finding = choose_threshold(labels, probs)
    alert = alert_from(probs, labels, finding)
    box = max((box_metrics(outs, val, round(float(t), 2), HEADS, HEAD_PARAMS)
               for t in np.arange(0.15, 0.76, 0.05)), key=lambda m: m["f1"])["threshold"]
    return {"finding": finding, "alert": alert, "box": round(float(box), 2)}


def build(args: argparse.Namespace) -> int:
    """Teacher → student → pruned → every artifact → verified, signed package + card."""
    t0 = time.time()
    torch.set_num_threads(2)

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.1f} s] {msg}", flush=True)

    tr, val, test = (make_split(n, c) for n, c in (("train", args.train), ("val", args.val),
                                                    ("test", args.test)))
    sample = tr.planes[:: max(1, len(tr.planes) // 512)].astype(np.float32)
    norm = (round(float(sample.mean()), 4), round(float(sample.std()), 4))
    data, task = train_data(tr, *norm), LesionTask()
    log(f"phantoms: {args.train} train / {args.val} val / {args.test} test; mean, std {norm}")
    fit_x = model_inputs(tr.planes[::3], *norm)  # every third: CT and US alike
    models: dict[str, torch.nn.Module] = {}
    if args.from_checkpoint:
        pruned, steps, kept_summaries = kept_training(args, log)
    else:
        pruned, steps, models = train_first_stage(args, data, task, val, norm, fit_x, log)
        kept_summaries = {}
    shipped = fuse_batchnorm(pruned)
    thresholds = thresholds_for(shipped, val, norm)
    models["shipped (pruned)"] = shipped
    summaries = {**kept_summaries, **{k: torch_summary(m, test, norm, thresholds["finding"])
                                      for k, m in models.items()}}
    log(f"thresholds {thresholds}; held-out test: {summaries}")
    out = args.out.resolve()
    conv = Conversion(
        ConvertConfig(out=out, key=args.key, name=NAME, version=VERSION,
                      targets=args.targets, thresholds=thresholds, mean=norm[0], std=norm[1],
                      postprocessing="heads", postprocessing_params=HEAD_PARAMS, heads=HEADS,
                      modalities=["CT", "US", "MR", "CR", "DX", "MG", "OT"],
                      task="lesion-detection", intended_use=INTENDED_USE,
                      output_meanings=OUTPUT_MEANINGS, calibration_size=args.calibration,
                      data="phantoms (phantoms/images.py, demo/model.py)",
                      gate=QUICK_GATE if args.quick else {}, accept_weak_model=args.quick),
        source=SourceModel(shipped, "pickled", "demo/train.py",
                           {args.checkpoint.name: sha256_file(args.checkpoint)}),
        data=_verification_data(tr, test, norm, args.calibration), task=task, spec=SPEC)
    conv.start_afresh()  # nothing of an earlier build in out/.convert is reused
    conv.state["steps"] = steps
    conv.state["source"] = conv.source.provenance()
    for step in ("export", "quantize"):
        getattr(conv, step)()
        log(f"{step}: done")
    ood = validated_range(conv, shipped, fit_x, model_inputs(val.planes, *norm), norm)
    conv.state["ood"] = ood["section"]  # the converter keeps a range its caller fitted
    log(f"validated range: {ood['section']['threshold']} from {ood['runs']}")
    conv.verify()
    log("verify: done")
    ref = torch_outputs(shipped, SPEC, model_inputs(test.planes, *norm))
    conv.state["steps"]["detection"] = {
        "boxes": box_metrics(ref, test, thresholds["box"], HEADS, HEAD_PARAMS),
        "false_positive_analysis": false_positive_analysis(ref, test, thresholds["finding"]),
        "torch_test_metrics": summaries, "quick": bool(args.quick)}
    conv.state["steps"]["lesions_first_stage"] = lesion_metrics(ref, test, HEADS, HEAD_PARAMS,
                                                                thresholds)
    log(f"lesions, first stage alone: {conv.state['steps']['lesions_first_stage']}")
    val_ref = torch_outputs(shipped, SPEC, model_inputs(val.planes, *norm))
    val_ref = {k: v for k, v in val_ref.items() if k != "features"}
    stage, section = second_stage(args, out, (val_ref, val, thresholds), log)
    conv.state["stages"] = [section]
    conv.state["steps"]["stage"] = section["validation"]
    conv.state["steps"]["lesions"] = lesion_metrics(
        ref, test, HEADS, HEAD_PARAMS, thresholds,
        refine=phantom_refiner(stage, "test", dataset_plan(SEEDS["test"], args.test)))
    conv.config.heads, conv.state["steps"]["heatmap_on_lesion"] = declared_heatmap(
        (val_ref, val, phantom_refiner(stage, "val", dataset_plan(SEEDS["val"], args.val))),
        (ref, test, phantom_refiner(stage, "test", dataset_plan(SEEDS["test"], args.test))),
        thresholds)
    log(f"heatmap on the lesion: {conv.state['steps']['heatmap_on_lesion']}")
    stage.close()
    log(f"lesions, with the second stage: {conv.state['steps']['lesions']}")
    conv.state["steps"]["ood"] = ood_figures(conv, ood, shipped, ref, norm)
    log(f"validated range on held-out and real images: {conv.state['steps']['ood']}")
    chain.package(conv)
    write_card(out, steps, summaries)
    log(f"package {out} verified; {sum(f.stat().st_size for f in out.rglob('*')) / 1024:.0f} "
        f"KiB; total {time.time() - t0:.0f} s")
    return 0


def train_first_stage(args: argparse.Namespace, data, task, val, norm: tuple[float, float],
                      fit_x: np.ndarray, log) -> tuple[torch.nn.Module, dict, dict]:
    """Teacher → distilled student → pruned and fine-tuned → mask calibrated → features
    scaled; the pruned module is kept in ``args.checkpoint``. Returns it, the steps'
    report, and the teacher and the student (their held-out figures go in the card)."""
    steps: dict = {}
    start = time.time()
    torch.manual_seed(args.seed)  # the initial weights of both networks
    teacher_net, student_net = LesionNet(**TEACHER), LesionNet(**STUDENT)
    teacher = train_epochs(teacher_net, data, task, SPEC, epochs=args.epochs, seed=args.seed,
                           description="teacher")
    steps["teacher"] = {"architecture": f"LesionNet{TEACHER}", "epochs": args.epochs,
                        "seconds": round(time.time() - start, 1)}
    log(f"teacher trained in {steps['teacher']['seconds']} s")
    student, steps["distill"] = distill(teacher, student_net, data, task, SPEC,
                                        epochs=args.student_epochs, max_mac_ratio=0.25)
    log(f"student distilled: {steps['distill']}")
    pruned, steps["prune"] = prune(student, SPEC, target_mac_ratio=args.prune)
    start = time.time()
    pruned = fine_tune(pruned, data, task, SPEC, teacher=teacher, epochs=args.finetune_epochs)
    steps["prune"].update(finetune_epochs=args.finetune_epochs,
                          finetune_seconds=round(time.time() - start, 1))
    log(f"pruned and fine-tuned: {steps['prune']}")
    steps["mask_calibration"] = calibrate_mask(pruned, val, norm)
    log(f"mask calibration: {steps['mask_calibration']}")
    scale_features(pruned, fit_x)
    save_module(pruned, args.checkpoint)
    return pruned, steps, {"teacher": teacher, "student (distilled)": student}


def kept_training(args: argparse.Namespace, log) -> tuple[torch.nn.Module, dict, dict]:
    """``--from-checkpoint``: the pruned module kept by an earlier build and that build's
    training report, read from the package it made (``args.out``), so the package can be
    rebuilt (export, quantization, second stage, card) without training the first stage
    again. Returns the module, the training steps and the teacher and student's held-out
    figures as that build measured them."""
    manifest = json.loads((args.out / "manifest.json").read_text(encoding="utf-8"))
    earlier = manifest["provenance"]["steps"]
    kept = {k: earlier[k] for k in ("teacher", "distill", "prune", "mask_calibration")}
    recovered = (recover_checkpoint(args.out, args.checkpoint, manifest["golden_cases"])
                 if args.recover_checkpoint else {})
    # the build that trained the first stage: a package itself rebuilt from the checkpoint
    # names it already
    built = (earlier.get("from_checkpoint", {}).get("package_built")
             or manifest["provenance"].get("created", ""))
    kept["from_checkpoint"] = {"checkpoint": args.checkpoint.name,
                               "sha256": sha256_file(args.checkpoint), "package_built": built,
                               **recovered}
    summaries = {k: v for k, v in earlier["detection"]["torch_test_metrics"].items()
                 if k != "shipped (pruned)"}
    log(f"first stage from {args.checkpoint} (trained by the build of "
        f"{kept['from_checkpoint']['package_built']})")
    return load_module(args.checkpoint), kept, summaries


def recover_checkpoint(out: Path, checkpoint: Path, golden_cases: list[dict]) -> dict:
    """``--recover-checkpoint``: write the first stage's checkpoint from the FP32 ONNX graph
    of the package in ``out`` (its own first stage, BatchNorm folded:
    ``demo_model.lesion_net_from_onnx``), after checking that the module gives what ONNX
    Runtime gives on the package's ``golden_cases`` (its manifest's). Returns what
    ``from_checkpoint`` records of it."""
    import onnxruntime as ort

    graph = out / "model.fp32.onnx"
    module = lesion_net_from_onnx(graph, **STUDENT)
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    for case in golden_cases:
        x = np.load(out / case["input"]).astype(np.float32)
        expected = dict(zip(names, session.run(None, {session.get_inputs()[0].name: x}),
                            strict=True))
        with torch.no_grad():
            got = module(torch.from_numpy(x))
        worst = max(float(np.abs(got[k].numpy() - expected[k]).max()) for k in names)
        if worst > 1e-3:
            raise ValueError(f"the module read back from {graph} differs from it by {worst:.2g} "
                             f"on {case['input']}")
    save_module(module, checkpoint)
    return {"recovered_from": {"artifact": graph.name, "sha256": sha256_file(graph),
                               "golden_inputs_checked": len(golden_cases)}}


def second_stage(args: argparse.Namespace, out: Path, selection: tuple, log
                 ) -> tuple[LesionStage, dict]:
    """Train (or keep), calibrate, export, check and declare the second stage
    (``demo/crop_stage.py``): the stage loaded as the box loads it (ONNX Runtime,
    golden cases passed) and its manifest entry. ``selection`` is the first stage's outputs
    on the threshold-selection phantoms, that split and the thresholds: the stage's mask
    offset is chosen there, end to end as the box runs it."""
    start = time.time()
    val = crop_stage.make_crops("val", args.stage_val)
    if args.stage_from_checkpoint:
        trained, training = kept_stage(args, log)
    else:
        train = crop_stage.make_crops("train", args.stage_phantoms)
        log(f"second stage: {len(train.x)} training crops, {len(val.x)} validation crops")
        bf16 = bf16_supported()  # the forward pass only; the net stays float32
        trained = crop_stage.train_stage(train, args.stage_epochs, seed=args.seed, log=log,
                                         depth=args.stage_depth, bf16=bf16)
        torch.save(trained.state_dict(), args.checkpoint.with_suffix(".stage.pt"))
        training = {"training_crops": len(train.x), "epochs": args.stage_epochs,
                    "depth": args.stage_depth, "bf16_autocast": bf16,
                    "seconds": round(time.time() - start, 1)}
    outs, split, thresholds = selection
    plan = dataset_plan(SEEDS["val"], len(split.labels))

    def share_of(model: torch.nn.Module) -> float:
        stage = torch_lesion_stage(model, crop_stage.SPEC, NAME, VERSION)
        refine = phantom_refiner(stage, "val", plan)
        sizes = lesion_metrics(outs, split, HEADS, HEAD_PARAMS, thresholds, refine)["sizes"]
        return sizes.get("both_within_15pct", 0.0)

    calibration = crop_stage.calibrate_stage(trained, share_of, log)
    net = crop_stage.Orientations(
        crop_stage.shift_mask_logits(trained, calibration["offset"])).eval()
    spec = crop_stage.SPEC
    artifacts = export_stage(net, out, spec, args.targets, val.x, log)
    cases = stage_golden_cases(out, net, spec, val.x, [0, len(val.x) // 2])
    shapes = {crop_stage.MASK: [1, 1, *crop_stage.CROP.size],
              crop_stage.CLASS: [1, len(CLASSES)]}
    section = stage_section(spec, shapes, artifacts, cases, {})
    holder = ModelPackage(out, {"schema": SCHEMA, "name": NAME, "version": VERSION,
                                "stages": [section]}, "unsigned")
    stage = load_stage(holder, RuntimeConfig(backend="onnxruntime"), "onnxruntime")
    assert stage is not None
    section["validation"] = {**crop_stage.crop_figures(stage, val), **training,
                             "mask_calibration": {**calibration,
                                                  "phantoms": len(split.labels)}}
    log(f"second stage: {section['validation']}")
    return stage, section


def kept_stage(args: argparse.Namespace, log) -> tuple[torch.nn.Module, dict]:
    """``--stage-from-checkpoint``: the stage's net kept by an earlier build beside
    ``--checkpoint`` and how it was trained, read from the package in ``--out``."""
    path = args.checkpoint.with_suffix(".stage.pt")
    manifest = json.loads((args.out / "manifest.json").read_text(encoding="utf-8"))
    earlier = manifest["stages"][0]["validation"]
    depth = int(earlier.get("depth", 3))  # packages before the option had three scales
    net = crop_stage.CropNet(depth=depth)
    net.load_state_dict(torch.load(path))
    training = {**{k: earlier[k] for k in ("training_crops", "epochs", "seconds")},
                "depth": depth, "bf16_autocast": bool(earlier.get("bf16_autocast", False))}
    training["from_checkpoint"] = {"checkpoint": path.name, "sha256": sha256_file(path)}
    log(f"second stage from {path} ({training})")
    return net.eval(), training


def declared_heatmap(selection: tuple, held_out: tuple, thresholds: dict
                     ) -> tuple[list[dict], dict]:
    """The heads to declare, their heatmap the map whose hot spot lies on the lesions
    (``converters/heatmap_check.py``: chosen on the threshold-selection phantoms, its
    ``on_lesion`` measured on the held-out ones with the second stage's boxes), and the
    figures for the card."""
    return choose_heatmap(HEADS, HEAD_PARAMS, thresholds, selection, held_out,
                          f"held-out test phantoms (phantoms/images.py, seed "
                          f"{SEEDS['test']}): detected lesions (IoU >= 0.3) of the torch "
                          f"model decoded by the box's heads decoder, boxes from its second "
                          f"stage")


def phantom_refiner(stage: LesionStage, split: str, plan: list):
    """``refine(i, boxes)`` for phantom ``i`` of a split's ``plan``: the stage on its source
    image."""
    return lambda i, boxes: stage.refine(dataset_sample(SEEDS[split], i, plan).image, boxes)


def calibrate_mask(model: torch.nn.Module, val, norm: tuple[float, float],
                   images: int = 320) -> dict:
    """Shift the mask logits (the last decoder conv's bias, in place) by the offset whose
    masks, decoded and measured as the box does, put most threshold-selection lesions over
    5 mm within 15 % of their true long and short axes (ties: the smallest shift).

    The segmentation head keeps its threshold of 0.5: the shift moves where an uncertain
    mask's 0.5 contour lies, which BCE on soft lesion shares pulls inwards.
    """
    import copy

    picked = [i for i in range(len(val.labels)) if val.truth[i]][:images]
    part = copy.copy(val)
    for name in ("transforms", "truth", "spacings", "kinds", "boxes", "source_boxes"):
        setattr(part, name, [getattr(val, name)[i] for i in picked])
    outs = torch_outputs(fuse_batchnorm(copy.deepcopy(model)), SPEC,
                         model_inputs(val.planes[picked], *norm))
    outs = {k: v for k, v in outs.items() if k != "features"}
    shares = {}
    for offset in MASK_OFFSETS:
        shifted = {**outs, "lesion_mask": outs["lesion_mask"] + offset}
        sizes = lesion_metrics(shifted, part, HEADS, HEAD_PARAMS, {"box": 0.3})["sizes"]
        shares[offset] = sizes.get("both_within_15pct", 0.0)
    best = max(MASK_OFFSETS, key=lambda o: (shares[o], -abs(o)))
    with torch.no_grad():
        model.fuse[-1].bias += best
    return {"offset": best, "images": len(picked),
            "both_axes_within_15pct_by_offset": {str(k): v for k, v in shares.items()}}


def validated_range(conv: Conversion, model: torch.nn.Module, fit_x: np.ndarray,
                    held_x: np.ndarray, norm: tuple[float, float]) -> dict:
    """The manifest's ``ood`` section, valid for every artifact the box may run: what it
    measures (the input's own statistics, as the box computes them in float, and the
    model's ``features``) of the training phantoms ``fit_x``, through the torch model and
    every INT8 artifact (whose quantisation moves the features), fits it; the same for
    the threshold-selection phantoms ``held_x`` (never fitted) sets its threshold. Float
    artifacts match the torch model to ~1e-4 and add nothing."""
    from converters.artifacts import open_artifact, run_batch

    fit_statistics, held_statistics = statistics_of(fit_x, norm), statistics_of(held_x, norm)
    fit = [measured(fit_statistics, torch_outputs(model, SPEC, fit_x)["features"])]
    held = [measured(held_statistics, torch_outputs(model, SPEC, held_x)["features"])]
    runs = ["torch fp32"]
    for record in conv.records():
        if record.precision != "int8":
            continue
        backend = open_artifact(conv.out, record, conv.spec)
        try:
            fit.append(measured(fit_statistics, run_batch(backend, conv.spec, fit_x)["features"]))
            held.append(measured(held_statistics,
                                 run_batch(backend, conv.spec, held_x)["features"]))
        finally:
            backend.close()
        runs.append(f"{record.format} {record.precision} ({record.path})")
    floors = spread_floors(IMAGE_STATISTICS, fit[0].shape[1] - IMAGE_STATISTICS.size)
    section = fit_validated_range(np.concatenate(fit), np.concatenate(held),
                                  quantile=OOD_QUANTILE, margin=OOD_MARGIN, spread_floor=floors,
                                  statistics=IMAGE_STATISTICS)
    return {"section": section, "fit_images": len(fit_x), "threshold_images": len(held_x),
            "runs": runs}


def statistics_of(x: np.ndarray, norm: tuple[float, float]) -> np.ndarray:
    """The own statistics the demo's validated range measures of model inputs ``x``
    (``converters.ood.input_statistics``), before each artifact's features."""
    return input_statistics(x, IMAGE_STATISTICS, *norm)


def ood_figures(conv: Conversion, ood: dict, model: torch.nn.Module, ref: dict,
                norm: tuple[float, float]) -> dict:
    """Held-out test phantoms and pydicom's real CT/MR files against the validated range:
    through the torch model and through every artifact (the box runs an artifact)."""
    from converters.artifacts import open_artifact, run_batch

    section = ood["section"]
    real = real_images(SHAPE, *norm)
    x = np.concatenate([r[2] for r in real]) if real else np.zeros((0, *SHAPE[1:]), np.float32)
    names = [(r[0], r[1]) for r in real]
    held_statistics = statistics_of(conv.validation.x, norm)
    real_statistics = statistics_of(x, norm)
    report = {"fit_images": ood["fit_images"], "threshold_images": ood["threshold_images"],
              "fitted_through": ood["runs"],
              "quantile": section["held_out"]["quantile"], "margin": section["held_out"]["margin"],
              "dimensions": len(section["mean"]), "image_statistics": IMAGE_STATISTICS.size,
              "threshold": section["threshold"],
              "torch": range_report(section, measured(held_statistics, ref["features"]), names,
                                    measured(real_statistics,
                                             torch_outputs(model, SPEC, x)["features"]) if real
                                    else np.zeros((0, len(section["mean"])))),
              "artifacts": {}}
    for record in conv.records():
        backend = open_artifact(conv.out, record, conv.spec)
        try:
            real_values = measured(real_statistics, run_batch(backend, conv.spec, x)["features"]
                                   ) if real else np.zeros((0, len(section["mean"])))
        finally:
            backend.close()
        report["artifacts"][f"{record.format} {record.precision} ({record.path})"] = range_report(
            section, measured(held_statistics, conv.outputs(record)["features"]), names,
            real_values)
    return report


def _verification_data(tr, test, norm: tuple[float, float], calibration: int) -> LabelledData:
    """Calibration rows from the training phantoms, validation rows = the held-out test."""
    pick = np.random.default_rng(0).permutation(len(tr.labels))[:calibration]
    x = model_inputs(np.concatenate([tr.planes[pick], test.planes]), *norm)
    labels = np.concatenate([tr.labels[pick], test.labels]).astype(np.int64)
    files = [f"phantom:train:{i}" for i in pick] + [f"phantom:test:{i}" for i in
                                                      range(len(test.labels))]
    split = np.array(["calibration"] * len(pick) + ["validation"] * len(test.labels))
    return LabelledData(x, labels, files, split)


def main(argv: list[str] | None = None) -> int:
    """``python -m demo.train``: rebuild the demo package."""
    parser = argparse.ArgumentParser(prog="python -m demo.train",
                                     description="Rebuild the phantom demo model package.")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "models" / NAME / VERSION)
    parser.add_argument("--quick", action="store_true",
                        help="tiny data, one epoch each, ONNX only (smoke test; its weak "
                             "model is packaged with the weakness recorded)")
    parser.add_argument("--key", type=Path, help="Ed25519 private key; its .pub beside it",
                        default=REPO_ROOT / "models/keys/DEMO-ONLY-model-signing.pem")
    parser.add_argument("--train", type=int, default=5200, help="training phantoms")
    parser.add_argument("--val", type=int, default=800, help="threshold-selection phantoms")
    parser.add_argument("--test", type=int, default=1000, help="held-out phantoms")
    parser.add_argument("--epochs", type=int, default=14, help="teacher epochs")
    parser.add_argument("--student-epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prune", type=float, default=0.7, help="MAC ratio kept by pruning")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--calibration", type=int, default=256, help="calibration images")
    parser.add_argument("--from-checkpoint", action="store_true",
                        help="rebuild the package from the first stage kept in --checkpoint "
                             "and the training report of the package in --out (no training "
                             "of the first stage; export, quantization, second stage, card)")
    parser.add_argument("--recover-checkpoint", action="store_true",
                        help="with --from-checkpoint: first write --checkpoint from the FP32 "
                             "ONNX graph of the package in --out (its own first stage, "
                             "BatchNorm folded), for when the checkpoint is lost")
    parser.add_argument("--stage-phantoms", type=int, default=9000,
                        help="lesion phantoms whose crops train the second stage")
    parser.add_argument("--stage-val", type=int, default=300,
                        help="lesion phantoms whose crops check the second stage")
    parser.add_argument("--stage-epochs", type=int, default=32)
    parser.add_argument("--stage-depth", type=int, choices=(3, 4), default=4,
                        help="the second stage's scales (crop_stage.CropNet; 4 sees the "
                             "whole crop: docs/decisions/"
                             "0023-four-scale-stage-first-stage-recovered.md)")
    parser.add_argument("--stage-from-checkpoint", action="store_true",
                        help="keep the second stage's net saved beside --checkpoint by an "
                             "earlier build (no training; calibration, export, card)")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--checkpoint", type=Path,
                        default=REPO_ROOT / "build" / "demo-train" / f"{NAME}-{VERSION}.pt",
                        help="where the pruned torch module is kept (outside the package)")
    args = parser.parse_args(argv)
    if args.recover_checkpoint and not args.from_checkpoint:
        parser.error("--recover-checkpoint goes with --from-checkpoint")
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.quick:
        args.train, args.val, args.test = 192, 64, 64
        args.epochs = args.student_epochs = args.finetune_epochs = 1
        args.calibration, args.targets = 32, ["onnx"]
        args.stage_phantoms, args.stage_val, args.stage_epochs = 64, 32, 1
    return build(args)


if __name__ == "__main__":
    raise SystemExit(main())
