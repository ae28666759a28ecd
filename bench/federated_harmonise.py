"""A lead for the clinic the federated head cannot reach (issue 60): undo a clinic's machine's
depth and gain before the model, estimated from its unlabelled images.

``bench/federated_bound.py`` showed that on clinic-3's machine (darker: gain 0.85, far field
at 0.8) one head for the fleet stays 0.07 AUC behind the clinic's own; its loss is the darker
image, not the features' moments (a per-clinic standardisation of the maps changed nothing).
Here each clinic's mean brightness by depth (the image's rows, as a share of its height) is
measured on ``--unlabelled`` images of its own, against the reference machine's (the phantoms
as the demo model was trained on them), and each image is divided by that ratio before the
shipped model scores it. Not built into the box: this measures whether it would help.

For each clinic: the shipped model's held-out AUC on the images as they come (**shipped**),
harmonised (**harmonised**), and **gated**: harmonised only where it raises the AUC on the
clinic's ``--labelled`` reviewed cases (the truth with ``--verdict-error`` of them flipped) by
more than twice that AUC's standard error, as a box would choose it from its own labels.
Beside each: the AUC's standard error on the held-out images (Hanley and McNeil). The demo
model is trained on phantoms; the machines are simulated (``phantoms/machines.py``).

    .venv/bin/python -m bench.federated_harmonise
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import machine, save
from bench.depth_profile import REFERENCE, harmonise, images, profile, ratio_to
from bench.federated_bound import auc_standard_error, clinic_auc_table
from bench.federated_clinics import _session
from converters.verify import auc
from engine.imaging.preprocess import letterbox_grey
from phantoms.machines import CLINIC_MACHINES

KINDS = ("shipped", "harmonised", "gated")


def gate_margin(before: float, verdicts: np.ndarray) -> float:
    """The gain harmonising must bring on a clinic's reviewed cases to be chosen: twice the
    standard error of their AUC before it (``before``, on ``verdicts``)."""
    return 2.0 * auc_standard_error(before, int(verdicts.sum()), int((~verdicts).sum()))


def run(args: argparse.Namespace) -> dict:
    """Each clinic's held-out AUC, shipped, harmonised and gated, and its standard error."""
    session, _head, manifest = _session()
    spec = manifest["inputs"][0]
    norm = spec["normalisation"]

    def scores(shown: list[np.ndarray]) -> np.ndarray:
        out = []
        for im in shown:
            x, _ = letterbox_grey(im, tuple(spec["shape"]), norm["mean"], norm["std"], {})
            [logit] = session.run(["lesion_logit"], {spec["name"]: x.astype(np.float32)})
            out.append(float(np.asarray(logit).reshape(-1)[0]))
        return np.asarray(out)

    reference = profile(images(REFERENCE, args.unlabelled, args.seed)[0])
    rng = np.random.default_rng(args.seed + 1)
    results = {}
    for k, m in enumerate(CLINIC_MACHINES):
        base = args.seed + 100 * (k + 1)
        ratio = ratio_to(reference, profile(images(m, args.unlabelled, base)[0]))
        labelled, truth = images(m, args.labelled, base + 1)
        verdicts = truth ^ (rng.random(truth.size) < args.verdict_error)
        held, y = images(m, args.held_out, base + 2)
        raw, fixed = scores(held), scores(harmonise(held, ratio))
        before = auc(verdicts, scores(labelled))
        after = auc(verdicts, scores(harmonise(labelled, ratio)))
        gain, margin = after - before, gate_margin(before, verdicts)
        found = {"shipped": auc(y, raw), "harmonised": auc(y, fixed)}
        found["gated"] = found["harmonised"] if gain > margin else found["shipped"]
        results[m.name] = {**found, "labelled_gain": gain, "gate_margin": margin,
                           "standard_error": auc_standard_error(
                               found["shipped"], int(y.sum()), int((~y).sum()))}
    return {"machine": machine("onnxruntime"), "settings": vars(args), "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--unlabelled", type=int, default=100,
                        help="images a clinic's profile is measured on")
    parser.add_argument("--labelled", type=int, default=40,
                        help="reviewed cases the gate decides on")
    parser.add_argument("--held-out", type=int, default=300)
    parser.add_argument("--verdict-error", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    started = time.monotonic()
    details = run(args)
    details["wall_s"] = round(time.monotonic() - started, 1)
    figures = clinic_auc_table(details["results"], KINDS, KINDS,
                               "the shipped model on the same images")
    save("federated_harmonise", details, figures,
         notes="each clinic's brightness by depth against the reference machine's, from its "
               "unlabelled images; gated on its reviewed cases; demo model trained on "
               "phantoms; five simulated machines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
