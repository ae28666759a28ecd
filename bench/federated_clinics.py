"""Five simulated clinics fine-tune the demo model's head with real Flower rounds over
loopback TLS, against the shipped model, local-only training and centralised training
(issue 60, decision 0056).

Each clinic images phantoms with a machine of its own (``phantoms/machines.py``: gain, grey
curve, speckle, depth, frame size). Its training cases carry labels from simulated verdicts
(the truth, with ``--verdict-error`` of them flipped, as a reviewer's slips would); its
held-out cases carry the truth. What is trained is the head over the frozen model's final
maps (``engine/learning/cam_head.py``; the maps come from ONNX Runtime through
``converters/trainable.py``), the same settings everywhere:

- **shipped**: the package as it is;
- **local-only**: the clinic's own cases, ``rounds × local-steps`` steps;
- **federated**: Flower's SuperLink and one SuperNode per clinic over TLS, ``rounds`` rounds
  of ``local-steps`` each, FedAvg + FedProx, SecAgg+, client-side clipping and the noise of
  ``--noise`` (``bench/federation.py``);
- **centralised**: every clinic's cases pooled (the upper bound), ``rounds × local-steps``.

For each clinic: held-out AUC, and sensitivity and specificity at the package's finding
threshold and at the clinic's own (the threshold its box sets from its labelled cases,
decision 0057). Also: the bytes each box sent and received per round (counted on the wire by a
relay), the time a round takes, ε at δ, and the privacy checks: no box's clear head in the
SuperLink's database or log, and no canary (a clinic name written into each box's case path).

    .venv/bin/python -m bench.federated_clinics            # the published run
    .venv/bin/python -m bench.federated_clinics --quick    # a smaller one
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.common import OUT, REPO, figure, machine, save
from bench.federation import federation
from clinibox_common.contracts.clinic_threshold import ThresholdChoice, choose_threshold
from clinibox_common.contracts.federated import FederatedRun
from converters.trainable import MAPS_OUTPUT, fit_sharpness, trainable_model
from converters.verify import auc
from engine.imaging.preprocess import letterbox_grey
from engine.learning.cam_head import CamHead, TrainingSettings, fine_tune
from firmware_app.learning.cases import LabelledCases, write_cases
from firmware_app.settings.models import ModelsConfig
from phantoms.images import generate
from phantoms.machines import CLINIC_MACHINES, Machine

PACKAGE = REPO / "models" / "clinibox-demo-lesion" / "1.0.0"
#: written into each box's case path; must appear nowhere at the hospital
CANARY = "CANARY-CLINIC-7f3a"


@dataclass(frozen=True)
class ClinicData:
    """A clinic's training cases (verdict labels) and held-out cases (truth)."""

    machine: Machine
    train: LabelledCases
    train_logits: np.ndarray
    held_out: LabelledCases


def _session() -> tuple[ort.InferenceSession, CamHead, dict]:
    manifest = json.loads((PACKAGE / "manifest.json").read_text())
    model = trainable_model(PACKAGE / "model.fp32.onnx")
    session = ort.InferenceSession(model.model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session, model.head, manifest


def _cases(session: ort.InferenceSession, manifest: dict, m: Machine, count: int,
           rng: np.random.Generator, flip: float) -> tuple[LabelledCases, np.ndarray]:
    spec = manifest["inputs"][0]
    norm = spec["normalisation"]
    maps, labels, logits = [], [], []
    for i in range(count):
        phantom = generate("us", rng, size=m.size, lesion=bool(i % 2))
        x, _ = letterbox_grey(m.image(phantom.image, rng), tuple(spec["shape"]), norm["mean"],
                              norm["std"], {})
        logit, f = session.run(["lesion_logit", MAPS_OUTPUT],
                               {spec["name"]: x.astype(np.float32)})
        truth = int(phantom.lesion)
        labels.append(1 - truth if rng.random() < flip else truth)
        maps.append(f[0])
        logits.append(float(logit.reshape(-1)[0]))
    return LabelledCases(np.stack(maps), np.asarray(labels, np.int8)), np.asarray(logits)


def clinic_data(train: int, held_out: int, flip: float, seed: int,
                machines: tuple[Machine, ...] = CLINIC_MACHINES
                ) -> tuple[list[ClinicData], CamHead, dict]:
    """Every clinic's cases (``machines``: how each clinic's images come, in the order of
    :data:`CLINIC_MACHINES`), and the package's head with its sharpness."""
    session, head, manifest = _session()
    clinics = []
    for k, m in enumerate(machines):
        rng = np.random.default_rng(seed + 101 * k)
        tr, tr_logits = _cases(session, manifest, m, train, rng, flip)
        ho, _ = _cases(session, manifest, m, held_out, rng, 0.0)
        clinics.append(ClinicData(m, tr, tr_logits, ho))
    head = fit_sharpness(head, clinics[0].train.maps, clinics[0].train_logits)
    return clinics, head, manifest


def _logit(probability: float) -> float:
    return math.log(probability / (1.0 - probability))


def clinic_threshold(head: CamHead, clinic: ClinicData, manifest: dict) -> ThresholdChoice:
    """The finding threshold a box of this clinic would set for ``head`` from its labelled
    cases ([models] calibration = "keep_sensitivity" and calibration_raise = true, the rest
    at the box's defaults: the rule of ``contracts/clinic_threshold.py``, the package's
    validated sensitivity as the target). Raising is allowed here: the bench's labelled
    cases are a random sample, which a clinic's reviews are not."""
    probabilities = 1.0 / (1.0 + np.exp(-head.logits(clinic.train.maps)))
    lesion = clinic.train.labels.astype(bool)
    artifact = next(a for a in manifest["artifacts"] if a["path"] == "model.fp32.onnx")
    floor = float(manifest["provenance"]["floors"]["sensitivity"])
    defaults = ModelsConfig()
    return choose_threshold(
        list(probabilities[lesion]), list(probabilities[~lesion]),
        package_finding=float(manifest["thresholds"]["finding"]),
        alert=float(manifest["thresholds"]["alert"]),
        target_sensitivity=max(float(artifact["validation"]["sensitivity"]), floor),
        floor_sensitivity=floor, min_lesions=defaults.calibration_min_lesions,
        min_clear=defaults.calibration_min_clear, max_shift=defaults.calibration_max_shift,
        may_raise=True)


def scores(head: CamHead, clinic: ClinicData, manifest: dict) -> dict[str, float | str]:
    """Held-out AUC; sensitivity and specificity at the package's finding threshold and at
    the clinic's own (set from its labelled training cases, as its box would)."""
    s = head.logits(clinic.held_out.maps)
    y = clinic.held_out.labels.astype(bool)
    package = _logit(manifest["thresholds"]["finding"])
    own = clinic_threshold(head, clinic, manifest)
    at = _logit(own.finding)
    return {"auc": auc(y, s), "sensitivity": float(np.mean(s[y] >= package)),
            "specificity": float(np.mean(s[~y] < package)),
            "clinic_threshold": round(own.finding, 4), "clinic_threshold_state": own.state.value,
            "clinic_sensitivity": float(np.mean(s[y] >= at)),
            "clinic_specificity": float(np.mean(s[~y] < at))}


def _clear_heads(head: CamHead, clinics: list[ClinicData], settings: TrainingSettings,
                 clip: float) -> list[np.ndarray]:
    """What each box would send in round 1 were there no secure aggregation: its trained
    head, its change clipped as Flower's fixedclipping_mod does, as float32."""
    out = []
    for c in clinics:
        trained = fine_tune(head, c.train.maps, c.train.labels, settings).as_vector()
        change = trained - head.as_vector()
        change *= min(1.0, clip / max(float(np.linalg.norm(change)), 1e-12))
        out.append((head.as_vector() + change).astype(np.float32))
    return out


def hospital_holds(fed_folder: Path, clear: list[np.ndarray]) -> dict[str, int]:
    """How many boxes' clear heads, and canaries, the SuperLink's database and log hold."""
    stored = b""
    for path in fed_folder.iterdir():
        if path.name.startswith("superlink") and path.is_file():
            stored += path.read_bytes()
    found = sum(1 for h in clear if h.tobytes() in stored or h[:8].tobytes() in stored)
    return {"clear_heads": found, "canaries": stored.count(CANARY.encode())}


def run(args: argparse.Namespace) -> dict:
    """Measure; the details."""
    t0 = time.monotonic()
    clinics, head, manifest = clinic_data(args.train, args.held_out, args.verdict_error,
                                          args.seed)
    prepared = time.monotonic() - t0
    settings = TrainingSettings(steps=args.local_steps, learning_rate=args.learning_rate,
                                proximal=args.proximal)
    long = TrainingSettings(steps=args.rounds * args.local_steps,
                            learning_rate=args.learning_rate, proximal=args.proximal)
    pooled = LabelledCases(np.concatenate([c.train.maps for c in clinics]),
                           np.concatenate([c.train.labels for c in clinics]))
    central = fine_tune(head, pooled.maps, pooled.labels, long)
    results: dict[str, dict[str, dict]] = {}
    for c in clinics:
        local = fine_tune(head, c.train.maps, c.train.labels, long)
        results[c.machine.name] = {"shipped": scores(head, c, manifest),
                                   "local": scores(local, c, manifest),
                                   "centralised": scores(central, c, manifest)}
    with tempfile.TemporaryDirectory(prefix="clinibox-federated-") as tmp:
        folder = Path(tmp)
        case_files = [write_cases(folder / f"{CANARY}-{c.machine.name}" / "cases.npz", c.train)
                      for c in clinics]
        np.save(folder / "initial-head.npy", head.as_vector())
        out = folder / "run"
        config = {"out": str(out), "initial-head": str(folder / "initial-head.npy"),
                  "package": f"{manifest['name']} {manifest['version']}",
                  "boxes": len(clinics), "rounds": args.rounds,
                  "local-steps": args.local_steps, "learning-rate": args.learning_rate,
                  "proximal": args.proximal, "sharpness": head.sharpness,
                  "clipping-norm": args.clip, "noise-multiplier": args.noise,
                  "target-delta": args.delta, "secagg-threshold": len(clinics) // 2 + 1}
        with federation(folder / "flower", case_files) as fed:
            started = time.monotonic()
            done = fed.run(config, timeout=args.timeout)
            wall = time.monotonic() - started
            if done.returncode != 0 or not (out / "run.json").exists():
                raise SystemExit(f"the federated run failed ({done.returncode}):\n"
                                 f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
            traffic = [{"sent": t["up"], "received": t["down"]} for t in fed.traffic()]
        (OUT / "federated_run.log").write_text(done.stdout)
        record = FederatedRun.read(out / "run.json")
        federated = head.with_vector(np.load(out / "head.npy"))
        holds = hospital_holds(folder / "flower", _clear_heads(head, clinics, settings,
                                                                args.clip))
    for c in clinics:
        results[c.machine.name]["federated"] = scores(federated, c, manifest)
    return {"machine": machine("flwr", "onnxruntime"), "settings": vars(args),
            "preparation_s": round(prepared, 1), "run_wall_s": round(wall, 1),
            "round_s": round(wall / args.rounds, 1), "traffic": traffic,
            "record": json.loads(json.dumps(record.__dict__, default=lambda o: o.__dict__)),
            "hospital_holds": holds, "results": results}


def table(details: dict) -> str:
    """The per-clinic Markdown table of a run's details."""
    rows = ["| clinic | shipped | local-only | federated | centralised |",
            "| --- | --- | --- | --- | --- |"]
    for name, r in details["results"].items():
        cells = [f"{r[k]['auc']:.3f} / {r[k]['sensitivity']:.2f} / "
                 f"{r[k]['clinic_sensitivity']:.2f}"
                 for k in ("shipped", "local", "federated", "centralised")]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=40, help="labelled cases per clinic")
    parser.add_argument("--held-out", type=int, default=400, help="held-out cases per clinic")
    parser.add_argument("--verdict-error", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-steps", type=int, default=40)
    parser.add_argument("--learning-rate", type=float, default=0.02)
    parser.add_argument("--proximal", type=float, default=0.1)
    parser.add_argument("--clip", type=float, default=1.0, help="clipping norm of a box's change")
    parser.add_argument("--noise", type=float, default=0.0, help="noise multiplier (0: no DP)")
    parser.add_argument("--delta", type=float, default=1e-3)
    # the settings above were chosen on seed 60's cases; the published run is seed 61's
    parser.add_argument("--seed", type=int, default=61)
    parser.add_argument("--timeout", type=float, default=1500)
    parser.add_argument("--quick", action="store_true", help="20 + 60 cases, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.train, args.held_out, args.rounds = 20, 60, 2
    details = run(args)
    print(table(details))
    figures = {}
    for name, r in details["results"].items():
        for kind in ("shipped", "local", "federated", "centralised"):
            figures[f"{name}_{kind}_auc"] = figure(round(r[kind]["auc"], 4), "AUC",
                                                   "centralised training, same run")
            figures[f"{name}_{kind}_sensitivity"] = figure(round(r[kind]["sensitivity"], 3),
                                                           "share")
            figures[f"{name}_{kind}_clinic_sensitivity"] = figure(
                round(r[kind]["clinic_sensitivity"], 3), "share")
    figures["round_s"] = figure(details["round_s"], "s", "—")
    per_round = [(t["sent"] + t["received"]) / args.rounds for t in details["traffic"]]
    figures["bytes_per_box_round"] = figure(round(max(per_round)), "bytes (both ways)")
    figures["epsilon"] = details["record"]["privacy"]["epsilon"]
    figures["clear_heads_at_hospital"] = details["hospital_holds"]["clear_heads"]
    figures["canaries_at_hospital"] = details["hospital_holds"]["canaries"]
    name = ("federated_clinics" + ("_dp" if args.noise > 0 else "")
            + (f"_train{args.train}" if args.train != 40 and not args.quick else "")
            + ("_quick" if args.quick else ""))
    save(name, details, figures,
         notes="AUC / sensitivity at the package's finding threshold / sensitivity at the "
               "clinic's own threshold (set from its labelled cases as its box would); demo "
               "model trained on phantoms; five simulated machines (phantoms/machines.py)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
