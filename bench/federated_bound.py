"""What bounds the federated head's gains (issue 60): the room a head has on each clinic's
machine, and the noise of the comparison, beside ``bench/federated_seeds.py``.

Each of the five clinics (``phantoms/machines.py``) images ``--cases`` phantoms labelled with
the truth (no reviewer's slips) and ``--held-out`` more. Three heads over the demo model's
frozen maps (``engine/learning/cam_head.py``), the same Adam steps for each, no pull towards
the package's head (FedProx's μ = 0), so that what is measured is the head's room, not the
run's caution:

- **shipped**: the package's head;
- **own**: the clinic's own head, trained on its cases alone (what a head per clinic could
  reach);
- **shared**: one head trained on every clinic's cases pooled (what one head for the fleet,
  federated or centralised, could reach).

Beside each clinic's AUCs: the standard error of an AUC on its held-out cases (Hanley and
McNeil, 1982), the noise under any difference between two heads measured there.

    .venv/bin/python -m bench.federated_bound
    .venv/bin/python -m bench.federated_bound --cases 100 --held-out 100 --steps 100
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from bench.common import figure, machine, save
from bench.federated_clinics import _cases, _session
from converters.trainable import fit_sharpness
from converters.verify import auc
from engine.learning.cam_head import TrainingSettings, fine_tune
from phantoms.machines import CLINIC_MACHINES

KINDS = ("shipped", "own", "shared")


def auc_standard_error(value: float, lesions: int, clear: int) -> float:
    """Hanley and McNeil's standard error of an AUC of ``value`` measured on ``lesions``
    positive and ``clear`` negative cases."""
    q1, q2 = value / (2.0 - value), 2.0 * value**2 / (1.0 + value)
    variance = (value * (1.0 - value) + (lesions - 1) * (q1 - value**2)
                + (clear - 1) * (q2 - value**2)) / (lesions * clear)
    return math.sqrt(max(variance, 0.0))


def clinic_auc_table(results: dict[str, dict[str, float]], kinds: tuple[str, ...],
                     titles: tuple[str, ...], reference: str) -> dict:
    """Print each clinic's AUCs (``kinds``, headed ``titles``) and standard error as a
    Markdown table; their figures for the record."""
    figures = {}
    print("| clinic | " + " | ".join(titles) + " | AUC's standard error |")
    print("| --- | " + " | ".join("---" for _ in titles) + " | --- |")
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in kinds)
              + f" | {r['standard_error']:.3f} |")
        for k in kinds:
            figures[f"{name}_{k}_auc"] = figure(round(r[k], 4), "AUC", reference)
        figures[f"{name}_auc_standard_error"] = figure(round(r["standard_error"], 4), "AUC")
    return figures


def run(args: argparse.Namespace) -> dict:
    """Each clinic's held-out AUC for the three heads, and its standard error."""
    session, head, manifest = _session()
    rng = np.random.default_rng(args.seed)
    clinics = []
    for m in CLINIC_MACHINES:
        train, logits = _cases(session, manifest, m, args.cases, rng, 0.0)
        held_out, _ = _cases(session, manifest, m, args.held_out, rng, 0.0)
        clinics.append((m.name, train, logits, held_out))
    head = fit_sharpness(head, clinics[0][1].maps, clinics[0][2])
    settings = TrainingSettings(steps=args.steps, learning_rate=args.learning_rate,
                                proximal=0.0)
    shared = fine_tune(head, np.concatenate([c[1].maps for c in clinics]),
                       np.concatenate([c[1].labels for c in clinics]), settings)
    results = {}
    for name, train, _, held_out in clinics:
        own = fine_tune(head, train.maps, train.labels, settings)
        y = held_out.labels.astype(bool)
        aucs = {k: auc(y, h.logits(held_out.maps))
                for k, h in (("shipped", head), ("own", own), ("shared", shared))}
        results[name] = {**aucs, "standard_error": auc_standard_error(
            aucs["shipped"], int(y.sum()), int((~y).sum()))}
    return {"machine": machine("onnxruntime"), "settings": vars(args), "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=400, help="labelled cases per clinic")
    parser.add_argument("--held-out", type=int, default=400)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--learning-rate", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    started = time.monotonic()
    details = run(args)
    details["wall_s"] = round(time.monotonic() - started, 1)
    figures = clinic_auc_table(details["results"], KINDS,
                               ("shipped", "own head", "shared head"),
                               "the shipped head, same cases")
    save("federated_bound", details, figures,
         notes="cases labelled with the truth; heads trained without a pull towards the "
               "package's; demo model trained on phantoms; five simulated machines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
