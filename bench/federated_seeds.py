"""How far the federated head's gains reach, over several draws of the five clinics' cases
(issue 60): the spread that one published run (``bench/federated_clinics.py``) cannot show.

The same cases, heads and arithmetic as that run, with the rounds averaged in this process
instead of over Flower (FedAvg of each clinic's clipped change, ``--noise 0``): on seed 61
the two agree to the third decimal of every AUC, and a seed's run here takes seconds where
Flower's takes minutes. For each training-set size and seed: each clinic's held-out AUC for
the shipped, local-only, federated and centralised heads, and for the personalised score: the
clinic's own head blended with the fleet's, ``blend × federated + (1 − blend) × local-only``
logit by logit (both heads read the same maps, so a box would pay one more 1×1 convolution),
for the averaged head: one head whose numbers are that blend of the two heads' (a map of its
own, as a page's heatmap needs), and for the mixture: the two heads' pools mixed before the
log, the exact pool of one map (:func:`mixture_logits`).
Reported: the mean AUC per clinic and variant, how many (clinic, seed) pairs the federated and
the personalised scores beat local-only, and how many come within 0.02 of centralised.

    .venv/bin/python -m bench.federated_seeds                    # seeds 70-74, 40 and 150 cases
    .venv/bin/python -m bench.federated_seeds --seeds 70 71 --train 40
    .venv/bin/python -m bench.federated_seeds --proximal 0 --clip 4 --rounds 10 \
        --record federated_seeds_unanchored        # no pull towards the round's head
    .venv/bin/python -m bench.federated_seeds --seeds 80 81 82 83 84 85 86 87 88 89 \
        --train 40 --record federated_seeds_personalised  # the blend, on draws it was not chosen on
    .venv/bin/python -m bench.federated_seeds --seeds $(seq 80 99) --train 40 \
        --record federated_seeds_personalised_20  # both, on twenty draws
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import figure, machine, save
from bench.depth_profile import REFERENCE, HarmonisedMachine, images, profile, ratio_to
from bench.federated_clinics import ClinicData, clinic_data
from bench.federated_harmonise import gate_margin
from converters.verify import auc
from engine.learning.cam_head import CamHead, TrainingSettings, fine_tune
from firmware_app.learning.cases import LabelledCases
from phantoms.machines import CLINIC_MACHINES

KINDS = ("shipped", "local", "federated", "centralised", "personalised", "averaged", "mixture")


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


def personalised_logits(federated: np.ndarray, local: np.ndarray, blend: float) -> np.ndarray:
    """The clinic's score with the fleet's head and its own: ``blend`` of the federated
    head's logits and ``1 − blend`` of the local-only head's, case by case."""
    return blend * federated + (1.0 - blend) * local


def averaged_head(federated: CamHead, local: CamHead, blend: float) -> CamHead:
    """One head of the clinic's own: ``blend`` of the federated head's numbers and ``1 −
    blend`` of the local-only head's. Unlike the blend of logits, it is one 1×1 convolution,
    so its score is the pool of a map of its own (the heatmap a page shows)."""
    return federated.with_vector(blend * federated.as_vector()
                                 + (1.0 - blend) * local.as_vector())


def mixture_logits(federated: np.ndarray, local: np.ndarray, blend: float,
                   sharpness: float) -> np.ndarray:
    """The two heads' pools mixed before the log: ``log(blend·e^{r·f} + (1 − blend)·e^{r·l})
    / r``. A head's log-sum-exp pool is ``log(mean_p e^{r·cam_p}) / r``, so this is exactly the
    pool of one map, ``cam_p = log(blend·e^{r·cam_f,p} + (1 − blend)·e^{r·cam_l,p}) / r``: a
    score with a map of its own, as a page's heatmap needs, unlike the blend of logits."""
    r = sharpness
    return np.logaddexp(np.log(blend) + r * federated, np.log1p(-blend) + r * local) / r


def gated_clinics(clinics: list[ClinicData], train: int, held_out: int, seed: int,
                  args: argparse.Namespace) -> tuple[list[ClinicData], list[str]]:
    """Each clinic's cases with its machine's brightness by depth undone where its labelled
    cases say it helps (``bench/federated_harmonise.py``'s gate, on the shipped model's
    scores), and the clinics that chose it. The same phantoms, draws and labels either way."""
    reference = profile(images(REFERENCE, args.unlabelled, seed)[0])
    machines = tuple(HarmonisedMachine(m, ratio_to(reference, profile(
        images(m, args.unlabelled, seed + 100 * (k + 1))[0])))
        for k, m in enumerate(CLINIC_MACHINES))
    fixed, _, _ = clinic_data(train, held_out, args.verdict_error, seed, machines)
    chosen, names = [], []
    for raw, harmonised in zip(clinics, fixed, strict=True):
        verdicts = raw.train.labels.astype(bool)
        before = auc(verdicts, raw.train_logits)
        helps = auc(verdicts, harmonised.train_logits) - before > gate_margin(before, verdicts)
        chosen.append(harmonised if helps else raw)
        names += [raw.machine.name] if helps else []
    return chosen, names


def one_draw(train: int, held_out: int, seed: int, args: argparse.Namespace
             ) -> dict[str, dict[str, float]]:
    """Each clinic's held-out AUC per variant, for one draw of the cases (with ``--harmonise
    gated``, on the images each clinic's gate chose; ``harmonised`` lists those clinics)."""
    clinics, head, _ = clinic_data(train, held_out, args.verdict_error, seed)
    harmonised: list[str] = []
    if args.harmonise == "gated":
        clinics, harmonised = gated_clinics(clinics, train, held_out, seed, args)
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
        logits = {k: h.logits(c.held_out.maps) for k, h in {**heads, "local": local}.items()}
        out[c.machine.name] = {k: auc(y, s) for k, s in logits.items()}
        out[c.machine.name]["personalised"] = auc(y, personalised_logits(
            logits["federated"], logits["local"], args.blend))
        out[c.machine.name]["averaged"] = auc(y, averaged_head(
            heads["federated"], local, args.blend).logits(c.held_out.maps))
        out[c.machine.name]["mixture"] = auc(y, mixture_logits(
            logits["federated"], logits["local"], args.blend, head.sharpness))
        out[c.machine.name]["harmonised"] = c.machine.name in harmonised
    return out


def summarise(draws: list[dict[str, dict[str, float]]]) -> dict:
    """Mean AUC per clinic and variant; the federated head's wins over local-only and its
    gaps to centralised, counted over (clinic, draw) pairs."""
    clinics = list(draws[0])
    mean = {c: {k: float(np.mean([d[c][k] for d in draws])) for k in KINDS} for c in clinics}
    pairs = [(d[c]["federated"], d[c]["local"], d[c]["centralised"], d[c]["personalised"])
             for d in draws for c in clinics]
    return {"mean_auc": mean, "pairs": len(pairs),
            "federated_beats_local": sum(f > loc for f, loc, _, _ in pairs),
            "federated_within_0.02_of_centralised": sum(cen - f <= 0.02
                                                        for f, _, cen, _ in pairs),
            "personalised_beats_local": sum(p > loc for _, loc, _, p in pairs),
            "personalised_within_0.02_of_centralised": sum(cen - p <= 0.02
                                                           for _, _, cen, p in pairs),
            "per_clinic_beats_local": {c: sum(d[c]["federated"] > d[c]["local"] for d in draws)
                                       for c in clinics},
            "per_clinic_federated_minus_local": {
                c: paired_difference([d[c]["federated"] - d[c]["local"] for d in draws])
                for c in clinics},
            "per_clinic_personalised_minus_local": {
                c: paired_difference([d[c]["personalised"] - d[c]["local"] for d in draws])
                for c in clinics},
            "per_clinic_averaged_minus_local": {
                c: paired_difference([d[c]["averaged"] - d[c]["local"] for d in draws])
                for c in clinics},
            "averaged_beats_local": sum(d[c]["averaged"] > d[c]["local"]
                                        for d in draws for c in clinics),
            "per_clinic_mixture_minus_local": {
                c: paired_difference([d[c]["mixture"] - d[c]["local"] for d in draws])
                for c in clinics},
            "mixture_beats_local": sum(d[c]["mixture"] > d[c]["local"]
                                       for d in draws for c in clinics),
            "mixture_within_0.02_of_centralised": sum(
                d[c]["centralised"] - d[c]["mixture"] <= 0.02 for d in draws for c in clinics),
            "per_clinic_harmonised": {c: sum(bool(d[c].get("harmonised")) for d in draws)
                                      for c in clinics}}


def paired_difference(differences: list[float]) -> dict[str, float | bool]:
    """The mean of one clinic's paired AUC differences over the draws, its standard error,
    and whether it stands out of the draws' noise (more than twice that error from zero)."""
    d = np.asarray(differences, float)
    error = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
    return {"mean": float(d.mean()), "standard_error": error,
            "beyond_noise": bool(abs(d.mean()) > 2.0 * error)}


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
    parser.add_argument("--harmonise", choices=("none", "gated"), default="none",
                        help="gated: each clinic's brightness by depth undone where its "
                             "labelled cases say it helps (bench/federated_harmonise.py)")
    parser.add_argument("--blend", type=float, default=0.3,
                        help="the federated head's share of the personalised score (0.3: the "
                             "best of 0.3, 0.5 and 0.7 on seeds 70-79)")
    parser.add_argument("--unlabelled", type=int, default=100,
                        help="images a clinic's brightness profile is measured on")
    parser.add_argument("--record", default="federated_seeds",
                        help="the record's name (another for other settings)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.blend <= 1.0:
        parser.error(f"--blend is a share between 0 and 1; got {args.blend}")
    started = time.monotonic()
    sizes = {}
    figures = {}
    for train in args.train:
        draws = [one_draw(train, args.held_out, seed, args) for seed in args.seeds]
        summary = sizes[str(train)] = {"draws": draws, **summarise(draws)}
        print(f"{train} cases per clinic, seeds {args.seeds}:")
        for clinic, m in summary["mean_auc"].items():
            gap = summary["per_clinic_federated_minus_local"][clinic]
            print(f"  {clinic}: " + "  ".join(f"{k} {m[k]:.3f}" for k in KINDS)
                  + f"  (federated > local in {summary['per_clinic_beats_local'][clinic]} "
                    f"of {len(draws)}; federated - local {gap['mean']:+.4f} "
                    f"± {gap['standard_error']:.4f}"
                  + ("" if gap["beyond_noise"] else ", within noise")
                  + f"; harmonised in {summary['per_clinic_harmonised'][clinic]})")
            for kind in ("personalised", "averaged", "mixture"):
                mine = summary[f"per_clinic_{kind}_minus_local"][clinic]
                print(f"    {kind} - local {mine['mean']:+.4f} ± {mine['standard_error']:.4f}"
                      + ("" if mine["beyond_noise"] else ", within noise"))
        print(f"  federated > local-only in {summary['federated_beats_local']} of "
              f"{summary['pairs']} (clinic, draw) pairs; within 0.02 of centralised in "
              f"{summary['federated_within_0.02_of_centralised']}; personalised > local-only "
              f"in {summary['personalised_beats_local']}, within 0.02 of centralised in "
              f"{summary['personalised_within_0.02_of_centralised']}")
        figures[f"train{train}_federated_beats_local"] = figure(
            summary["federated_beats_local"], f"of {summary['pairs']} pairs")
        figures[f"train{train}_within_002_of_centralised"] = figure(
            summary["federated_within_0.02_of_centralised"], f"of {summary['pairs']} pairs")
        for kind in ("federated", "personalised", "averaged", "mixture"):
            gaps = summary[f"per_clinic_{kind}_minus_local"].values()
            figures[f"train{train}_clinics_{kind}_behind_local_beyond_noise"] = figure(
                sum(g["beyond_noise"] and g["mean"] < 0 for g in gaps),
                f"of {len(gaps)} clinics")
            figures[f"train{train}_clinics_{kind}_ahead_of_local_beyond_noise"] = figure(
                sum(g["beyond_noise"] and g["mean"] > 0 for g in gaps),
                f"of {len(gaps)} clinics")
            figures[f"train{train}_clinics_{kind}_ahead_of_local_on_average"] = figure(
                sum(g["mean"] > 0 for g in gaps), f"of {len(gaps)} clinics")
        figures[f"train{train}_personalised_beats_local"] = figure(
            summary["personalised_beats_local"], f"of {summary['pairs']} pairs")
        figures[f"train{train}_averaged_beats_local"] = figure(
            summary["averaged_beats_local"], f"of {summary['pairs']} pairs")
        figures[f"train{train}_mixture_beats_local"] = figure(
            summary["mixture_beats_local"], f"of {summary['pairs']} pairs")
        figures[f"train{train}_mixture_within_002_of_centralised"] = figure(
            summary["mixture_within_0.02_of_centralised"], f"of {summary['pairs']} pairs")
    save(args.record, {"machine": machine("onnxruntime"), "settings": vars(args),
                             "wall_s": round(time.monotonic() - started, 1), "sizes": sizes},
         figures, notes="in-process FedAvg (the Flower run's arithmetic without masks or "
                        "noise); demo model trained on phantoms; five simulated machines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
