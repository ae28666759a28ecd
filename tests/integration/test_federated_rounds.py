"""Real Flower rounds over loopback TLS: the hospital's SuperLink with the ServerApp, three
boxes' SuperNodes with the ClientApp and its guard (decision 0056).

The hospital ends with exactly the average of the boxes' clipped heads (SecAgg+ sums them,
the noise is off here), and holds none of them in clear, nor the canary written into each
box's case path. A box whose case file is damaged trains nothing, and the others' round
still ends with their sum.
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np
import pytest

from bench.federation import REPO, federation
from clinibox_common.contracts.federated import FederatedRun
from clinibox_common.contracts.run_claim import CLAIM_FILE, claimed_by, write_claim
from engine.learning.cam_head import CamHead, TrainingSettings, fine_tune
from firmware_app.learning.cases import LabelledCases, write_cases

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CANARY = "CANARY-BOX-91c2"
#: a Flower App whose ServerApp a hospital changed (tests/federated_hostile/)
HOSTILE_APP = REPO / "tests" / "federated_hostile" / "app"
#: a Flower App whose bundle carries a ClientApp of its own
CLIENT_CODE_APP = REPO / "tests" / "federated_hostile" / "client_code"
#: a Flower App whose bundle carries a ServerApp of its own (a stranger at the SuperLink's port)
SERVER_CODE_APP = REPO / "tests" / "federated_hostile" / "server_code"
CLIP = 0.8
SETTINGS = TrainingSettings(steps=30, learning_rate=0.05, proximal=0.01)


def _box_cases(seed: int) -> LabelledCases:
    rng = np.random.default_rng(seed)
    labels = (np.arange(16) % 2).astype(np.int8)
    maps = rng.random((16, 24, 8, 8)).astype(np.float32)
    maps[labels == 1, seed % 24, 2:4, 2:4] += 1.5 + 0.2 * seed  # each box's lesions differ
    return LabelledCases(maps, labels)


def _expected_round(head: CamHead, boxes: list[LabelledCases]) -> CamHead:
    """FedAvg of the boxes' heads, each change clipped to CLIP, as float32 on the wire."""
    start = head.as_vector().astype(np.float32).astype(np.float64)
    g = head.with_vector(start)
    sent = []
    for cases in boxes:
        trained = fine_tune(g, cases.maps, cases.labels, SETTINGS, anchor=g).as_vector()
        trained = trained.astype(np.float32).astype(np.float64)
        change = trained - start
        change *= min(1.0, CLIP / float(np.linalg.norm(change)))
        sent.append(start + change)
    return head.with_vector(np.mean(sent, axis=0))


def _config(folder, boxes: int, rounds: int) -> dict:
    return {"out": str(folder / "run"), "initial-head": str(folder / "initial.npy"),
            "package": "clinibox-demo-lesion 1.0.0", "boxes": boxes, "rounds": rounds,
            "local-steps": SETTINGS.steps, "learning-rate": SETTINGS.learning_rate,
            "proximal": SETTINGS.proximal, "sharpness": 4.0, "clipping-norm": CLIP,
            "noise-multiplier": 0.0, "secagg-threshold": 2}


def test_the_hospital_gets_the_boxes_average_and_never_one_boxs_head(tmp_path):
    head = CamHead(np.random.default_rng(0).normal(0, 0.3, 24), -2.0)
    np.save(tmp_path / "initial.npy", head.as_vector())
    boxes = [_box_cases(seed) for seed in (1, 2, 3)]
    files = [write_cases(tmp_path / f"{CANARY}-{i}" / "cases.npz", c) for i, c in
             enumerate(boxes)]
    with federation(tmp_path / "flower", files) as fed:
        done = fed.run(_config(tmp_path, 3, 2), timeout=600)
        assert (tmp_path / "run" / "run.json").exists(), done.stdout[-3000:] + done.stderr
        record = FederatedRun.read(tmp_path / "run" / "run.json")
        aggregated = np.load(tmp_path / "run" / "head.npy")
        traffic = [(t["up"], t["down"]) for t in fed.traffic()]
    assert record.rounds == 2 and record.boxes_per_round == [3, 3]
    assert record.privacy.epsilon is None and record.secure_aggregation.shares == 3
    # the boxes' cases are counted (each box says how many, never which), and each round's
    # head is evaluated on them; the record names the head the run started from
    assert record.cases_per_round == [48, 48]
    assert record.initial_head == pytest.approx(list(head.as_vector()))
    expected = _expected_round(_expected_round(head, boxes), boxes)
    np.testing.assert_allclose(aggregated, expected.as_vector(), atol=2e-3)
    assert np.abs(aggregated - head.as_vector()).max() > 0.05  # it moved
    # what the SuperLink keeps and logs: no box's round-1 head in clear, and no canary
    held = b"".join(p.read_bytes() for p in (tmp_path / "flower").iterdir()
                    if p.name.startswith("superlink") and p.is_file())
    g = head.with_vector(head.as_vector().astype(np.float32))
    for cases in boxes:
        clear = fine_tune(g, cases.maps, cases.labels, SETTINGS, anchor=g).as_vector()
        assert clear.astype(np.float32)[:6].tobytes() not in held
    assert CANARY.encode() not in held
    assert all(sent > 1000 and received > 1000 for sent, received in traffic)


def test_a_box_with_a_damaged_case_file_drops_out_and_the_others_round_ends(tmp_path):
    head = CamHead(np.random.default_rng(0).normal(0, 0.3, 24), -2.0)
    np.save(tmp_path / "initial.npy", head.as_vector())
    boxes = [_box_cases(seed) for seed in (1, 2)]
    files = [write_cases(tmp_path / f"box-{i}" / "cases.npz", c) for i, c in enumerate(boxes)]
    damaged = tmp_path / f"{CANARY}-box-2" / "cases.npz"  # its error must not name it
    damaged.parent.mkdir()
    damaged.write_bytes(b"half a file")
    with federation(tmp_path / "flower", [*files, damaged]) as fed:
        done = fed.run(_config(tmp_path, 3, 1), timeout=600)
    assert (tmp_path / "run" / "run.json").exists(), done.stdout[-3000:] + done.stderr
    record = FederatedRun.read(tmp_path / "run" / "run.json")
    assert record.boxes_per_round == [2] and record.cases_per_round == [32]
    np.testing.assert_allclose(np.load(tmp_path / "run" / "head.npy"),
                               _expected_round(head, boxes).as_vector(), atol=2e-3)
    assert "1 dropped out" in done.stdout
    held = b"".join(p.read_bytes() for p in (tmp_path / "flower").iterdir()
                    if p.name.startswith("superlink") and p.is_file())
    assert CANARY.encode() not in held and CANARY not in done.stdout + done.stderr
    assert b"case_file_unreadable" in held or "case_file_unreadable" in done.stdout


def _release(pipe) -> None:
    """Let a reader blocked on ``pipe`` see its end (nothing is written)."""
    with contextlib.suppress(OSError):  # no reader left
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))


def test_a_box_that_never_answers_is_left_out_and_the_others_round_ends(tmp_path):
    """A box that stays connected but never answers (its case file a pipe no one writes: its
    ClientApp waits for ever) is left out after the run's stage timeout, not after Flower's
    12 hours, and the other three boxes' round ends with their sum."""
    head = CamHead(np.random.default_rng(0).normal(0, 0.3, 24), -2.0)
    np.save(tmp_path / "initial.npy", head.as_vector())
    boxes = [_box_cases(seed) for seed in (1, 2, 3)]
    files = [write_cases(tmp_path / f"box-{i}" / "cases.npz", c) for i, c in enumerate(boxes)]
    silent = tmp_path / "box-3" / "cases.npz"
    silent.parent.mkdir()
    os.mkfifo(silent)
    try:
        with federation(tmp_path / "flower", [*files, silent]) as fed:
            started = time.monotonic()
            done = fed.run({**_config(tmp_path, 4, 1), "secagg-threshold": 3,
                            "stage-timeout": 15}, timeout=600)
            took = time.monotonic() - started
    finally:
        _release(silent)
    assert (tmp_path / "run" / "run.json").exists(), done.stdout[-3000:] + done.stderr
    record = FederatedRun.read(tmp_path / "run" / "run.json")
    assert record.boxes_per_round == [3] and record.cases_per_round == [48]
    np.testing.assert_allclose(np.load(tmp_path / "run" / "head.npy"),
                               _expected_round(head, boxes).as_vector(), atol=2e-3)
    assert 15 <= took < 400, took  # a stage waited 15 s for the silent box, not 12 hours


def test_the_boxes_refuse_a_hospital_that_weakened_secure_aggregation(tmp_path):
    """A changed ServerApp lets 2 of 4 boxes rebuild a mask: every box refuses it at the
    setup stage, with a code, and no round is aggregated."""
    head = CamHead(np.random.default_rng(0).normal(0, 0.3, 24), -2.0)
    np.save(tmp_path / "initial.npy", head.as_vector())
    files = [write_cases(tmp_path / f"box-{i}" / "cases.npz", _box_cases(seed)) for i, seed in
             enumerate((1, 2, 3, 4))]
    with federation(tmp_path / "flower", files, hospital_checks=False) as fed:
        done = fed.run({"initial-head": str(tmp_path / "initial.npy"), "boxes": 4},
                       timeout=600, app=HOSTILE_APP)
        logs = "".join(p.read_text(errors="replace")
                       for p in (tmp_path / "flower").glob("supernode-*.log"))
    told = done.stdout + done.stderr + logs
    assert "secagg_threshold_too_low" in told, told[-3000:]
    assert "aggregate_fit: received" not in done.stdout


def test_the_boxes_never_run_code_a_bundle_carries(tmp_path):
    """A bundle that carries a ClientApp of its own (code to run on the boxes) is refused by
    every box before Flower installs it, with a code: the code never runs, no round ends."""
    head = CamHead(np.random.default_rng(0).normal(0, 0.3, 24), -2.0)
    np.save(tmp_path / "initial.npy", head.as_vector())
    files = [write_cases(tmp_path / f"box-{i}" / "cases.npz", _box_cases(seed)) for i, seed in
             enumerate((1, 2, 3))]
    with federation(tmp_path / "flower", files, hospital_checks=False) as fed:
        done = fed.run({"initial-head": str(tmp_path / "initial.npy"), "boxes": 3,
                        "out": str(tmp_path / "run"), "rounds": 1, "secagg-threshold": 2},
                       timeout=600, app=CLIENT_CODE_APP)
        logs = "".join(p.read_text(errors="replace")
                       for p in (tmp_path / "flower").glob("supernode-*.log"))
    told = done.stdout + done.stderr + logs
    assert not list((tmp_path / "flower").rglob("hostile-code-ran"))
    assert "bundle_carries_files" in told, told[-3000:]
    assert not (tmp_path / "run" / "head.npy").exists()


def test_the_hospital_never_runs_code_a_strangers_bundle_carries(tmp_path):
    """Anyone who reaches the SuperLink's port can start a run (Flower's Control API has no
    login). A bundle that carries a ServerApp of its own is refused by the SuperLink clinibox
    starts, with a code, before Flower installs it: its code never runs at the hospital. And
    clinibox's own ServerApp writes nowhere but the SuperLink's runs folder, and nothing into
    a folder claimed for another run."""
    files = [write_cases(tmp_path / f"box-{i}" / "cases.npz", _box_cases(seed)) for i, seed in
             enumerate((1, 2, 3))]
    head = CamHead(np.random.default_rng(0).normal(0, 0.3, 24), -2.0)
    np.save(tmp_path / "initial.npy", head.as_vector())
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    with federation(tmp_path / "flower", files) as fed:
        done = fed.run({"boxes": 3, "rounds": 1, "secagg-threshold": 2}, timeout=300,
                       app=SERVER_CODE_APP)
        told = done.stdout + done.stderr + fed.link_log.read_text(errors="replace")
        # clinibox's own ServerApp, asked to write outside the SuperLink's runs folder
        away = fed.run({"initial-head": str(tmp_path / "initial.npy"), "boxes": 3,
                        "rounds": 1, "secagg-threshold": 2, "out": str(elsewhere)},
                       timeout=300, claim=False)
        # and into the hospital's run folder, claimed for the hospital's run by its number
        hospitals = tmp_path / "hospitals-run"
        hospitals.mkdir()
        write_claim(hospitals, 987654)
        taken = fed.run({"initial-head": str(tmp_path / "initial.npy"), "boxes": 3,
                         "rounds": 1, "secagg-threshold": 2, "out": str(hospitals)},
                        timeout=300, claim=False)
    assert "out_claimed_by_another_run" in taken.stdout + taken.stderr, taken.stdout[-3000:]
    assert sorted(p.name for p in hospitals.iterdir()) == [CLAIM_FILE]
    assert claimed_by(hospitals) == 987654
    assert not list((tmp_path / "flower").rglob("hostile-server-code-ran"))
    assert "bundle_carries_files" in told, told[-3000:]
    assert "out_outside_runs_folder" in away.stdout + away.stderr, away.stdout[-3000:]
    assert not elsewhere.exists()
