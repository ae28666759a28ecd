"""Distillation, structured pruning, fine-tuning and the progress display — real torch."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from converters.distill import distill
from converters.export import torch_outputs
from converters.progress import Progress, progress
from converters.prune import (
    count_macs,
    count_parameters,
    fine_tune,
    load_module,
    output_layers,
    prune,
    save_module,
    torch_latency_ms,
)
from converters.spec import ModelSpec
from converters.training import (
    ClassificationTask,
    TrainData,
    TrainingDiverged,
    model_outputs,
    train_epochs,
)
from demo.model import OUTPUTS, LesionNet
from tests.conversion.tiny_models import SmallResNet, TinyClassifier, as_input, shapes_dataset

SIZE = 32
BINARY = ModelSpec((1, 1, SIZE, SIZE), ("logit",), "logit", "sigmoid", ("disc",))
THREE = ModelSpec((1, 3, SIZE, SIZE), ("logits",), "logits", "softmax", ("blank", "disc", "bar"),
                  negative_label="blank")
LESION = ModelSpec((1, 1, 256, 256), OUTPUTS, "lesion_logit", "sigmoid", ("lesion",))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tiny models run as fast, and 2 threads on 2 busy cores
    (another job running) slow torch down ~10× through OpenMP oversubscription."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _data(spec: ModelSpec, count: int, seed: int) -> TrainData:
    images, labels = shapes_dataset(count, SIZE, classes=len(spec.labels) + (
        spec.activation == "sigmoid"), seed=seed)
    return TrainData(as_input(images, spec.channels), {"label": labels})


def _decisions(model: nn.Module, x: np.ndarray, spec: ModelSpec) -> np.ndarray:
    scores = torch_outputs(model, spec, x)[spec.score_output]
    return scores.argmax(1) if spec.activation == "softmax" else (scores[:, 0] > 0).astype(int)


def _agreement(student: nn.Module, teacher: nn.Module, x: np.ndarray, spec: ModelSpec) -> float:
    return float(np.mean(_decisions(student, x, spec) == _decisions(teacher, x, spec)))


def _accuracy(model: nn.Module, data: TrainData, spec: ModelSpec) -> float:
    return float(np.mean(_decisions(model, data.x, spec) == data.targets["label"]))


@pytest.fixture(scope="module")
def binary_setup() -> tuple[nn.Module, TrainData, TrainData]:
    train, val = _data(BINARY, 768, 1), _data(BINARY, 256, 2)
    torch.manual_seed(0)
    teacher = train_epochs(TinyClassifier(1, 1, 16), train, ClassificationTask(BINARY), BINARY,
                           epochs=6, description="teacher")
    assert _accuracy(teacher, val, BINARY) > 0.9
    return teacher, train, val


@pytest.fixture(scope="module")
def three_setup() -> tuple[nn.Module, TrainData, TrainData]:
    train, val = _data(THREE, 768, 3), _data(THREE, 256, 4)
    torch.manual_seed(0)
    teacher = train_epochs(SmallResNet(3, 3, 16), train, ClassificationTask(THREE), THREE,
                           epochs=8, description="teacher")
    assert _accuracy(teacher, val, THREE) > 0.85
    return teacher, train, val


# -- distillation ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["binary", "three"])
def test_distillation_makes_the_student_agree_with_the_teacher(which, request):
    spec = BINARY if which == "binary" else THREE
    teacher, train, val = request.getfixturevalue(f"{which}_setup")
    torch.manual_seed(1)
    make = (lambda: TinyClassifier(1, 1, 6)) if which == "binary" else (
        lambda: SmallResNet(3, 3, 8))
    untrained = make()
    before = _agreement(untrained, teacher, val.x, spec)
    student, report = distill(teacher, make(), train, ClassificationTask(spec), spec, epochs=5,
                              max_mac_ratio=0.3)
    after = _agreement(student, teacher, val.x, spec)
    assert after >= 0.85 and after > before + 0.15, (before, after)
    assert report["student_macs"] < 0.3 * report["teacher_macs"]
    assert report["mac_ratio"] == pytest.approx(report["student_macs"] / report["teacher_macs"])
    assert report["student_parameters"] < report["teacher_parameters"]
    assert report["epochs"] == 5 and report["temperature"] == 4.0 and report["seconds"] > 0
    assert not teacher.training


def test_distill_refuses_a_student_over_the_mac_budget(binary_setup):
    teacher, train, _ = binary_setup
    with pytest.raises(ValueError, match=r"at most 0\.25×"):
        distill(teacher, TinyClassifier(1, 1, 12), train, ClassificationTask(BINARY), BINARY,
                epochs=1, max_mac_ratio=0.25)


def test_soft_loss_is_zero_for_identical_softmax_outputs():
    task, logits = ClassificationTask(THREE), {"logits": torch.randn(8, 3)}
    assert task.soft_loss(logits, logits, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    other = {"logits": torch.randn(8, 3)}
    assert task.soft_loss(logits, other, 4.0).item() > 0.01


# -- pruning ---------------------------------------------------------------------------------


def test_prune_small_resnet_hits_the_mac_target_with_residual_adds(three_setup):
    teacher = three_setup[0]
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    pruned, report = prune(teacher, THREE, target_mac_ratio=0.5)
    assert 0.45 <= report["mac_ratio"] <= 0.5
    assert count_macs(pruned, THREE) == report["macs_after"]
    assert report["parameters_after"] < report["parameters_before"]
    out = pruned(torch.zeros(2, 3, SIZE, SIZE))
    assert out.shape == (2, 3)
    # the residual pairs stayed coupled and the caller's model is untouched
    for block in pruned.stages:
        assert block.conv2.out_channels == (block.skip[0].out_channels if isinstance(
            block.skip, nn.Sequential) else block.conv1.in_channels)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    assert pruned.fc.out_features == 3 and teacher.fc.in_features == 64


def test_fine_tune_after_pruning_recovers_accuracy(three_setup):
    teacher, train, val = three_setup
    pruned, _ = prune(teacher, THREE, target_mac_ratio=0.3)
    damaged = _accuracy(pruned, val, THREE)
    tuned = fine_tune(pruned, train, ClassificationTask(THREE), THREE, teacher=teacher, epochs=3)
    recovered = _accuracy(tuned, val, THREE)
    assert recovered >= max(damaged + 0.05, _accuracy(teacher, val, THREE) - 0.08), (
        damaged, recovered)


def test_prune_lesionnet_to_half_the_macs_is_faster_with_unchanged_outputs(tmp_path):
    torch.manual_seed(0)
    model = LesionNet().eval()
    # the 1×1 heads, and the backbone convolutions whose maps the features output pools
    assert {m.out_channels for m in output_layers(model, LESION)} == {1, 2, 48}
    pruned, report = prune(model, LESION, target_mac_ratio=0.5)
    assert 0.47 <= report["mac_ratio"] <= 0.5, report
    x = torch.randn(1, 1, 256, 256)
    with torch.no_grad():
        ref, out = model_outputs(model, x, LESION), model_outputs(pruned, x, LESION)
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in ref.items()}
    speedup = report["speedup"]
    if speedup < 1.1:  # a busy machine: measure again, best of three each
        ms = [min(torch_latency_ms(m, LESION, runs=20) for _ in range(3)) for m in (model, pruned)]
        speedup = ms[0] / ms[1]
    assert speedup > 1.1, report
    saved = load_module(save_module(pruned, tmp_path / "pruned.pt"))
    with torch.no_grad():
        again = model_outputs(saved, x, LESION)
    assert all(torch.equal(again[k], out[k]) for k in OUTPUTS)
    assert count_parameters(saved) == report["parameters_after"]


def test_prune_rejects_a_bad_ratio_and_an_unreachable_budget():
    model = TinyClassifier(1, 1, 16)
    with pytest.raises(ValueError, match="within"):
        prune(model, BINARY, target_mac_ratio=1.5)
    everything = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with pytest.raises(ValueError, match="could not prune"):
        prune(model, BINARY, target_mac_ratio=0.5, ignored=everything)


# -- outputs and progress --------------------------------------------------------------------


class _Pair(nn.Module):
    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return image.mean((1, 2, 3)), image.amax((1, 2, 3))


def test_model_outputs_names_outputs_and_explains_a_mismatch():
    x = torch.zeros(1, 1, 8, 8)
    two = ModelSpec((1, 1, 8, 8), ("mean", "max"), "max")
    assert set(model_outputs(_Pair(), x, two)) == {"mean", "max"}
    three = ModelSpec((1, 1, 8, 8), ("a", "b", "c"), "a")
    with pytest.raises(ValueError, match=r"returned 2 outputs but the spec names 3"):
        model_outputs(_Pair(), x, three)
    with pytest.raises(ValueError, match=r"lack \['heat'\]"):
        model_outputs(lambda _x: {"logit": x}, x, ModelSpec((1, 1, 8, 8), ("logit", "heat"),
                                                            "logit"))
    with pytest.raises(ValueError, match="one tensor but the spec names 2"):
        model_outputs(lambda _x: x, x, two)


def test_progress_prints_log_lines_when_not_a_tty(capsys, monkeypatch):
    monkeypatch.delenv("CLINIBOX_QUIET", raising=False)
    with progress("calibrate", total=20) as bar:
        for i in range(20):
            bar.note(f"batch {i + 1}")
            bar.advance(1)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].endswith("calibrate: started (20 steps)")
    assert any(" 50 % (10/20) — batch 10" in line for line in lines)
    assert "done 20/20" in lines[-1]
    assert 10 <= len(lines) <= 12  # start, every 10 %, end
    assert all(line[:4].isdigit() and line[10] == " " for line in lines)  # timestamped


def test_progress_is_silent_in_quiet_mode_and_rich_on_a_terminal(capsys, monkeypatch):
    monkeypatch.setenv("CLINIBOX_QUIET", "1")
    with progress("train", total=5) as bar:
        bar.advance(5)
    assert capsys.readouterr().err == ""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("CLINIBOX_QUIET")
    stream = Tty()
    with Progress("train", total=4, stream=stream) as bar:
        assert bar.mode == "rich"
        bar.note("loss 0.5")
        bar.advance(4)
    assert "train" in stream.getvalue() and "4/4" in stream.getvalue()


def test_a_non_finite_loss_stops_training_with_a_clear_error():
    """Data with a NaN (or a kernel that corrupts memory) must never yield a garbage model."""
    train = _data(BINARY, 64, 5)
    train.x[3, 0, 4, 4] = np.nan
    with pytest.raises(TrainingDiverged, match="loss is not finite at epoch 1, step 1"):
        train_epochs(TinyClassifier(1, 1, 8), train, ClassificationTask(BINARY), BINARY,
                     epochs=1, batch=64, description="teacher")
