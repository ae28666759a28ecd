"""Does the heatmap's hot spot lie on the lesion? The share, per modality, on phantoms with truth.

The demo model's held-out test phantoms (``phantoms.images``, the seed the
demo build holds out; CT and US alternating, only those holding a lesion) are
analysed as the box analyses a received image (``ModelRunner.analyse``: quality,
preprocess, inference, heads, validated range, second stage). A detected lesion
is a box the box shows that overlaps a truth lesion (IoU >= 0.3); for each, the
heatmap as drawn over the image (``converters/heatmap_check.py``) has its hot
spot near the box inside the box, or not. Measured for:

* ``shown``: the heatmap the box shows now (none where the package's on-lesion
  check withholds it);
* ``candidate:<output>``: each map the package could show, unchecked: the
  declared heatmap head's (the demo's ``cam``: what the viewer and the PDF drew
  before the check) and the segmentation's lesion probability.

    .venv/bin/python -m bench.heatmap_on_lesion [--images 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import figure, machine, save
from converters.heatmap_check import candidate_heads, decoder, figures, image_rows
from demo.model import SEEDS
from engine.imaging.decode import DecodedImage
from engine.inference.runner import ModelRunner
from firmware_app.service.appliance import load_runner
from firmware_app.settings.box import Config
from phantoms.images import Phantom, dataset_plan, dataset_sample


def decoded(phantom: Phantom) -> DecodedImage:
    """The phantom as the box's decoder gives a received single-frame image."""
    rows, columns = phantom.image.shape
    return DecodedImage(frames=phantom.image[None].astype(np.float32), frame_indices=[0],
                        total_frames=1, rows=rows, columns=columns,
                        modality="CT" if phantom.kind == "ct" else "US",
                        sop_class_uid="", sop_instance_uid="", study_instance_uid="",
                        series_instance_uid="", photometric="MONOCHROME2",
                        transfer_syntax="", pixel_spacing=phantom.spacing)


def outputs_of(runner: ModelRunner, image: np.ndarray) -> tuple[dict, object]:
    """The first stage's raw outputs on ``image`` and its letterbox transform."""
    tensor, transform = runner.preprocess(image, runner.spec.shape, runner.spec.mean,
                                          runner.spec.std, runner.pre_params)
    return runner.backend.infer({runner.spec.name: tensor}), transform


def measure(runner: ModelRunner, images: int) -> tuple[dict[str, list[dict]], int]:
    """Rows per display (``shown`` and each candidate) and the lesion phantoms analysed."""
    manifest = runner.package.manifest
    params = manifest["postprocessing"].get("params", {})
    candidates = {name: decoder(heads, params, runner.thresholds)
                  for name, heads in candidate_heads(manifest["heads"]).items()}
    rows: dict[str, list[dict]] = {"shown": [], **{f"candidate:{n}": [] for n in candidates}}
    plan = dataset_plan(SEEDS["test"], images)
    analysed = 0
    for i, (_kind, lesion) in enumerate(plan):
        if not lesion:
            continue
        phantom = dataset_sample(SEEDS["test"], i, plan)
        image = decoded(phantom)
        found = runner.analyse(image, 64).findings
        analysed += 1
        size = phantom.image.shape
        rows["shown"] += image_rows(found.heatmap, found.boxes, phantom.boxes, size,
                                    image.modality)
        outputs, transform = outputs_of(runner, phantom.image)
        for name, candidate in candidates.items():
            rows[f"candidate:{name}"] += image_rows(
                candidate.unchecked_heatmap(outputs, transform), found.boxes, phantom.boxes,
                size, image.modality)
    return rows, analysed


def main() -> None:
    """Measure and print the figures (bench/out/heatmap_on_lesion.json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000,
                        help="held-out test phantoms drawn (about half hold a lesion)")
    args = parser.parse_args()
    config = Config()
    config.runtime.backend = "onnxruntime"
    runner = load_runner(config)
    started = time.perf_counter()
    rows, analysed = measure(runner, args.images)
    declared = next((h for h in runner.package.manifest["heads"] if h["kind"] == "heatmap"),
                    None)
    details = {
        "machine": machine("onnxruntime", "numpy"),
        "model": runner.package.model_id, "backend": runner.backend_label,
        "phantoms": f"held-out test (seed {SEEDS['test']}), {analysed} lesion phantoms of "
                    f"the first {args.images}",
        "declared_heatmap": declared,
        "heatmap_shown": runner.decoder.heatmap_shown,
        "heatmap_reason": runner.decoder.heatmap_reason,
        "figures": {name: {**figures(part),
                           "shown_with_heatmap": sum(1 for r in part if r["shown"])}
                    for name, part in rows.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    kept = {}
    for name, row in details["figures"].items():
        kept[f"{name}: hot spot inside the lesion's box"] = figure(
            row["share"], "share", None if name == "shown" else
            "the heatmap the box shows (shown), same phantoms, same run")
        for modality, part in row["by_modality"].items():
            kept[f"{name}: {modality}"] = figure(part["share"], "share")
        kept[f"{name}: lesions"] = figure(row["lesions"], "lesions")
    save("heatmap_on_lesion", details, kept,
         notes=f"{details['model']}, {details['phantoms']}; heatmap shown: "
               f"{details['heatmap_shown']}")


if __name__ == "__main__":
    main()
