"""Lesion sizes against truth on held-out phantoms, measured as the box measures them.

The bundled demo package (trained on procedurally generated phantoms; not for
clinical use) is loaded as the service loads it (``load_runner``: signature,
golden cases, its second stage) on the runtime and precision asked for; every
phantom of the split is preprocessed and inferred by it, decoded by the box's
heads decoder, refined by the second stage and measured with the box's RECIST
axes (``converters/demo_metrics.lesion_rows``, the same code as the model
card's figures). Prints the issue 15 figure (lesions over 5 mm with both axes
within 15 % of truth) and, for each lesion that misses it, its kind, class,
true and measured axes: what a newcomer needs to see where the sizes fail.

    .venv/bin/python bench/sizes.py [--split test] [--count 1000]
        [--backend onnxruntime] [--precision fp32]

The reference in the same run is the first stage's own mask (no second stage).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import numpy as np

from common import REPO, machine, save

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from converters.demo_metrics import SIZE_TOLERANCE, lesion_rows, size_figures, size_misses
from converters.demo_model import SEEDS, make_split
from converters.phantoms import dataset_plan, dataset_sample
from firmware_app.service.appliance import load_runner
from firmware_app.settings.box import Config


def first_stage_outputs(runner, seed: int, plan: list[tuple[str, bool]]) -> dict[str, np.ndarray]:
    """The package's outputs for each phantom of ``seed``'s ``plan``, each generated at
    its source size and preprocessed by the box's own preprocessor."""
    collected: dict[str, list[np.ndarray]] = {}
    for i in range(len(plan)):
        image = dataset_sample(seed, i, plan).image
        tensor, _ = runner.preprocess(image, runner.spec.shape, runner.spec.mean,
                                      runner.spec.std, runner.pre_params)
        for name, value in runner.backend.infer({runner.spec.name: tensor}).items():
            collected.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(values) for name, values in collected.items()}


def main() -> None:
    """Measure, print and keep (bench/out/sizes.json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=sorted(SEEDS), default="test")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    config = Config()
    config.runtime.backend, config.runtime.precision = args.backend, args.precision
    runner = load_runner(config)
    manifest = runner.package.manifest
    split = make_split(args.split, args.count)
    plan = dataset_plan(SEEDS[args.split], args.count)
    outputs = first_stage_outputs(runner, SEEDS[args.split], plan)

    def refine(i: int, boxes: list) -> list:
        return runner.stage.refine(dataset_sample(SEEDS[args.split], i, plan).image, boxes)

    rows = lesion_rows(outputs, split, manifest["heads"], manifest["postprocessing"]["params"],
                       runner.thresholds, refine if runner.stage is not None else None)
    first = lesion_rows(outputs, split, manifest["heads"],
                        manifest["postprocessing"]["params"], runner.thresholds)
    misses = size_misses(rows)
    kinds = Counter((m["kind"], m["class"], "under" if min(m["long_error"], m["short_error"])
                     < -SIZE_TOLERANCE else "over") for m in misses)
    save("sizes", {
        "machine": machine("onnxruntime"),
        "model": runner.package.model_id, "backend": runner.backend_label,
        "split": args.split, "phantoms": args.count,
        "with_second_stage": size_figures(rows),
        "reference_first_stage_alone": size_figures(first),
        "misses_by_kind_class_direction": {" ".join(k): n for k, n in sorted(kinds.items())},
        "misses": [{"image": m["image"], "kind": m["kind"], "class": m["class"],
                    "long_mm": round(m["long_mm"], 1), "short_mm": round(m["short_mm"], 1),
                    "long_error_pct": round(100 * m["long_error"], 1),
                    "short_error_pct": round(100 * m["short_error"], 1),
                    "p_malignant": None if m.get("p") is None else round(m["p"], 3)}
                   for m in misses],
    })


if __name__ == "__main__":
    main()
