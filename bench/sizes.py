"""Lesion sizes against truth on held-out phantoms, measured as the box measures them.

The bundled demo package (trained on procedurally generated phantoms; not for
clinical use) is loaded as the service loads it (``load_runner``: signature,
golden cases, its second stage) on the runtime and precision asked for; every
phantom of the split is preprocessed and inferred by it, decoded by the box's
heads decoder, refined by the second stage and measured with the box's RECIST
axes (``demo/metrics.lesion_rows``, the same code as the model
card's figures). Prints the issue 15 figure (lesions over 5 mm with both axes
within 15 % of truth), the agreement with truth as an instrument's accuracy is
stated (each axis' bias and 95 % limits of agreement, the share's lower confidence
bound: ``demo_metrics.size_agreement``) and, for each lesion that misses it, its
kind, class, true and measured axes: what a newcomer needs to see where the sizes fail.

    .venv/bin/python -m bench.sizes [--split test] [--count 1000]
        [--backend onnxruntime] [--precision fp32] [--rescans 0]
        [--stage-net STATE_DICT.pt --stage-width 16 --stage-depth 4 --stage-offset 0.6
         --stage-orientations 0]

The reference in the same run is the first stage's own mask (no second stage).
``--rescans N`` measures every phantom N more times, each scanned again: the same
scene, lesions and truth, with new acquisition noise (CT's quantum noise, ultrasound's
speckle; ``phantoms/images.generate``). It prints the figure of each scan and the
box's test-retest repeatability between the first two: how far the same lesion's axes
move, and which misses are the same lesion missed in both scans and which one scan's
noise.

``--stage-net`` measures a candidate second stage, a ``demo.crop_stage.CropNet``
state dict (of ``--stage-width`` and ``--stage-depth``; ``crop_stage.train_stage`` trains
one), run as the package's stage would be (looking at each crop in
``--stage-orientations``, its mask logits shifted by ``--stage-offset``, through the box's
``LesionStage``), on the same phantoms and scans
as the package's own stage, which is the reference in the same run.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from bench.common import figure, machine, save
from demo.metrics import (
    SIZE_FLOOR_MM,
    SIZE_TOLERANCE,
    lesion_rows,
    size_agreement,
    size_figures,
    size_misses,
)
from demo.model import SEEDS, make_split
from firmware_app.service.appliance import load_runner
from firmware_app.settings.box import Config
from phantoms.images import dataset_plan, dataset_sample


def first_stage_outputs(runner, seed: int, plan: list[tuple[str, bool]],
                        rescan: int | None = None) -> dict[str, np.ndarray]:
    """The package's outputs for each phantom of ``seed``'s ``plan`` (scanned again when
    ``rescan`` is given), each generated at its source size and preprocessed by the box's
    own preprocessor."""
    collected: dict[str, list[np.ndarray]] = {}
    for i in range(len(plan)):
        image = dataset_sample(seed, i, plan, rescan=rescan).image
        tensor, _ = runner.preprocess(image, runner.spec.shape, runner.spec.mean,
                                      runner.spec.std, runner.pre_params)
        for name, value in runner.backend.infer({runner.spec.name: tensor}).items():
            collected.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(values) for name, values in collected.items()}


def measured_rows(runner, split, seed: int, plan: list[tuple[str, bool]],
                  outputs: dict[str, np.ndarray], rescan: int | None = None) -> list[dict]:
    """One row per truth lesion, measured by the box with both its stages
    (``demo/metrics.lesion_rows``) on the phantoms, or on their rescan, whose
    first-stage ``outputs`` are given (``first_stage_outputs``)."""
    manifest = runner.package.manifest

    def refine(i: int, boxes: list) -> list:
        return runner.stage.refine(dataset_sample(seed, i, plan, rescan=rescan).image, boxes)

    return lesion_rows(outputs, split, manifest["heads"], manifest["postprocessing"]["params"],
                       runner.thresholds, refine if runner.stage is not None else None)


def repeatability(first: list[dict], again: list[dict]) -> dict:
    """How the box's axes of the same lesion (over 5 mm, measured in both scans) move
    between two scans of one scene, and how its misses split: missed in both scans (the
    lesion) or in one only (that scan's noise)."""
    pairs = [(a, b) for a, b in zip(first, again, strict=True)
             if a["long_mm"] > SIZE_FLOOR_MM and "measured_long" in a and "measured_long" in b]
    if not pairs:
        return {"lesions_measured_in_both": 0}
    change = {axis: np.array([abs(b[f"measured_{axis}"] - a[f"measured_{axis}"])
                              / a[f"{axis}_mm"] for a, b in pairs]) for axis in ("long", "short")}
    moved = np.maximum(change["long"], change["short"]) > SIZE_TOLERANCE
    within = np.array([(not size_misses([a]), not size_misses([b])) for a, b in pairs])
    return {
        "lesions_measured_in_both": len(pairs),
        **{f"median_{axis}_axis_change_pct": round(100 * float(np.median(c)), 2)
           for axis, c in change.items()},
        **{f"p95_{axis}_axis_change_pct": round(100 * float(np.percentile(c, 95)), 2)
           for axis, c in change.items()},
        "an_axis_moves_over_15pct_of_truth": round(float(moved.mean()), 4),
        "both_within_15pct_in_both_scans": round(float(within.all(axis=1).mean()), 4),
        "missed_in_both_scans": int((~within).all(axis=1).sum()),
        "missed_in_one_scan_only": int((within[:, 0] != within[:, 1]).sum()),
    }


def main() -> None:
    """Measure, print and keep (bench/out/sizes.json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=sorted(SEEDS), default="test")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--rescans", type=int, default=0,
                        help="measure every phantom scanned again this many times")
    parser.add_argument("--stage-net", type=Path,
                        help="a candidate second stage: a CropNet state dict (torch)")
    parser.add_argument("--stage-width", type=int, default=16,
                        help="the candidate CropNet's width")
    parser.add_argument("--stage-depth", type=int, default=4,
                        help="the candidate CropNet's scales (3 or 4; the demo's has 4)")
    parser.add_argument("--stage-offset", type=float, default=0.0,
                        help="the candidate's mask logit offset")
    parser.add_argument("--stage-orientations", default="0",
                        help="the orientations the candidate looks at each crop in (0-7, "
                             "comma-separated; the shipped stage looks once, as cut: 0)")
    args = parser.parse_args()
    config = Config()
    config.runtime.backend, config.runtime.precision = args.backend, args.precision
    runner = load_runner(config)
    manifest = runner.package.manifest
    split = make_split(args.split, args.count)
    seed = SEEDS[args.split]
    plan = dataset_plan(seed, args.count)
    # the first stage's outputs of each scan, shared by every second stage measured
    scans = [first_stage_outputs(runner, seed, plan, rescan=k or None)
             for k in range(args.rescans + 1)]
    first = lesion_rows(scans[0], split, manifest["heads"],
                        manifest["postprocessing"]["params"], runner.thresholds)
    candidate = {}
    if args.stage_net is not None:
        package_stage = runner.stage
        orientations = tuple(int(k) for k in args.stage_orientations.split(","))
        runner.stage = candidate_stage(args.stage_net, args.stage_width, args.stage_offset,
                                       args.stage_depth, orientations)
        candidate = {"candidate_stage": {
            "net": str(args.stage_net), "width": args.stage_width, "depth": args.stage_depth,
            "mask_offset": args.stage_offset, "orientations": list(orientations),
            **stage_report(runner, split, seed, plan, scans)}}
        runner.stage = package_stage
    details = {
        "machine": machine("onnxruntime"),
        "model": runner.package.model_id, "backend": runner.backend_label,
        "split": args.split, "phantoms": args.count,
        **stage_report(runner, split, seed, plan, scans),
        "reference_first_stage_alone": size_figures(first),
        **candidate,
    }
    reference = "the first stage's own mask (no second stage), same phantoms, same run"
    stage, alone = details["with_second_stage"], details["reference_first_stage_alone"]
    kept = {"both axes within 15 %, lesions over 5 mm": figure(
                stage.get("both_within_15pct"), "share", reference),
            "first stage alone: both axes within 15 %": figure(
                alone.get("both_within_15pct"), "share"),
            "median long axis error": figure(stage.get("median_long_axis_error_pct"), "%",
                                             reference),
            "lesions over 5 mm measured": figure(stage.get("measured"), "lesions")}
    if candidate:
        kept["candidate stage: both axes within 15 %"] = figure(
            candidate["candidate_stage"]["with_second_stage"].get("both_within_15pct"), "share",
            "the package's own second stage, same run")
    if args.rescans:
        kept["test-retest: an axis moves over 15 %"] = figure(
            details["test_retest"].get("an_axis_moves_over_15pct_of_truth"), "share")
    save("sizes", details, kept,
         notes=f"{details['model']} on {details['backend']}, {args.count} {args.split} "
               f"phantoms, {args.rescans} rescan(s)")


def candidate_stage(path: Path, width: int, offset: float, depth: int,
                    orientations: tuple[int, ...]):
    """A CropNet state dict run as the package's second stage would be: looking at each
    crop in ``orientations``, its mask logits shifted by ``offset``, through the box's
    ``LesionStage``."""
    import torch

    from converters.stage import torch_lesion_stage
    from demo import crop_stage

    net = crop_stage.CropNet(width, depth)
    net.load_state_dict(torch.load(path))
    looks = crop_stage.Orientations(crop_stage.shift_mask_logits(net.eval(), offset),
                                    orientations).eval()
    return torch_lesion_stage(looks, crop_stage.SPEC, crop_stage.NAME, "candidate")


def stage_report(runner, split, seed: int, plan: list[tuple[str, bool]],
                 scans: list[dict[str, np.ndarray]]) -> dict:
    """The runner's figures with its second stage, on each scan's first-stage outputs
    (``scans``; the first is the phantoms' own scan): within 15 %, every miss of the first
    scan, and with rescans the figures of each scan and the test-retest repeatability."""
    measured = [measured_rows(runner, split, seed, plan, outputs, rescan=k or None)
                for k, outputs in enumerate(scans)]
    rows = measured[0]
    misses = size_misses(rows)
    kinds = Counter((m["kind"], m["class"], "under" if min(m["long_error"], m["short_error"])
                     < -SIZE_TOLERANCE else "over") for m in misses)
    return {
        "with_second_stage": size_figures(rows),
        "agreement": size_agreement(rows),
        "misses_by_kind_class_direction": {" ".join(k): n for k, n in sorted(kinds.items())},
        "misses": [{"image": m["image"], "kind": m["kind"], "class": m["class"],
                    "long_mm": round(m["long_mm"], 1), "short_mm": round(m["short_mm"], 1),
                    "long_error_pct": round(100 * m["long_error"], 1),
                    "short_error_pct": round(100 * m["short_error"], 1),
                    "p_malignant": None if m.get("p") is None else round(m["p"], 3)}
                   for m in misses],
        **({} if len(measured) == 1 else _rescanned(measured)),
    }


def _rescanned(measured: list[list[dict]]) -> dict:
    """The figures of every scan (the first one and its rescans), and the box's test-retest
    repeatability between the first scan and the second."""
    shares = [size_figures(rows)["both_within_15pct"] for rows in measured]
    return {"rescanned": [size_figures(again) for again in measured[1:]],
            "both_within_15pct_each_scan": shares,
            "agreement_each_scan": [size_agreement(rows) for rows in measured],
            "both_within_15pct_mean_of_scans": round(float(np.mean(shares)), 4),
            "misses_of_every_scan": sum(len(size_misses(rows)) for rows in measured),
            "test_retest": repeatability(measured[0], measured[1])}


if __name__ == "__main__":
    main()
