"""The converter's federated step refuses, before any work, a run it cannot put into the
source model: no run folder, a run of another model, several candidate layers, a head that is
not finite, or a run combined with distillation or pruning."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from clinibox_common.contracts.federated import FederatedRun, PrivacyBudget, SecureAggregation
from clinibox_common.contracts.run_claim import CLAIM_FILE, write_claim
from converters.config import ConvertConfig, ConvertConfigError, preflight
from converters.federated_round import RunRefused, apply_round, provenance, read_run


def _record(start: list[float], run_id: int = 77) -> FederatedRun:
    return FederatedRun("m 1.0.0", 1, [3], 40, 0.1, PrivacyBudget(1.0, 0.0, 1e-3, None),
                        SecureAggregation("secagg+", 3, 2), "a", "b", "1.42.0",
                        cases_per_round=[30], initial_head=start, run_id=run_id)


class TwoCams(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cam = nn.Conv2d(4, 1, 1)
        self.other = nn.Conv2d(4, 1, 1)


def _start(layer: nn.Conv2d) -> list[float]:
    return [float(v) for v in layer.weight.detach().reshape(-1)] + [float(layer.bias[0])]


def test_the_head_goes_into_the_one_layer_that_holds_the_starting_head():
    model = TwoCams()
    record = _record(_start(model.cam))
    head = np.arange(5, dtype=np.float64) / 10
    assert apply_round(model, record, head) == "cam"
    assert _start(model.cam) == pytest.approx(list(head))
    assert provenance(record, "cam")["layer"] == "cam"
    assert "initial_head" not in provenance(record, "cam")


def test_no_layer_or_several_layers_holding_the_starting_head_are_refused():
    model = TwoCams()
    with pytest.raises(RunRefused, match="no 1×1 convolution"):
        apply_round(model, _record([9.0] * 5), np.zeros(5))
    model.other.load_state_dict(model.cam.state_dict())
    with pytest.raises(RunRefused, match="several convolutions hold"):
        apply_round(model, _record(_start(model.cam)), np.zeros(5))


def test_a_folder_that_is_not_a_finished_run_is_refused(tmp_path):
    with pytest.raises(RunRefused, match="not a federated run's folder"):
        read_run(tmp_path)
    _record([0.1] * 5).write(tmp_path / "run.json")
    np.save(tmp_path / "head.npy", np.array([0.1, np.nan, 0.1, 0.1, 0.1]))
    with pytest.raises(RunRefused, match="not finite"):
        read_run(tmp_path)
    np.save(tmp_path / "head.npy", np.zeros(7))
    with pytest.raises(RunRefused, match="no starting head of the head's size"):
        read_run(tmp_path)
    (tmp_path / "run.json").write_text('{"schema": "something-else"}')
    with pytest.raises(RunRefused, match="cannot be read"):
        read_run(tmp_path)


def test_a_head_is_packaged_only_where_the_claim_names_the_records_run(tmp_path):
    """A stranger's run can write only into a folder claimed for it: the converter takes a
    head where the folder's claim names the run its record names, and refuses one without a
    claim, with another run's, or with a record from before runs claimed their folders."""
    np.save(tmp_path / "head.npy", np.zeros(5))
    _record([0.1] * 5, run_id=77).write(tmp_path / "run.json")
    with pytest.raises(RunRefused, match="claim"):
        read_run(tmp_path)  # no claim
    write_claim(tmp_path, 78)
    with pytest.raises(RunRefused, match="claim"):
        read_run(tmp_path)  # another run's
    (tmp_path / CLAIM_FILE).unlink()
    write_claim(tmp_path, 77)
    record, head = read_run(tmp_path)
    assert record.run_id == 77 and head.tolist() == [0.0] * 5
    _record([0.1] * 5, run_id=0).write(tmp_path / "run.json")
    with pytest.raises(RunRefused, match="claim"):
        read_run(tmp_path)  # a record without the run's number


def test_a_run_with_distillation_or_pruning_is_refused_before_any_work(tmp_path):
    config = ConvertConfig(out=tmp_path / "out", model="m:f", input_shape=(1, 8, 8),
                           data="phantoms", federated_run=tmp_path, prune=0.5)
    with pytest.raises(ConvertConfigError, match="cannot be combined with distillation"):
        preflight(config, "prune")
    config.federated_run = tmp_path / "missing"
    config.prune = None
    with pytest.raises(ConvertConfigError, match="is not a folder"):
        preflight(config, "export")
