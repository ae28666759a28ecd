"""`train_demo --recover-checkpoint`: the first stage read back from a package's FP32 graph."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from clinibox_common.bundled import REPO_ROOT
from clinibox_common.contracts.manifest import sha256_file
from converters.prune import load_module
from demo.model import lesion_net_from_onnx
from demo.train import STUDENT, recover_checkpoint

PACKAGE = REPO_ROOT / "models" / "clinibox-demo-lesion" / "1.0.0"


def test_the_bundled_first_stage_comes_back_as_the_module_its_graph_was_exported_from(tmp_path):
    checkpoint = tmp_path / "first-stage.pt"
    manifest = json.loads((PACKAGE / "manifest.json").read_text(encoding="utf-8"))
    record = recover_checkpoint(PACKAGE, checkpoint, manifest["golden_cases"])
    graph = PACKAGE / "model.fp32.onnx"
    assert record["recovered_from"] == {"artifact": "model.fp32.onnx",
                                        "sha256": sha256_file(graph),
                                        "golden_inputs_checked": len(manifest["golden_cases"])}
    module = load_module(checkpoint)
    # pruned widths come back from the weights' shapes, not from the architecture's
    shipped = manifest["provenance"]["steps"]["detection"]["torch_test_metrics"]
    assert sum(p.numel() for p in module.parameters()) == shipped["shipped (pruned)"]["parameters"]
    assert module.body[1][0].out_channels < STUDENT["widths"][2]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())
    # an input that is no golden case: every output as ONNX Runtime gives it
    x = np.random.default_rng(7).normal(0.0, 1.0, (1, 1, 256, 256)).astype(np.float32)
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: x})
    with torch.no_grad():
        got = module(torch.from_numpy(x))
    for output, value in zip(session.get_outputs(), expected, strict=True):
        np.testing.assert_allclose(got[output.name].numpy(), value, atol=1e-4, rtol=1e-4)


def test_a_graph_without_the_networks_weights_is_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "not-a-lesion-net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "model.fp32.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ValueError, match=r"holds no weight for stem\.0\.0"):
        lesion_net_from_onnx(path, **STUDENT)
