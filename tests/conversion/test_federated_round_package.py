"""A federated run's head becomes a package through the converter's ordinary gates: the run's
head replaces the source's ``cam``, the package is checked on the validation set and the
floors and signed, and its manifest and report say which rounds, how many boxes and cases,
and the privacy budget (issue 60)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from clinibox_common.contracts.federated import FederatedRun, PrivacyBudget, SecureAggregation
from clinibox_common.contracts.run_claim import write_claim
from engine.model_package import load_package
from tests.conversion.conftest import clinibox, write_png_folder
from tests.conversion.tiny_models import as_input, shapes_dataset, train_quickly

#: a classifier whose logit is the log-sum-exp pool of a 1×1 convolution, as the demo's
MODULE = '''
import torch
from torch import nn


class PooledCam(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.cam = nn.Conv2d(16, 1, 1)

    def forward(self, image):
        flat = self.cam(self.features(image)).flatten(1)
        top = flat.max(dim=1, keepdim=True).values
        return top + torch.log(torch.exp(4.0 * (flat - top)).mean(dim=1, keepdim=True)) / 4.0


def pooled_cam():
    return PooledCam()
'''


def _run_folder(folder, start: np.ndarray, head: np.ndarray) -> None:
    FederatedRun(package="pooled-cam 1.0.0", rounds=2, boxes_per_round=[5, 5], local_steps=40,
                 proximal=0.1, privacy=PrivacyBudget(1.0, 1.0, 1e-3, 25.1),
                 secure_aggregation=SecureAggregation("secagg+", 5, 3),
                 started="2026-11-28T10:00:00+00:00", ended="2026-11-28T10:02:00+00:00",
                 flower_version="1.42.0", cases_per_round=[212, 214],
                 initial_head=[float(v) for v in start], run_id=41
                 ).write(folder / "run.json")
    np.save(folder / "head.npy", head)
    write_claim(folder, 41)  # as clinibox central federated-run claims it


def test_a_federated_runs_head_is_packaged_through_the_gates_and_said_in_the_card(
        tmp_path, signing_key):
    labels = write_png_folder(tmp_path / "data", 160, 48, 2, seed=5)
    (tmp_path / "pooled_cam.py").write_text(MODULE)
    spec = importlib.util.spec_from_file_location("pooled_cam", tmp_path / "pooled_cam.py")
    source = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(source)
    images, truth = shapes_dataset(400, 48, 2, seed=9)
    model = train_quickly(source.pooled_cam(), as_input(images, 1), truth, epochs=6, sigmoid=True)
    torch.save(model.state_dict(), tmp_path / "source.pt")
    start = np.concatenate([model.cam.weight.detach().double().reshape(-1).numpy(),
                            model.cam.bias.detach().double().numpy()])
    head = start + np.random.default_rng(1).normal(0.0, 0.02, start.size)
    (tmp_path / "run").mkdir()
    _run_folder(tmp_path / "run", start, head)
    args = ["convert", "--model", "pooled_cam:pooled_cam", "--weights", "source.pt",
            "--input-shape", "1,48,48", "--mean", "0.3", "--std", "0.2", "--data", "data",
            "--labels", str(labels), "--targets", "onnx", "--no-heatmap",
            "--name", "pooled-cam", "--version", "1.1.0", "--key", str(signing_key)]

    done = clinibox(*args, "--out", "package", "--federated-run", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    package = load_package(tmp_path / "package", [signing_key.with_suffix(".pub")])
    federated = package.manifest["provenance"]["federated"]
    assert federated["layer"] == "cam" and federated["rounds"] == 2
    assert federated["boxes_per_round"] == [5, 5]
    assert federated["cases_per_round"] == [212, 214]
    assert federated["privacy"]["epsilon"] == 25.1 and federated["run_id"] == 41
    assert "initial_head" not in federated
    # the packaged model holds the run's head where the source's cam was
    graph = onnx.load(str(tmp_path / "package" / "model.fp32.onnx")).graph
    weights = [numpy_helper.to_array(i) for i in graph.initializer
               if tuple(numpy_helper.to_array(i).shape) == (1, 16, 1, 1)]
    assert len(weights) == 1
    assert np.allclose(weights[0].reshape(-1), head[:-1], atol=1e-6)
    assert not np.allclose(weights[0].reshape(-1), start[:-1], atol=1e-3)
    # checked on the validation set like any package: the floors hold, the figures are its own
    assert package.manifest["provenance"].get("weakness") is None
    report = (tmp_path / "package" / "report.html").read_text(encoding="utf-8")
    assert "<h2>Federated fine-tuning</h2>" in report
    assert "ε = 25.10 at δ = 0.001" in report and "<td>212</td>" in report
    assert "(run 41 at the hospital's SuperLink)" in report

    # a run that did not start from this model's head is refused, and nothing is packaged
    other = tmp_path / "other-run"
    other.mkdir()
    _run_folder(other, start + 0.5, head)
    refused = clinibox(*args, "--out", "refused", "--federated-run", "other-run", cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-4000:]
    assert "holds the head the run started from" in refused.stderr
    assert not (tmp_path / "refused" / "manifest.json").exists()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["rounds"] == 2
