"""How far the federated head's gains reach, over several draws of the five clinics' cases
(issue 60): the spread that one published run (``bench/federated_clinics.py``) cannot show.

The same cases, heads and arithmetic as that run, with the rounds averaged in this process
instead of over Flower (FedAvg of each clinic's clipped change, ``--noise 0``): on seed 61
the two agree to the third decimal of every AUC, and a seed's run here takes seconds where
Flower's takes minutes. For each training-set size and seed: each clinic's held-out AUC for
the shipped, local-only, federated and centralised heads. Reported: the mean AUC per clinic
and variant, how many (clinic, seed) pairs the federated head beats local-only, and how many
come within 0.02 of centralised.

    .venv/bin/python -m bench.federated_seeds                    # seeds 70-74, 40 and 150 cases
    .venv/bin/python -m bench.federated_seeds --seeds 70 71 --train 40
    .venv/bin/python -m bench.federated_seeds --proximal 0 --clip 4 --rounds 10 \
        --record federated_seeds_unanchored        # no pull towards the round's head
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import figure, machine, save
from bench.federated_clinics import ClinicData, clinic_data
from converters.verify import auc
from engine.learning.cam_head import CamHead, TrainingSettings, fine_tune
from firmware_app.learning.cases import LabelledCases

KINDS = ("shipped", "local", "federated", "centralised")


def federated_average(head: CamHead, clinics: list[ClinicData], rounds: int,
                      settings: TrainingSettings, clip: float) -> CamHead:
    """FedAvg + FedProx as the ServerApp and ClientApp do it, without the masks or noise:
    each round, each clinic's change from the round's head clipped to ``clip``, averaged."""
    current = head
    for _ in range(rounds):
        changes = []
        for c in clinics:
            trained = fine_tune(current, c.train.maps, c.train.labels, settings, anchor=current)
            change = trained.as_vector() - current.as_vector()
            changes.append(change * min(1.0, clip / max(float(np.linalg.norm(change)), 1e-12)))
        current = current.with_vector(current.as_vector() + np.mean(changes, axis=0))
    return current


def one_draw(train: int, held_out: int, seed: int, args: argparse.Namespace
             ) -> dict[str, dict[str, float]]:
    """Each clinic's held-out AUC per variant, for one draw of the cases."""
    clinics, head, _ = clinic_data(train, held_out, args.verdict_error, seed)
    settings = TrainingSettings(steps=args.local_steps, learning_rate=args.learning_rate,
                                proximal=args.proximal)
    long = TrainingSettings(steps=args.rounds * args.local_steps,
                            learning_rate=args.learning_rate, proximal=args.proximal)
    pooled = LabelledCases(np.concatenate([c.train.maps for c in clinics]),
                           np.concatenate([c.train.labels for c in clinics]))
    heads = {"shipped": head, "centralised": fine_tune(head, pooled.maps, pooled.labels, long),
             "federated": federated_average(head, clinics, args.rounds, settings, args.clip)}
    out = {}
    for c in clinics:
        local = fine_tune(head, c.train.maps, c.train.labels, long)
        y = c.held_out.labels.astype(bool)
        out[c.machine.name] = {k: auc(y, h.logits(c.held_out.maps))
                               for k, h in {**heads, "local": local}.items()}
    return out


def summarise(draws: list[dict[str, dict[str, float]]]) -> dict:
    """Mean AUC per clinic and variant; the federated head's wins over local-only and its
    gaps to centralised, counted over (clinic, draw) pairs."""
    clinics = list(draws[0])
    mean = {c: {k: float(np.mean([d[c][k] for d in draws])) for k in KINDS} for c in clinics}
    pairs = [(d[c]["federated"], d[c]["local"], d[c]["centralised"]) for d in draws
             for c in clinics]
    return {"mean_auc": mean, "pairs": len(pairs),
            "federated_beats_local": sum(f > loc for f, loc, _ in pairs),
            "federated_within_0.02_of_centralised": sum(cen - f <= 0.02 for f, _, cen in pairs),
            "per_clinic_beats_local": {c: sum(d[c]["federated"] > d[c]["local"] for d in draws)
                                       for c in clinics}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[70, 71, 72, 73, 74])
    parser.add_argument("--train", type=int, nargs="+", default=[40, 150],
                        help="labelled cases per clinic (one summary per size)")
    parser.add_argument("--held-out", type=int, default=400)
    parser.add_argument("--verdict-error", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-steps", type=int, default=40)
    parser.add_argument("--learning-rate", type=float, default=0.02)
    parser.add_argument("--proximal", type=float, default=0.1)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--record", default="federated_seeds",
                        help="the record's name (another for other settings)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    sizes = {}
    figures = {}
    for train in args.train:
        draws = [one_draw(train, args.held_out, seed, args) for seed in args.seeds]
        summary = sizes[str(train)] = {"draws": draws, **summarise(draws)}
        print(f"{train} cases per clinic, seeds {args.seeds}:")
        for clinic, m in summary["mean_auc"].items():
            print(f"  {clinic}: " + "  ".join(f"{k} {m[k]:.3f}" for k in KINDS)
                  + f"  (federated > local in {summary['per_clinic_beats_local'][clinic]} "
                    f"of {len(draws)})")
        print(f"  federated > local-only in {summary['federated_beats_local']} of "
              f"{summary['pairs']} (clinic, draw) pairs; within 0.02 of centralised in "
              f"{summary['federated_within_0.02_of_centralised']}")
        figures[f"train{train}_federated_beats_local"] = figure(
            summary["federated_beats_local"], f"of {summary['pairs']} pairs")
        figures[f"train{train}_within_002_of_centralised"] = figure(
            summary["federated_within_0.02_of_centralised"], f"of {summary['pairs']} pairs")
    save(args.record, {"machine": machine("onnxruntime"), "settings": vars(args),
                             "wall_s": round(time.monotonic() - started, 1), "sizes": sizes},
         figures, notes="in-process FedAvg (the Flower run's arithmetic without masks or "
                        "noise); demo model trained on phantoms; five simulated machines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
