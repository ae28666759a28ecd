"""A box's labelled-case file: written whole, read back checked, refused with its reason."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from firmware_app.learning.cases import CaseFileError, LabelledCases, read_cases, write_cases


def test_cases_round_trip(tmp_path):
    maps = np.random.default_rng(2).random((5, 4, 8, 8)).astype(np.float32)
    path = write_cases(tmp_path / "box" / "cases.npz", LabelledCases(maps, np.array([0, 1, 1,
                                                                                     0, 1])))
    back = read_cases(path, channels=4)
    np.testing.assert_array_equal(back.maps, maps)
    assert back.labels.tolist() == [0, 1, 1, 0, 1] and len(back) == 5
    assert not list(tmp_path.glob("box/*.partial"))


@pytest.mark.parametrize(("content", "reason"), [
    ({"maps": np.zeros((2, 4, 3, 3)), "labels": np.zeros(2), "name": np.array(["Zhang"])},
     "holds 'maps' and 'labels' only"),
    ({"maps": np.zeros((2, 3, 3, 3)), "labels": np.zeros(2)}, r"maps must be \[N, 4, h, w\]"),
    ({"maps": np.zeros((2, 4, 3, 3)), "labels": np.zeros(3)}, "2 cases but labels"),
    ({"maps": np.zeros((2, 4, 3, 3)), "labels": np.array([0, 2])}, "labels must be 0 or 1"),
    ({"maps": np.full((2, 4, 3, 3), np.nan), "labels": np.zeros(2)}, "not finite"),
])
def test_a_file_that_is_not_what_training_needs_is_refused(tmp_path, content, reason):
    path = tmp_path / "cases.npz"
    np.savez(path, **content)
    with pytest.raises(CaseFileError, match=reason):
        read_cases(path, channels=4)


def test_a_pickled_or_missing_file_is_refused_without_being_run(tmp_path):
    path = tmp_path / "cases.npz"
    np.savez(path, maps=np.array([object()], dtype=object), labels=np.zeros(1))
    with pytest.raises(CaseFileError, match="not a readable case file"):
        read_cases(path, channels=4)
    with pytest.raises(CaseFileError, match="not a readable case file"):
        read_cases(tmp_path / "absent.npz", channels=4)


def test_a_box_answers_an_evaluation_with_its_case_count_and_nothing_else(tmp_path):
    """Whatever head a ServerApp puts in an evaluation, the box says how many cases it holds
    and no loss: a loss in clear could be probed for its labels around secure aggregation."""
    from engine.learning.cam_head import TrainingSettings
    from firmware_app.learning.client_app import HeadClient

    labels = np.array([1, 0, 1, 1, 0], np.int8)
    path = write_cases(tmp_path / "cases.npz",
                       LabelledCases(np.random.default_rng(0).random((5, 3, 4, 4)), labels))
    client = HeadClient(path, TrainingSettings(steps=2), 4.0)
    for probe in (np.array([0, 0, 0, 5.0]), np.array([9.0, -9.0, 0, -3.0])):
        assert client.evaluate([probe.astype(np.float32)], {}) == (0.0, 5, {})


@pytest.mark.parametrize("change", [
    {"local-steps": 10_000_000}, {"local-steps": 0}, {"learning-rate": 50.0},
    {"learning-rate": float("nan")}, {"proximal": -1.0}, {"sharpness": 0.0},
    {"sharpness": 1e6}, {"local-steps": "many"}, {"local-steps": float("inf")},
    {"local-steps": 40.7},
])
def test_the_box_trains_only_within_the_bounds_whatever_the_hospital_asks(tmp_path, change):
    """A ServerApp changed at the hospital could ask a box for a million steps or a
    diverging rate: the box's ClientApp refuses, with a code, before it trains."""
    from flwr.common import Context, RecordDict

    from firmware_app.learning.client_app import TrainingFailed, client_fn

    run = {"local-steps": 40, "learning-rate": 0.02, "proximal": 0.1, "sharpness": 4.0}

    def context(settings: dict) -> Context:
        return Context(run_id=1, node_id=7, node_config={"cases": str(tmp_path / "c.npz")},
                       state=RecordDict(), run_config=settings)

    # client_fn lowers the thread it runs on (the box's training yields to its images): a
    # thread of its own, so the test process keeps its weight for the tests after this one
    with ThreadPoolExecutor(1) as thread:
        assert thread.submit(client_fn, context(run)).result() is not None
        with pytest.raises(TrainingFailed, match=r"^training_settings_out_of_range$"):
            thread.submit(client_fn, context({**run, **change})).result()
