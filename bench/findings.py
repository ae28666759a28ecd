"""What the lesion records cost: the heads decoder with masks, contours and the range.

For each CT and US phantom (the project's generator, half with lesions) the
bundled demo model (trained on procedurally generated phantoms; not for
clinical use) is run once; its outputs are then decoded repeatedly, interleaved:

* reference: the decode the box did before heads were declared (detection
  boxes and the heatmap only: the manifest's heads without segmentation and
  per-lesion classes);
* heads: everything the manifest declares (boxes, masks → contours, RECIST
  axes via lesion records, per-lesion class probabilities, heatmap) plus the
  validated-range score.

Also the package's second stage on each decoded lesion (crop from the source
image, inference, decode of its mask and class: ``inference/stage.py``), per
lesion against the first stage's inference of the whole image, and the whole
analysis of one instance (``ModelRunner.analyse``: quality, preprocess,
inference, decode, second stage, tracking) for the same phantoms.

    .venv/bin/python -m bench.findings [--images 40] [--rounds 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import figure, machine, percentiles, save
from clinibox_common.contracts.heads import parse_heads
from engine.imaging.decode import DecodedImage
from engine.inference.heads import HeadsDecoder, decoder_for
from engine.inference.lesions import lesion_records
from firmware_app.service.appliance import load_runner
from firmware_app.settings.box import Config
from phantoms.images import generate


def _decoded(image: np.ndarray, modality: str) -> DecodedImage:
    rows, columns = image.shape
    return DecodedImage(frames=image[None].astype(np.float32), frame_indices=[0],
                        total_frames=1, rows=rows, columns=columns, modality=modality,
                        sop_class_uid="", sop_instance_uid="", study_instance_uid="",
                        series_instance_uid="", photometric="MONOCHROME2",
                        transfer_syntax="", pixel_spacing=(0.7, 0.7))


def main() -> None:
    """Measure and print the figures (bench/out/findings.json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    config = Config()
    config.runtime.backend = "onnxruntime"
    runner = load_runner(config)
    manifest = runner.package.manifest
    heads = decoder_for(manifest)
    reference = HeadsDecoder(
        parse_heads([h for h in manifest["heads"] if h["kind"] in ("detection", "heatmap")]),
        heads.params, heads.thresholds)
    cases = []
    for i in range(args.images):
        kind = ("ct", "us")[i % 2]
        image = generate(kind, np.random.default_rng(1000 + i), size=(512, 512) if kind == "ct"
                         else (480, 640), lesion=bool(i % 4 < 2)).image
        tensor, transform = runner.preprocess(image, runner.spec.shape, runner.spec.mean,
                                              runner.spec.std, runner.pre_params)
        outputs = runner.backend.infer({runner.spec.name: tensor})
        cases.append((image, kind, outputs, transform, tensor))
    timed: dict[str, list[float]] = {"reference": [], "heads": [], "analyse": [],
                                      "first_stage_inference": [], "stage_per_lesion": []}
    lesions = 0
    for _ in range(args.rounds):
        for _image, _kind, outputs, transform, tensor in cases:
            t0 = time.perf_counter()
            reference.decode(outputs, transform)
            t1 = time.perf_counter()
            found = heads.decode(outputs, transform)
            records = lesion_records(found.boxes, 0, (0.7, 0.7), found.classes)
            if runner.guard is not None:
                runner.guard.score(outputs, tensor)
            t2 = time.perf_counter()
            timed["reference"].append((t1 - t0) * 1000)
            timed["heads"].append((t2 - t1) * 1000)
            lesions += len(records)
    for image, _kind, outputs, transform, tensor in cases:
        boxes = heads.decode(outputs, transform).boxes
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            runner.backend.infer({runner.spec.name: tensor})
            timed["first_stage_inference"].append((time.perf_counter() - t0) * 1000)
            if runner.stage is None:
                continue
            for box in boxes:
                t0 = time.perf_counter()
                runner.stage.refine_one(image, box)
                timed["stage_per_lesion"].append((time.perf_counter() - t0) * 1000)
    for image, kind, *_ in cases:
        decoded = _decoded(image, "CT" if kind == "ct" else "US")
        for _ in range(3):
            t0 = time.perf_counter()
            runner.analyse(decoded, 64)
            timed["analyse"].append((time.perf_counter() - t0) * 1000)
    reference = "the decode before heads (detection boxes and heatmap), same outputs, same run"
    details = {
        "machine": machine("onnxruntime", "numpy"),
        "model": runner.package.model_id, "backend": runner.backend_label,
        "images": args.images, "rounds": args.rounds,
        "lesion_records_per_image": round(lesions / (args.images * args.rounds), 2),
        "decode_reference_boxes_and_heatmap": percentiles(timed["reference"]),
        "decode_heads_masks_contours_classes_range": percentiles(timed["heads"]),
        "analyse_one_instance": percentiles(timed["analyse"]),
        "first_stage_inference_per_image": percentiles(timed["first_stage_inference"]),
        "second_stage_per_lesion": (percentiles(timed["stage_per_lesion"])
                                    if timed["stage_per_lesion"] else None),
    }
    stage = details["second_stage_per_lesion"]
    kept = {
        "decode, boxes and heatmap only p50": figure(
            details["decode_reference_boxes_and_heatmap"]["p50_ms"], "ms/image"),
        "decode, every head and the range p50": figure(
            details["decode_heads_masks_contours_classes_range"]["p50_ms"], "ms/image",
            reference),
        "decode, every head and the range p95": figure(
            details["decode_heads_masks_contours_classes_range"]["p95_ms"], "ms/image",
            reference),
        "first stage inference p50": figure(
            details["first_stage_inference_per_image"]["p50_ms"], "ms/image"),
        "second stage p50": figure(stage["p50_ms"] if stage else None, "ms/lesion",
                                   "first stage inference of the whole image, same run"),
        "analyse one instance p50": figure(details["analyse_one_instance"]["p50_ms"], "ms"),
        "lesion records": figure(details["lesion_records_per_image"], "per image"),
    }
    save("findings", details, kept,
         notes=f"{details['model']} on {details['backend']}, {args.images} CT and US phantoms, "
               f"{args.rounds} rounds")


if __name__ == "__main__":
    main()
