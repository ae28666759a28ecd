"""The hospital's side of a round: the average of the boxes that answered, refused when it
moved further than honest boxes can move it, and noised for the boxes in it; counts no box
can hold left out; no wait without an end; no run written over another."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.common import (
    Code,
    Context,
    EvaluateRes,
    FitRes,
    RecordDict,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import Grid
from flwr.server.strategy import FedAvg

from central.federated import server_app
from central.federated.boxes_wait import BoundedBoxWait, TooFewBoxes
from central.federated.noise import NoisyAverageOfAnswers, RoundRefused
from central.federated.server_app import RUN_FILES, STAGE_TIMEOUT_S
from central.federated.timed_grid import TimedGrid
from clinibox_common.contracts.federated import MAX_CASES, RUNS_ENV
from clinibox_common.contracts.run_claim import (
    CLAIM_FILE,
    ClaimRefused,
    await_claim,
    claimed_by,
    holds_claim,
    write_claim,
)

CLIP = 1.0


def _strategy(noise: float = 0.0, boxes: int = 3) -> NoisyAverageOfAnswers:
    strategy = NoisyAverageOfAnswers(FedAvg(), noise, CLIP, boxes)
    strategy.sent = [np.zeros(4)]
    return strategy


def _answers(vector, boxes: int = 1, weight: int = 1) -> list[tuple[None, FitRes]]:
    """What SecAgg+ hands over: one result per box summed, each holding their average."""
    parameters = ndarrays_to_parameters([np.asarray(vector, np.float32)])
    return [(None, FitRes(Status(Code.OK, ""), parameters, weight, {})) for _ in range(boxes)]


def test_the_average_of_clipped_changes_is_taken_and_counted():
    strategy = _strategy()
    parameters, _ = strategy.aggregate_fit(1, _answers([0.3, 0.4, 0.0, 0.0], boxes=3), [])
    np.testing.assert_allclose(parameters_to_ndarrays(parameters)[0], [0.3, 0.4, 0, 0],
                               atol=1e-7)
    assert strategy.aggregated == [1] and strategy.summed_per_round == [3]


def test_a_box_that_did_not_clip_is_caught_by_the_sum():
    strategy = _strategy()
    with pytest.raises(RoundRefused, match="round 2: the boxes' average moved further"):
        strategy.aggregate_fit(2, _answers([3.0, 0.0, 0.0, 0.0], boxes=3), [])
    with pytest.raises(RoundRefused, match="round 3"):
        strategy.aggregate_fit(3, _answers([np.nan, 0.0, 0.0, 0.0], boxes=3), [])
    assert strategy.aggregated == []


def test_a_box_claiming_more_weight_cannot_shrink_the_noise():
    strategy = _strategy(noise=1.0)
    answers = _answers([0.1, 0.0, 0.0, 0.0], boxes=2) + _answers([0.1, 0, 0, 0], weight=1000)
    with pytest.raises(RoundRefused, match="a box claimed a weight other than 1"):
        strategy.aggregate_fit(1, answers, [])


def test_boxes_that_dropped_out_leave_the_round_to_the_others():
    strategy = _strategy()
    parameters, _ = strategy.aggregate_fit(1, _answers([0.1, 0.0, 0.0, 0.0], boxes=2),
                                           [RuntimeError("box 3 switched off")])
    assert parameters is not None and strategy.summed_per_round == [2]


def test_the_noise_is_sized_for_the_boxes_summed():
    strategy = NoisyAverageOfAnswers(FedAvg(), 2.0, CLIP, 5)
    strategy.sent = [np.zeros(20_000)]
    parameters, _ = strategy.aggregate_fit(1, _answers(np.zeros(20_000), boxes=4), [])
    noise = parameters_to_ndarrays(parameters)[0]
    assert abs(float(np.std(noise)) - 2.0 * CLIP / 4) < 0.02
    assert strategy.summed_per_round == [4]


def _counts(*counts: int) -> list[tuple[None, EvaluateRes]]:
    return [(None, EvaluateRes(Status(Code.OK, ""), 0.0, n, {})) for n in counts]


def test_a_count_of_cases_no_box_holds_is_left_out_of_the_record():
    """A box gone bad cannot make the run's record, the command's summary or the model card
    say a billion cases were trained on."""
    strategy = _strategy()
    strategy.aggregate_evaluate(1, _counts(40, 38, 1_000_000_215), [])
    strategy.aggregate_evaluate(2, _counts(40, -85, MAX_CASES), [])
    assert strategy.cases_per_round == [78, 40 + MAX_CASES]


class _Grid(Grid):
    """Records the timeout each wait was given (the real SuperLink's grid is in the
    integration tests)."""

    def __init__(self) -> None:
        self.waits: list[float | None] = []

    def set_run(self, run):
        raise AssertionError

    @property
    def run(self):
        raise AssertionError

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        raise AssertionError

    def get_node_ids(self):
        return [11, 12, 13]

    def push_messages(self, messages):
        raise AssertionError

    def pull_messages(self, message_ids):
        raise AssertionError

    def send_and_receive(self, messages, *, timeout=None):
        self.waits.append(timeout)
        return []


def test_every_wait_for_the_boxes_ends():
    """Flower's default stages wait without a limit: one box that never answers would hold
    the round for the others; the ServerApp's grid gives each wait the stage timeout."""
    grid = _Grid()
    timed = TimedGrid(grid, STAGE_TIMEOUT_S)
    assert list(timed.send_and_receive([])) == [] and list(timed.get_node_ids()) == [11, 12, 13]
    timed.send_and_receive([], timeout=5.0)
    assert grid.waits == [STAGE_TIMEOUT_S, 5.0] and 0 < STAGE_TIMEOUT_S <= 3600


def test_a_run_never_writes_over_another_runs_head(tmp_path, monkeypatch):
    """Anyone who reaches the SuperLink's port can start clinibox's ServerApp: it refuses an
    ``out`` that already holds a run's head or record before a round starts."""
    monkeypatch.setenv(RUNS_ENV, str(tmp_path))
    out = tmp_path / "run-1"
    out.mkdir()
    np.save(tmp_path / "initial-head.npy", np.zeros(5))
    for name in RUN_FILES:
        (out / name).write_text("the real run's")
        context = SimpleNamespace(run_config={"out": str(out),
                                              "initial-head": str(tmp_path / "initial-head.npy")})
        with pytest.raises(ValueError, match=r"^out_already_written"):
            server_app.main(_Grid(), context)
        assert (out / name).read_text() == "the real run's"
        (out / name).unlink()


def _run_config(folder, out) -> dict:
    return {"out": str(out), "initial-head": str(folder / "initial-head.npy"), "boxes": 3,
            "rounds": 1, "local-steps": 40, "learning-rate": 0.02, "proximal": 0.1,
            "clipping-norm": 1.0, "noise-multiplier": 0.0, "target-delta": 1e-3,
            "secagg-threshold": 2}


def _context(run_id: int, run_config: dict) -> Context:
    return Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(),
                   run_config=run_config)


class _RoundsBegan(Exception):
    """Raised where the rounds would begin."""


def _rounds_begin(*args, **kwargs):
    raise _RoundsBegan


def test_only_the_run_its_folder_was_claimed_for_goes_on(tmp_path, monkeypatch):
    """Anyone who reaches the SuperLink's port can start a run into the hospital's folder:
    only the run whose number ``federated-run`` wrote into the folder's claim goes on; a
    stranger's run is refused before its first round and leaves the claim as it was."""
    monkeypatch.setenv(RUNS_ENV, str(tmp_path))
    np.save(tmp_path / "initial-head.npy", np.zeros(5))
    monkeypatch.setattr(server_app, "DefaultWorkflow", _rounds_begin)
    out = tmp_path / "run-1"
    out.mkdir()
    write_claim(out, 101)  # what federated-run does once Flower names the run
    assert (out / CLAIM_FILE).read_text() == "101\n" and holds_claim(out, 101)
    with pytest.raises(ValueError, match=r"^out_claimed_by_another_run"):
        server_app.main(_Grid(), _context(202, _run_config(tmp_path, out)))
    with pytest.raises(_RoundsBegan):
        server_app.main(_Grid(), _context(101, _run_config(tmp_path, out)))
    assert holds_claim(out, 101) and not holds_claim(out, 202)
    assert sorted(p.name for p in out.iterdir()) == [CLAIM_FILE]
    with pytest.raises(ClaimRefused, match=r"^out_already_claimed"):
        write_claim(out, 202)  # a claim is never replaced
    assert holds_claim(out, 101)


def test_a_run_into_a_folder_nobody_claimed_is_refused_and_makes_nothing(tmp_path,
                                                                         monkeypatch):
    """The ServerApp never claims or makes a folder: a stranger's run into a folder that
    ``federated-run`` has not claimed (yet: the default names are the time) waits for a claim
    naming it, is refused, and the hospital's later run can still have the folder."""
    monkeypatch.setenv(RUNS_ENV, str(tmp_path))
    np.save(tmp_path / "initial-head.npy", np.zeros(5))
    monkeypatch.setattr(server_app, "DefaultWorkflow", _rounds_begin)
    monkeypatch.setattr(server_app, "CLAIM_WAIT_S", 0.3)
    out = tmp_path / "run-20261129T120000Z"
    with pytest.raises(ValueError, match=r"^out_not_claimed"):
        server_app.main(_Grid(), _context(303, _run_config(tmp_path, out)))
    assert not out.exists()
    out.mkdir()
    (out / CLAIM_FILE).write_text("30")  # half written: not a claim yet
    with pytest.raises(ValueError, match=r"^out_not_claimed"):
        server_app.main(_Grid(), _context(303, _run_config(tmp_path, out)))
    (out / CLAIM_FILE).unlink()
    write_claim(out, 404)
    with pytest.raises(_RoundsBegan):
        server_app.main(_Grid(), _context(404, _run_config(tmp_path, out)))


def test_the_claim_is_waited_for(tmp_path):
    """The ServerApp may start before ``federated-run`` writes the claim: it waits for it."""
    out = tmp_path / "run-1"
    out.mkdir()
    timer = threading.Timer(0.3, write_claim, (out, 7))
    timer.start()
    try:
        await_claim(out, 7, wait_s=30, poll_s=0.05)
    finally:
        timer.cancel()
    assert claimed_by(out) == 7


def test_a_run_cannot_name_a_folder_inside_another_runs(tmp_path, monkeypatch):
    """A run's folder is a child of the runs folder: a stranger's run naming
    ``<a run's folder>/head.npy`` would make a folder there that keeps that run from writing
    its head. It is refused, and nothing is made."""
    monkeypatch.setenv(RUNS_ENV, str(tmp_path))
    np.save(tmp_path / "initial-head.npy", np.zeros(5))
    monkeypatch.setattr(server_app, "DefaultWorkflow", _rounds_begin)
    real = tmp_path / "run-1"
    real.mkdir()
    for inside in (real / "head.npy", real / "run.json", real / "deeper" / "still"):
        with pytest.raises(ValueError, match=r"^out_outside_runs_folder"):
            server_app.main(_Grid(), _context(303, _run_config(tmp_path, inside)))
    assert list(real.iterdir()) == []


def test_a_refused_run_touches_no_folder(tmp_path, monkeypatch):
    """A run refused for its settings neither makes nor changes a folder."""
    monkeypatch.setenv(RUNS_ENV, str(tmp_path))
    np.save(tmp_path / "initial-head.npy", np.zeros(5))
    monkeypatch.setattr(server_app, "DefaultWorkflow", _rounds_begin)
    out = tmp_path / "run-1"
    for wrong in ({"stage-timeout": 0}, {"boxes": 2}, {"boxes-wait": 0},
                  {"boxes-wait": 90000}):
        with pytest.raises(ValueError):
            server_app.main(_Grid(), _context(404, {**_run_config(tmp_path, out), **wrong}))
        assert not out.exists()
    np.save(tmp_path / "initial-head.npy", np.full(5, 1000.0))  # beyond SecAgg+'s range
    with pytest.raises(ValueError, match="initial head"):
        server_app.main(_Grid(), _context(404, _run_config(tmp_path, out)))
    assert not out.exists()


def test_a_round_waits_for_its_boxes_as_long_as_the_run_says_then_ends_saying_so():
    """Flower waits up to 24 hours for a round's boxes, saying nothing; the run's wait ends
    after ``boxes-wait`` with the counts, and returns at once when the boxes are there."""
    waiting = BoundedBoxWait(0.2)
    started = time.monotonic()
    with pytest.raises(TooFewBoxes, match=r"^too_few_boxes_connected: 0 of the 3 boxes"):
        waiting.sample(3)
    assert 0.2 <= time.monotonic() - started < 5
    for cid in ("a", "b", "c"):
        waiting.register(SimpleNamespace(cid=cid))
    assert waiting.wait_for(3) is True and len(waiting.sample(3)) == 3


def test_only_a_whole_claim_names_a_run(tmp_path):
    """A claim is a run's number (up to Flower's 20 digits) and a new line; anything else
    names no run and raises nothing (a half-written file, other digits, a huge number)."""
    for text in ("12\n", "18446744073709551615\n"):
        (tmp_path / CLAIM_FILE).write_text(text)
        assert claimed_by(tmp_path) == int(text)
    for text in ("12", "²\n", "1" * 5000 + "\n", "-3\n", " 12\n", "12\n13\n", ""):
        (tmp_path / CLAIM_FILE).write_text(text)
        assert claimed_by(tmp_path) is None, text[:20]


def test_a_box_gone_after_training_leaves_the_rounds_head_and_counts_no_cases():
    """A box that leaves after the round's training (its learning hours ended) must not
    hold the run for ``boxes-wait`` and then throw the finished head away: the count of
    cases is skipped at once, 0 in the record."""
    strategy = _strategy(boxes=3)
    waiting = BoundedBoxWait(3600.0)
    for cid in ("a", "b"):
        waiting.register(SimpleNamespace(cid=cid))
    started = time.monotonic()
    assert strategy.configure_evaluate(2, ndarrays_to_parameters([np.zeros(4)]), waiting) == []
    assert time.monotonic() - started < 5 and strategy.cases_per_round == [0]
