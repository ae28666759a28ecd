"""Every artifact kind, written by converters/ and run through the box's own backends.

Two small trained models (a 1-channel sigmoid classifier and a 3-class softmax
ResNet) are exported once per module; FP32/FP16 artifacts must match torch
closely, INT8 artifacts must take the same decision as torch on >= 95 % of a
held-out set. No mocks: real onnxruntime, OpenVINO, NNCF, litert-torch, LiteRT.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from converters import export, quantize
from converters.artifacts import ArtifactRecord, open_artifact, run_batch, zero_points
from converters.benchmark import benchmark
from converters.formats import KINDS, PROFILES, kinds_for, parse_targets, profiles_of
from converters.spec import ModelSpec
from engine.runtime.base import ArtifactLoadError
from tests.conversion.tiny_models import (
    as_input,
    shapes_dataset,
    small_resnet,
    tiny_classifier,
    train_quickly,
)

SIZE = 64


@dataclass
class Built:
    """A trained model, its spec, data and the artifacts written for it."""

    model: torch.nn.Module
    spec: ModelSpec
    root: Path
    calibration: np.ndarray
    held_out: np.ndarray
    records: dict[str, ArtifactRecord] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def build(model, spec, root: Path, x, kinds) -> Built:
    """Export ``kinds`` (in kinds_for order) the way the pipeline does."""
    built = Built(model, spec, root, x[:96], x[-160:])
    for kind in kinds:
        start, target = time.monotonic(), root / kind.path
        if kind.key == "onnx-fp32":
            built.spec = spec = export.export_onnx(model, spec, target)
        elif kind.key == "onnx-fp16":
            export.export_onnx_fp16(root / KINDS["onnx-fp32"].path, target)
        elif kind.key == "openvino-fp32":
            export.export_openvino(root / KINDS["onnx-fp32"].path, target, spec)
        elif kind.key == "tflite-fp32":
            export.export_tflite(model, spec, target)
        elif kind.key in ("onnx-int8", "onnx-int8-trt"):
            notes = quantize.quantize_onnx(root / KINDS["onnx-fp32"].path, target,
                                           built.calibration, spec,
                                           symmetric=kind.key == "onnx-int8-trt")
        elif kind.key == "openvino-int8":
            notes = quantize.quantize_openvino(root / KINDS["openvino-fp32"].path, target,
                                               built.calibration, spec)
        else:
            notes = quantize.quantize_tflite(model, spec, built.calibration, target)
        built.seconds[kind.key] = time.monotonic() - start
        built.records[kind.key] = ArtifactRecord.for_kind(
            kind, notes=notes if kind.quantized else {"method": "export"})
    return built


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Torch on one thread: with two OpenMP threads on this 2-core machine, any other busy
    process makes training ~25x slower (measured: 75 s instead of 3 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Built:
    images, labels = shapes_dataset(480, SIZE, classes=2, seed=0)
    x = as_input(images, 1)
    torch.manual_seed(0)
    model = train_quickly(tiny_classifier(1, 1), x[:320], labels[:320], epochs=8, sigmoid=True)
    spec = ModelSpec((1, 1, SIZE, SIZE), ("logit",), "logit")
    return build(model, spec, tmp_path_factory.mktemp("tiny"), x, list(KINDS.values()))


@pytest.fixture(scope="module")
def resnet(tmp_path_factory) -> Built:
    images, labels = shapes_dataset(480, SIZE, classes=3, seed=1)
    x = as_input(images, 3)
    torch.manual_seed(0)
    model = train_quickly(small_resnet(3, 3), x[:320], labels[:320], epochs=5)
    spec = ModelSpec((1, 3, SIZE, SIZE), ("logits",), "logits", "softmax",
                     ("blank", "disc", "bar"), "blank")
    kinds = [KINDS[k] for k in ("onnx-fp32", "openvino-fp32", "onnx-int8", "openvino-int8",
                                "tflite-int8")]
    return build(model, spec, tmp_path_factory.mktemp("resnet"), x, kinds)


def decisions(spec: ModelSpec, scores: np.ndarray) -> np.ndarray:
    """The class each image is given (binary: finding or not)."""
    probs = spec.probabilities(scores)
    return probs.argmax(axis=1) if spec.activation == "softmax" else probs[:, 0] > 0.5


def run_kind(built: Built, key: str) -> tuple[np.ndarray, np.ndarray]:
    backend = open_artifact(built.root, built.records[key], built.spec)
    try:
        got = run_batch(backend, built.spec, built.held_out)[built.spec.score_output]
    finally:
        backend.close()
    want = export.torch_outputs(built.model, built.spec, built.held_out)[built.spec.score_output]
    assert got.shape == want.shape
    return got, want


# -- the table -----------------------------------------------------------------------------


def test_targets_and_kinds():
    assert parse_targets("onnx, x86-cpu,onnx") == ["onnx", "x86-cpu"]
    with pytest.raises(ValueError, match="jetson"):
        parse_targets("onnx,raspberry")
    keys = [k.key for k in kinds_for(["jetson", "arm-cpu", "intel-npu", "x86-cpu"])]
    assert keys[0] == "onnx-fp32" and len(keys) == len(set(keys))
    first_int8 = next(i for i, k in enumerate(keys) if KINDS[k].quantized)
    assert all(not KINDS[k].quantized for k in keys[:first_int8])
    assert all(KINDS[k].quantized for k in keys[first_int8:])
    assert [k.key for k in kinds_for("arm-cpu")] == ["onnx-fp32", "tflite-fp32", "tflite-int8"]
    assert profiles_of("openvino-int8", ["intel-npu", "x86-cpu", "onnx"]) == ["intel-npu",
                                                                               "x86-cpu"]
    assert PROFILES["jetson"].device == "GPU" and PROFILES["intel-npu"].device == "NPU"
    assert {k for p in PROFILES.values() for k in p.kinds} | {"onnx-fp32"} == set(KINDS)


def test_record_is_json_round_trip(tiny):
    record = tiny.records["openvino-int8"]
    again = ArtifactRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record
    assert again.files == ["openvino/model.int8.xml", "openvino/model.int8.bin"]
    assert again.runtime_config == {"INFERENCE_PRECISION_HINT": "f32"}
    assert again.notes["calibration_images"] == 96


# -- parity through the box's backends ----------------------------------------------------


@pytest.mark.parametrize("key", ["onnx-fp32", "openvino-fp32", "tflite-fp32", "onnx-fp16"])
def test_float_artifacts_match_torch(tiny, key):
    got, want = run_kind(tiny, key)
    scale = max(1.0, float(np.abs(want).max()))
    tolerance = 1e-2 if key == "onnx-fp16" else 1e-4
    assert np.abs(got - want).max() <= tolerance * scale, tiny.seconds


@pytest.mark.parametrize("key", ["onnx-int8", "onnx-int8-trt", "openvino-int8", "tflite-int8"])
def test_int8_artifacts_keep_decisions_tiny(tiny, key):
    got, want = run_kind(tiny, key)
    agree = np.mean(decisions(tiny.spec, got) == decisions(tiny.spec, want))
    assert agree >= 0.95, f"{key}: decisions agree on {agree:.1%}"


@pytest.mark.parametrize("key", ["onnx-fp32", "onnx-int8", "openvino-int8", "tflite-int8"])
def test_resnet_round_trip(resnet, key):
    got, want = run_kind(resnet, key)
    if key == "onnx-fp32":
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    agree = np.mean(decisions(resnet.spec, got) == decisions(resnet.spec, want))
    assert agree >= 0.95, f"{key}: decisions agree on {agree:.1%}"


def test_export_reports_output_shapes(tiny, resnet):
    assert tiny.spec.output_shapes == {"logit": (1, 1)}
    assert resnet.spec.output_shapes == {"logits": (1, 3)}
    assert not list(tiny.root.glob("*.data")), "ONNX weights must live inside the file"


def test_tensorrt_int8_has_only_zero_zero_points(tiny):
    symmetric = zero_points(tiny.root / KINDS["onnx-int8-trt"].path)
    assert symmetric and not any(symmetric.values())
    asymmetric = zero_points(tiny.root / KINDS["onnx-int8"].path)
    assert any(asymmetric.values()), "the plain INT8 model should use asymmetric activations"


def test_openvino_runs_in_f32_on_the_cpu(tiny):
    backend = open_artifact(tiny.root, tiny.records["openvino-int8"], tiny.spec)
    hint = backend.compiled_model.get_property("INFERENCE_PRECISION_HINT")
    assert hint.get_type_name() == "f32"


def test_tflite_int8_is_full_integer(tiny):
    backend = open_artifact(tiny.root, tiny.records["tflite-int8"], tiny.spec)
    assert backend.quantized_io
    ins, outs = backend._inputs.values(), backend._outputs.values()
    assert {t.dtype for t in [*ins, *outs]} == {np.int8}


def test_benchmark_reports_speed_and_size(tiny):
    result = benchmark(tiny.root, tiny.records["onnx-int8"], tiny.spec, runs=5)
    assert set(result) >= {"ms_per_image", "ms_p90", "size_bytes", "threads", "backend"}
    assert 0 < result["ms_per_image"] <= result["ms_p90"]
    assert result["size_bytes"] == (tiny.root / "model.int8.onnx").stat().st_size


# -- fallback plans ------------------------------------------------------------------------


def _tflite_module_paths(path: Path) -> dict[str, set]:
    """TFLite tensor → (torch module path, dtype), from litert-torch's tensor names."""
    import re

    from ai_edge_litert.interpreter import Interpreter

    found: dict[str, set] = {}
    for detail in Interpreter(model_path=str(path)).get_tensor_details():
        parts = detail["name"].split(";")[0].split("/")[1:]
        attrs = [m.group(1) for p in parts
                 if (m := re.match(r"^_?[A-Za-z0-9]+_(.+)$", p.rsplit(".", 1)[-1]))]
        if len(detail["shape"]) >= 2:
            found.setdefault(".".join(attrs), set()).add(np.dtype(detail["dtype"]).name)
    return found


def _onnx_float_nodes(path: Path) -> set[str]:
    import onnx

    graph = onnx.load(str(path)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in graph.node if n.op_type in quantize.WEIGHTED_ONNX
            and n.input[1] not in dequantized}


def _openvino_float_ops(path: Path) -> set[str]:
    import openvino as ov

    kept = set()
    for op in ov.Core().read_model(str(path)).get_ordered_ops():
        if op.get_type_name() in quantize.WEIGHTED_OPENVINO:
            weight = op.input(1).get_source_output().get_node()
            if weight.get_type_name() == "Constant" and weight.get_element_type().is_real():
                kept.add(op.get_friendly_name())
    return kept


@pytest.mark.parametrize("key", ["onnx-int8", "openvino-int8", "tflite-int8"])
def test_fallback_plan_grows_and_quantizers_take_its_names(resnet, key, tmp_path):
    kind, fp32 = KINDS[key], resnet.root / KINDS["onnx-fp32"].path
    args = {"fp32_onnx": fp32, "model": resnet.model, "spec": resnet.spec,
            "calibration": resnet.calibration}
    plan = quantize.fallback_plan(kind, **args)
    assert plan == quantize.fallback_plan(kind, **args), "plans must be deterministic"
    assert 2 <= len(plan) <= 4 and plan[0]
    for smaller, larger in itertools.pairwise(plan):
        assert set(smaller) < set(larger)
    keep, out = plan[-1], tmp_path / kind.path
    if key == "onnx-int8":
        assert plan[0] == ["node_linear"]
        notes = quantize.quantize_onnx(fp32, out, resnet.calibration, resnet.spec,
                                       keep_float=keep)
        assert _onnx_float_nodes(out) == set(keep)
    elif key == "openvino-int8":
        notes = quantize.quantize_openvino(resnet.root / KINDS["openvino-fp32"].path, out,
                                           resnet.calibration, resnet.spec, keep_float=keep)
        assert _openvino_float_ops(out) == set(keep)
    else:
        assert plan[0] == ["fc"] and plan[1] == ["fc", "stem.0"]
        notes = quantize.quantize_tflite(resnet.model, resnet.spec, resnet.calibration, out,
                                         keep_float=keep)
        dtypes = _tflite_module_paths(out)
        for name in keep:
            assert "float32" in dtypes[name] and "int8" not in dtypes[name], (name, dtypes)
        assert "int8" in dtypes["stages.2.conv2"]
    assert notes["kept_float"] == keep


def test_fallback_plan_for_tensorrt_starts_at_the_head(tiny):
    plan = quantize.fallback_plan(KINDS["onnx-int8-trt"], fp32_onnx=None, model=tiny.model,
                                  spec=tiny.spec, calibration=tiny.calibration)
    assert plan[0] == ["node_linear"] and len(plan[1]) == 2


# -- bad input -----------------------------------------------------------------------------


class BranchesOnData(torch.nn.Module):
    """A forward pass that branches in Python on a tensor's value."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.mean() > 0:
            return image.mean(dim=(2, 3))
        return image.amax(dim=(2, 3))


def test_unexportable_model_gives_a_clear_error(tmp_path):
    spec = ModelSpec((1, 1, 32, 32), ("logit",), "logit")
    with pytest.raises(export.ExportError, match=r"BranchesOnData.*torch\.export.*torch\.cond"):
        export.export_onnx(BranchesOnData(), spec, tmp_path / "m.onnx")


def test_output_names_must_match_the_spec(tmp_path):
    spec = ModelSpec((1, 1, 32, 32), ("logit", "heatmap"), "logit")
    with pytest.raises(export.ExportError, match=r"1 output.*2"):
        export.export_onnx(tiny_classifier(1, 1), spec, tmp_path / "m.onnx")


def test_torchscript_exports_to_onnx_but_not_tflite(tiny, tmp_path):
    scripted = torch.jit.script(tiny.model)
    spec = export.export_onnx(scripted, tiny.spec, tmp_path / "m.onnx")
    assert spec.output_shapes == {"logit": (1, 1)}
    with pytest.raises(export.ExportError, match=r"eager PyTorch module.*\.pt2"):
        export.export_tflite(scripted, tiny.spec, tmp_path / "m.tflite")


class TwoHeads(torch.nn.Module):
    """Returns a dict in a different order than the spec names its outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.body = tiny_classifier(1, 4)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.body(image)
        return {"box": logits[:, 1:] * 2.0, "logit": logits[:, :1]}


def test_dict_outputs_keep_their_names(tmp_path):
    model = TwoHeads().eval()
    spec = ModelSpec((1, 1, 32, 32), ("logit", "box"), "logit")
    program = torch.export.export(model, (torch.zeros(1, 1, 32, 32),))
    spec = export.export_onnx(program, spec, tmp_path / "model.fp32.onnx")
    assert spec.output_shapes == {"logit": (1, 1), "box": (1, 3)}
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    backend = open_artifact(tmp_path, ArtifactRecord.for_kind(KINDS["onnx-fp32"]), spec)
    got, want = run_batch(backend, spec, x), export.torch_outputs(model, spec, x)
    for name in spec.output_names:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5)


def test_calibration_of_the_wrong_shape_is_refused(tiny, tmp_path):
    wrong = np.zeros((8, 3, SIZE, SIZE), np.float32)
    message = r"\[N, 1, 64, 64\].*got \[8, 3, 64, 64\]"
    with pytest.raises(ValueError, match=message):
        quantize.quantize_onnx(tiny.root / "model.fp32.onnx", tmp_path / "q.onnx", wrong,
                               tiny.spec)
    with pytest.raises(ValueError, match=message):
        quantize.quantize_openvino(tiny.root / "openvino/model.fp32.xml", tmp_path / "q.xml",
                                   wrong, tiny.spec)
    with pytest.raises(ValueError, match=message):
        quantize.quantize_tflite(tiny.model, tiny.spec, wrong, tmp_path / "q.tflite")
    with pytest.raises(ValueError, match=r"keep_float names \['nope'\]"):
        quantize.quantize_onnx(tiny.root / "model.fp32.onnx", tmp_path / "q.onnx",
                               tiny.calibration, tiny.spec, keep_float=["nope"])


@pytest.mark.parametrize("key", ["onnx-fp32", "openvino-fp32", "tflite-int8"])
def test_corrupted_artifact_is_refused(tiny, key, tmp_path):
    record = tiny.records[key]
    for rel in record.files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny.root / rel, tmp_path / rel)
    main = tmp_path / record.path
    main.write_bytes(main.read_bytes()[: main.stat().st_size // 3][::-1])
    with pytest.raises(ArtifactLoadError, match=key):
        open_artifact(tmp_path, record, tiny.spec)
    main.unlink()
    with pytest.raises(ArtifactLoadError, match="missing"):
        open_artifact(tmp_path, record, tiny.spec)
