"""The hospital's Flower ServerApp: average the boxes' fine-tuned heads, securely and with
client-level differential privacy, round after round (decision 0056).

Flower's SuperLink (``flower-superlink``, beside the hospital's receiver) runs this app when
a person starts a run (``flwr run``). Each round:

1. every enrolled box gets the global head (FedAvg, each box weighing 1);
2. each trains it on its own labelled cases and clips its change (the ClientApp,
   ``firmware_app/learning/client_app.py``);
3. SecAgg+ (Flower's ``SecAggPlusWorkflow``) sums the masked heads: the hospital learns the
   sum, never one box's head;
4. Gaussian noise of ``noise-multiplier × clipping-norm`` is added to the sum
   (``central/federated/noise.py``; a box that dropped out is left out of the sum and of
   the noise's size, and the others' round goes on).

Before its first round the app waits for the run's ``out`` folder to be claimed for this run
(``run.claim``, written by ``clinibox central federated-run`` once Flower has given the run its
number: ``clinibox_common/contracts/run_claim.py``), so a run that someone else starts into the
hospital's folder, or into one nobody claimed, is refused before its first round and writes
nothing. At the end it writes there ``head.npy`` (the aggregated head) and ``run.json``
(:class:`clinibox_common.contracts.federated.FederatedRun`: rounds, boxes per round, the
privacy spent). The head becomes a package only through the converter's gates and a person's
signature.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import flwr
import numpy as np
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from central.federated.boxes_wait import BoundedBoxWait
from central.federated.noise import NoisyAverageOfAnswers
from central.federated.privacy import epsilon_spent
from central.federated.timed_grid import TimedGrid
from clinibox_common.contracts.federated import (
    BOXES_WAIT_S,
    MAX_BOXES_WAIT_S,
    RUNS_ENV,
    FederatedRun,
    PrivacyBudget,
    RunSettings,
    SecureAggregation,
    directly_in_runs,
    within_runs,
)
from clinibox_common.contracts.run_claim import (
    CLAIM_FILE,
    CLAIM_WAIT_S,
    ClaimRefused,
    await_claim,
    holds_claim,
)
from clinibox_common.errors import CliniboxError

#: SecAgg+ quantises each number within ± this range (a head's weights are a few units)
QUANTISATION_CLIP = 64.0
#: and into this many steps (128 / 2**22 ≈ 3.1e-5 per step)
QUANTISATION_STEPS = 2**22
#: a head whose numbers reach past this share of the range is refused before the first round
#: (SecAgg+ would clip them silently, and the round would be refused as moved too far)
HEAD_RANGE_SHARE = 0.5
#: the longest a round's stage waits for the boxes' answers unless the run says
#: (``stage-timeout``; a box training 40 steps takes seconds, one paused while its images
#: arrive, minutes); a box that holds its answer back longer is left out as dropped, and the
#: others' round goes on
STAGE_TIMEOUT_S = 1800.0
#: the longest ``stage-timeout`` a run may set (Flower's messages live 12 hours)
MAX_STAGE_TIMEOUT_S = 6 * 3600.0
#: what a run writes into its ``out`` folder; a folder that holds either is refused
RUN_FILES = ("head.npy", "run.json")


class RoundNotAggregated(CliniboxError, RuntimeError):
    """A round ended without a sum of the boxes' heads (SecAgg+ halted: too few boxes
    answered); the run writes no head."""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _setting(context: Context, key: str, kind: type):
    try:
        return kind(context.run_config[key])
    except KeyError as exc:
        raise ValueError(f"the run's configuration has no {key!r}") from exc


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the configured rounds and write the head and its record."""
    started = _now()
    out = Path(_setting(context, "out", str))
    # anyone who reaches the SuperLink's port can start a run: its files stay in the runs
    # folder the SuperLink was started with
    runs = os.environ.get(RUNS_ENV, "")
    initial_path = Path(_setting(context, "initial-head", str))
    # (a run's folder is a child of the runs folder: never one inside another run's, where
    # a folder named head.npy would keep that run from writing its head)
    if not runs or not directly_in_runs(out, Path(runs)) or \
            not within_runs(initial_path, Path(runs)):
        raise ValueError(f"out_outside_runs_folder: 'out' must be a folder directly in the "
                         f"SuperLink's runs folder and 'initial-head' must lie in it "
                         f"({runs or RUNS_ENV + ' not set'})")
    # nor can it write over another run's head and record
    if any((out / name).exists() for name in RUN_FILES):
        raise ValueError(f"out_already_written: {out} already holds a run's head or record")
    boxes = _setting(context, "boxes", int)
    rounds = _setting(context, "rounds", int)
    clipping, noise = _setting(context, "clipping-norm", float), _setting(
        context, "noise-multiplier", float)
    delta = _setting(context, "target-delta", float)
    # each box's mask is shared with every box of the round; rebuilt from `threshold` of them
    shares, threshold = boxes, _setting(context, "secagg-threshold", int)
    problem = RunSettings(
        boxes, rounds, _setting(context, "local-steps", int),
        _setting(context, "learning-rate", float), _setting(context, "proximal", float),
        clipping, noise, delta, threshold).problem()
    if problem is not None:  # `clinibox central federated-run` refuses these before a run
        raise ValueError(f"the run's settings are refused: {problem}")
    stage_timeout = float(context.run_config.get("stage-timeout", STAGE_TIMEOUT_S))
    if not 1.0 <= stage_timeout <= MAX_STAGE_TIMEOUT_S:
        raise ValueError(f"stage_timeout_out_of_range: 'stage-timeout' must lie within 1 and "
                         f"{MAX_STAGE_TIMEOUT_S:g} seconds")
    boxes_wait = float(context.run_config.get("boxes-wait", BOXES_WAIT_S))
    if not 1.0 <= boxes_wait <= MAX_BOXES_WAIT_S:
        raise ValueError(f"boxes_wait_out_of_range: 'boxes-wait' must lie within 1 and "
                         f"{MAX_BOXES_WAIT_S:g} seconds")
    initial = np.load(initial_path, allow_pickle=False)
    if not np.all(np.abs(initial) <= HEAD_RANGE_SHARE * QUANTISATION_CLIP):
        raise ValueError(f"the initial head's numbers must lie within ±"
                         f"{HEAD_RANGE_SHARE * QUANTISATION_CLIP:g} (secure aggregation's range)")
    await_claim(out, context.run_id, CLAIM_WAIT_S)  # last: only the hospital's run goes on
    # exactly `boxes` of the connected boxes each round (SecAgg+ is set up for that many;
    # sampling every connected box would make each box's guard refuse the round). Flower
    # samples max(int(connected × fraction), minimum), and skips evaluation at fraction 0
    average = FedAvg(
        fraction_fit=0.0, fraction_evaluate=1e-9, min_fit_clients=boxes,
        min_evaluate_clients=boxes, min_available_clients=boxes,
        initial_parameters=ndarrays_to_parameters([initial.astype(np.float32)]))
    strategy = NoisyAverageOfAnswers(average, noise, clipping, boxes)
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds),
                           strategy=strategy, client_manager=BoundedBoxWait(boxes_wait))
    workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
        num_shares=shares, reconstruction_threshold=threshold,
        clipping_range=QUANTISATION_CLIP, quantization_range=QUANTISATION_STEPS,
        max_weight=1, timeout=stage_timeout))
    workflow(TimedGrid(grid, stage_timeout), legacy)
    missing = sorted(set(range(1, rounds + 1)) - set(strategy.aggregated))
    if missing:
        raise RoundNotAggregated(
            f"round(s) {missing} of {rounds} ended without the boxes' sum (secure aggregation "
            "halted: fewer boxes answered than it needs); no head was written")
    [head] = legacy.state.array_records["parameters"].to_numpy_ndarrays()
    if not holds_claim(out, context.run_id):
        raise ClaimRefused(f"out_claim_lost: {out / CLAIM_FILE} is no longer this run's; "
                         "no head was written")
    with (out / "head.npy").open("xb") as written:  # never over a file made meanwhile
        np.save(written, np.asarray(head, np.float64))
    FederatedRun(
        package=str(context.run_config.get("package", "")), rounds=rounds,
        boxes_per_round=strategy.summed_per_round,
        local_steps=_setting(context, "local-steps", int),
        proximal=_setting(context, "proximal", float),
        privacy=PrivacyBudget(clipping, noise, delta,
                              epsilon_spent(noise, strategy.summed_per_round, delta)),
        secure_aggregation=SecureAggregation("secagg+", shares, threshold),
        started=started, ended=_now(), flower_version=flwr.__version__,
        cases_per_round=strategy.cases_per_round, run_id=int(context.run_id),
        initial_head=[float(v) for v in np.asarray(initial, np.float64).reshape(-1)],
    ).write(out / "run.json", exclusive=True)
