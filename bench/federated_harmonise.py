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
from bench.federated_bound import auc_standard_error, clinic_auc_table
from bench.federated_clinics import _session
from converters.verify import auc
from engine.imaging.preprocess import letterbox_grey
from phantoms.images import generate
from phantoms.machines import CLINIC_MACHINES, Machine

KINDS = ("shipped", "harmonised", "gated")
#: the reference machine: the phantoms as the demo model was trained on them
REFERENCE = Machine("reference")
#: depth bins of a brightness profile, and the darkest reference bin still compared
BINS, DARK = 64, 0.02


def images(m: Machine, count: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``count`` phantoms as machine ``m`` shows them (half with a lesion), and the truth."""
    rng = np.random.default_rng(seed)
    shown, truth = [], []
    for i in range(count):
        phantom = generate("us", rng, size=m.size, lesion=bool(i % 2))
        shown.append(m.image(phantom.image, rng))
        truth.append(bool(phantom.lesion))
    return shown, np.asarray(truth)


def profile(shown: list[np.ndarray]) -> np.ndarray:
    """Mean brightness by depth (BINS rows, each image's height scaled to one)."""
    depth = np.linspace(0.0, 1.0, BINS)
    return np.mean([np.interp(depth, np.linspace(0.0, 1.0, im.shape[0]), im.mean(axis=1))
                    for im in shown], axis=0)


def harmonise(shown: list[np.ndarray], ratio: np.ndarray) -> list[np.ndarray]:
    """Each image divided, row by row, by the clinic's brightness ratio at that depth."""
    out = []
    for im in shown:
        r = np.interp(np.linspace(0.0, 1.0, im.shape[0]), np.linspace(0.0, 1.0, BINS), ratio)
        out.append(np.clip(im / r[:, None], 0.0, 1.0).astype(np.float32))
    return out


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
        ratio = np.where(reference > DARK, profile(images(m, args.unlabelled, base)[0])
                         / np.maximum(reference, 1e-6), 1.0)
        ratio = np.clip(np.nan_to_num(ratio, nan=1.0), 0.2, 5.0)
        labelled, truth = images(m, args.labelled, base + 1)
        verdicts = truth ^ (rng.random(truth.size) < args.verdict_error)
        held, y = images(m, args.held_out, base + 2)
        raw, fixed = scores(held), scores(harmonise(held, ratio))
        before = auc(verdicts, scores(labelled))
        gain = auc(verdicts, scores(harmonise(labelled, ratio))) - before
        # the gate: a gain on the reviewed cases beyond twice their AUC's standard error
        margin = 2.0 * auc_standard_error(before, int(verdicts.sum()), int((~verdicts).sum()))
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
