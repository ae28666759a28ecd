"""A network built by ``MODULE:FACTORY`` without weights starts the same on every run.

A student handed to ``--model`` without ``--weights`` is distilled from its factory's
initial weights; with those left to chance, the same ``clinibox convert`` command gave a
different package each run (and a fidelity-gate check in the suite passed or failed by
luck).
"""

from __future__ import annotations

import sys

import torch

from converters.source import load_source

MODULE = """
from torch import nn


def student(width=4):
    return nn.Sequential(nn.Conv2d(1, width, 3), nn.Flatten(), nn.LazyLinear(2))


def teacher_sized():
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
"""


def _weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [value for value in module.state_dict().values()
            if not isinstance(value, torch.nn.parameter.UninitializedParameter)]


def test_a_factory_without_weights_builds_the_same_network_every_run(tmp_path, monkeypatch):
    (tmp_path / "clinic_students.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_source adds the folder to it
    monkeypatch.delitem(sys.modules, "clinic_students", raising=False)

    torch.manual_seed(7)
    first = load_source("clinic_students:teacher_sized").module
    torch.manual_seed(8)  # whatever the caller's random state
    second = load_source("clinic_students:teacher_sized").module
    assert len(_weights(first)) == 4
    assert all(torch.equal(a, b) for a, b in zip(_weights(first), _weights(second), strict=True))
    widths = load_source("clinic_students:student", factory_kwargs={"width": 6}).module
    assert widths[0].weight.shape == (6, 1, 3, 3)


def test_building_it_leaves_the_caller_s_random_stream_alone(tmp_path, monkeypatch):
    (tmp_path / "clinic_students.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "clinic_students", raising=False)

    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    load_source("clinic_students:teacher_sized")
    assert torch.equal(torch.rand(4), expected)
