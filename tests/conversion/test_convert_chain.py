"""The whole converter chain through the real ``clinibox`` command line, and the box loading
what it wrote.

An architecture the project does not ship (a small residual network, 3-channel
224×224 input, 3 classes) goes through distill → prune → export → quantize →
verify → package for every target profile; a 1-channel 256×256 TorchScript
model goes through the steps one at a time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from converters.config import ConvertConfig
from converters.data import Preprocessing, load_folder
from engine.imaging.wrap import decode_file
from engine.model_package import load_package
from firmware_app.service.appliance import load_runner
from firmware_app.settings import box as box_config
from tests.conversion.conftest import clinibox, write_png_folder
from tests.conversion.tiny_models import small_resnet, tiny_classifier, train_quickly

MODULE = '''
from tests.conversion.tiny_models import small_resnet


def clinic_resnet(classes=3, width=16):
    return small_resnet(3, classes, width)
'''
CLASSES = ["normal", "round lesion", "linear lesion"]


@pytest.fixture(scope="module")
def resnet_case(tmp_path_factory):
    """A cwd with an importable model module, a trained teacher checkpoint and PNG data."""
    cwd = tmp_path_factory.mktemp("resnet")
    (cwd / "clinic_models.py").write_text(MODULE)
    labels = write_png_folder(cwd / "data", 300, 96, 3, seed=11)
    prep = Preprocessing("letterbox_grey", (1, 3, 224, 224), 0.3, 0.2, {})
    data = load_folder(cwd / "data", labels, prep, 3, ConvertConfig(teacher="x")
                       .split_fractions(), seed=0)
    torch.manual_seed(0)
    teacher = train_quickly(small_resnet(3, 3, 16), data.x, data.labels, epochs=4)
    torch.save(teacher.state_dict(), cwd / "teacher.pt")
    return cwd, labels


def test_resnet_three_classes_whole_chain_every_profile(resnet_case, signing_key):
    cwd, labels = resnet_case
    out = cwd / "packages" / "clinic-resnet" / "1.0.0"
    # 90 validation images: one FP16 flip would be 98.9 % agreement; this chain is about the
    # steps, so the gate is loosened here, deliberately, through the config file
    (cwd / "convert.toml").write_text("[gate]\nfloat_min_agreement = 0.97\n"
                                      "int8_max_sensitivity_loss = 0.05\n")
    run = clinibox(
        "convert", "--config", "convert.toml", "--model", "clinic_models:clinic_resnet",
        "--factory-kwargs", '{"width": 8}', "--teacher", "clinic_models:clinic_resnet",
        "--teacher-weights", "teacher.pt", "--max-student-mac-ratio", "0.3",
        "--distill-epochs", "3",
        "--input-shape", "3,224,224", "--mean", "0.3", "--std", "0.2",
        "--class-names", ",".join(CLASSES), "--negative-label", "normal",
        "--data", "data", "--labels", str(labels), "--prune", "0.6", "--prune-round-to", "2",
        "--finetune-epochs", "2",
        "--targets", "onnx,x86-cpu,intel-npu,arm-cpu,jetson", "--out", str(out),
        "--key", str(signing_key), "--name", "clinic-resnet", "--version", "1.0.0", cwd=cwd)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    package = load_package(out, [signing_key.with_suffix(".pub")])
    manifest = package.manifest
    kinds = {(a["format"], a["precision"]) for a in manifest["artifacts"]}
    assert kinds == {("onnx", "fp32"), ("onnx", "int8"), ("onnx", "fp16"),
                     ("openvino-ir", "fp32"), ("openvino-ir", "int8"), ("tflite", "fp32"),
                     ("tflite", "int8")}
    profiles = {p for a in manifest["artifacts"] for p in a["profiles"]}
    assert profiles == {"onnx", "x86-cpu", "intel-npu", "arm-cpu", "jetson"}
    steps = manifest["provenance"]["steps"]
    assert steps["distill"]["mac_ratio"] <= 0.3
    assert steps["prune"]["macs_after"] < steps["prune"]["macs_before"]
    assert manifest["provenance"]["gate"]["float_min_agreement"] == 0.97
    for art in manifest["artifacts"]:
        v = art["validation"]
        assert set(v["auc_per_class"]) == set(CLASSES), art["path"]
        assert v["auc"] > 0.8, (art["path"], v)  # the task is easy; the chain kept it
        assert v["ms_per_image"] > 0 and v["size_bytes"] > 0
    assert manifest["labels"] == CLASSES
    assert manifest["postprocessing"]["name"] == "classification"
    assert len(manifest["golden_cases"]) == 9  # three a class: at least 8 in all
    assert {c["class"] for c in manifest["golden_cases"]} == set(CLASSES)
    report = (out / "report.html").read_text()
    assert "clinic-resnet" in report and report.count("data:image/png") >= 3
    assert not (out / ".convert").exists()
    # the box verifies it with the workstation's public key, and runs it on a PNG
    verify = clinibox("model", "verify", str(out), "--trust",
                      str(signing_key.with_suffix(".pub")), cwd=cwd)
    assert verify.returncode == 0 and "OK clinic-resnet@1.0.0" in verify.stdout
    cfg = box_config.from_dict({"models": {
        "dir": str(out.parent.parent), "name": "clinic-resnet",
        "trusted_keys": [str(signing_key.with_suffix(".pub"))]}})
    runner = load_runner(cfg)
    for row in labels.read_text().splitlines()[1:4]:
        name = row.split(",")[0]
        decoded = decode_file(cwd / "data" / name, cfg.limits, 1)
        findings, _ = runner.run(decoded.frames[0])
        assert set(findings.classes) == set(CLASSES)
        assert np.isclose(sum(findings.classes.values()), 1.0, atol=1e-3)
        assert findings.probability == pytest.approx(1 - findings.classes["normal"], abs=1e-6)


def test_torchscript_one_channel_step_by_step(tmp_path, signing_key):
    labels = write_png_folder(tmp_path / "data", 240, 128, 2, seed=5)
    prep = Preprocessing("letterbox_grey", (1, 1, 256, 256), 0.3, 0.2, {})
    data = load_folder(tmp_path / "data", labels, prep, 2, {"train": 0.5, "validation": 0.5})
    model = train_quickly(tiny_classifier(1, 1), data.x, data.labels, epochs=5, sigmoid=True)
    torch.jit.save(torch.jit.script(model), tmp_path / "disc_finder.ts")
    out = tmp_path / "pkg"
    common = ["--model", "disc_finder.ts", "--input-shape", "1,256,256", "--mean", "0.3", "--std",
              "0.2", "--data", "data", "--labels", str(labels), "--targets", "onnx,x86-cpu",
              "--out", str(out), "--key", str(signing_key)]  # the name comes from the model
    for step in ("export", "quantize", "verify", "package"):
        run = clinibox(step, *common, cwd=tmp_path)
        assert run.returncode == 0, (step, run.stdout[-2000:], run.stderr[-4000:])
        assert f"{step}: done" in run.stdout
    manifest = load_package(out, [signing_key.with_suffix(".pub")]).manifest
    assert [a["path"] for a in manifest["artifacts"]] == [
        "model.fp32.onnx", "openvino/model.fp32.xml", "model.int8.onnx",
        "openvino/model.int8.xml"]
    assert manifest["provenance"]["source"]["kind"] == "torchscript"
    assert manifest["name"] == "disc-finder"
    assert manifest["inputs"][0]["shape"] == [1, 1, 256, 256]
    for art in manifest["artifacts"]:
        assert art["validation"]["decision_agreement"] >= 0.95
    # TorchScript cannot be wrapped: no heatmap and no features, and the report says so; its
    # validated range measures the input's own statistics, computed by the box
    steps = manifest["provenance"]["steps"]
    assert steps["heatmap"]["added"] is False and "torchscript" in steps["heatmap"]["reason"]
    assert [o["name"] for o in manifest["outputs"]] == ["logits"]
    assert [h["kind"] for h in manifest["heads"]] == ["classification"]
    statistics = steps["validated_range"]["image_statistics"]
    assert manifest["ood"]["output"] is None and len(manifest["ood"]["mean"]) == statistics > 0
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "nothing was added to the model" in report
    assert "intensity histogram and texture" in report and "The box has no guard" not in report


def test_an_eager_classifier_keeps_its_heatmap_across_separate_steps(tmp_path, signing_key):
    labels = write_png_folder(tmp_path / "data", 120, 64, 2, seed=8)
    prep = Preprocessing("letterbox_grey", (1, 1, 64, 64), 0.3, 0.2, {})
    data = load_folder(tmp_path / "data", labels, prep, 2, {"train": 0.5, "validation": 0.5})
    torch.manual_seed(0)
    model = train_quickly(tiny_classifier(1, 1), data.x, data.labels, epochs=6, sigmoid=True)
    torch.save(model, tmp_path / "disc_net.pt")
    out = tmp_path / "pkg"
    common = ["--model", "disc_net.pt", "--input-shape", "1,64,64", "--mean", "0.3", "--std",
              "0.2", "--data", "data", "--labels", str(labels), "--targets", "onnx",
              "--out", str(out), "--key", str(signing_key)]
    for step in ("export", "quantize", "verify", "package"):
        run = clinibox(step, *common, cwd=tmp_path)
        assert run.returncode == 0, (step, run.stdout[-2000:], run.stderr[-4000:])
    manifest = load_package(out, [signing_key.with_suffix(".pub")]).manifest
    assert [o["name"] for o in manifest["outputs"]] == ["logits", "cam", "features"]
    assert [h["kind"] for h in manifest["heads"]] == ["classification", "heatmap"]
    steps = manifest["provenance"]["steps"]
    assert steps["heatmap"]["feature_layer"] == "features"
    assert all(v["min"] >= 0.99 for k, v in steps["heatmap"]["grad_cam"]["correlation"].items()
               if k != "onnx-int8")
    # the range measures the features the heatmap was built from and the input's statistics
    assert len(manifest["ood"]["mean"]) == (steps["heatmap"]["features"]["dimensions"]
                                            + steps["validated_range"]["image_statistics"])
    assert manifest["ood"]["output"] == "features"
    assert steps["validated_range"]["artifacts_flagged"]["onnx-fp32"] <= 0.05


def test_convert_toml_config_and_unknown_key(tmp_path, signing_key):
    (tmp_path / "convert.toml").write_text('model = "nowhere:factory"\ninput_shap = "1,8,8"\n')
    run = clinibox("convert", "--config", "convert.toml", "--out", "x", cwd=tmp_path)
    assert run.returncode == 2
    assert "unknown setting 'input_shap' (did you mean 'input_shape'?)" in run.stderr


def _exported_case(tmp_path: Path, signing_key: Path) -> list[str]:
    labels = write_png_folder(tmp_path / "data", 80, 64, 2, seed=3)
    torch.save(tiny_classifier(1, 1), tmp_path / "model.pt")
    return ["--model", "model.pt", "--input-shape", "1,64,64", "--data", "data", "--labels",
            str(labels), "--targets", "onnx", "--out", str(tmp_path / "pkg"), "--name", "t",
            "--key", str(signing_key)]


def test_a_corrupted_artifact_is_a_clear_error(tmp_path, signing_key):
    common = _exported_case(tmp_path, signing_key)
    assert clinibox("export", *common, cwd=tmp_path).returncode == 0
    onnx = tmp_path / "pkg" / "model.fp32.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    run = clinibox("verify", *common, cwd=tmp_path)
    assert run.returncode == 1
    assert "model.fp32.onnx" in run.stderr and "Traceback" not in run.stderr


def test_a_model_that_does_not_export_is_a_clear_error(tmp_path, signing_key):
    (tmp_path / "odd.py").write_text(
        "import torch\n\nclass Odd(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        if float(x.mean()) > 0:\n"
        "            return x.flatten(1)[:, :1]\n"
        "        return -x.flatten(1)[:, :1]\n\n"
        "def make():\n    return Odd()\n")
    run = clinibox("export", "--model", "odd:make", "--input-shape", "1,16,16", "--out", "pkg",
                   cwd=tmp_path)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "export failed" in run.stderr and "Traceback" not in run.stderr


def test_input_shape_that_does_not_fit_the_model(tmp_path, signing_key):
    common = _exported_case(tmp_path, signing_key)
    common[common.index("1,64,64")] = "3,64,64"
    run = clinibox("export", *common, cwd=tmp_path)
    assert run.returncode == 2
    assert "does not run on input [1, 3, 64, 64]" in run.stderr


def test_wrong_key_is_refused(tmp_path, signing_key):
    common = _exported_case(tmp_path, signing_key)
    for step in ("export", "verify"):
        assert clinibox(step, *common, "--keep-work", cwd=tmp_path).returncode == 0
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a key")
    bogus.with_suffix(".pub").write_text("not a key either")
    common[common.index(str(signing_key))] = str(bogus)
    # the untrained model is below the floors: accepted, so that signing is what is tried
    run = clinibox("package", *common, "--accept-weak-model", cwd=tmp_path)
    assert run.returncode == 2 and "cannot sign with" in run.stderr, run.stderr[-2000:]
    common[common.index(str(bogus))] = str(signing_key)
    assert clinibox("package", *common, "--accept-weak-model", cwd=tmp_path).returncode == 0
    other = tmp_path / "other"
    assert clinibox("keys", "generate", "--out", str(other), cwd=tmp_path).returncode == 0
    run = clinibox("model", "verify", str(tmp_path / "pkg"), "--trust",
                   str(other.with_suffix(".pub")), cwd=tmp_path)
    assert run.returncode == 1 and "REFUSED" in run.stderr


def test_exported_program_pt2_is_accepted(tmp_path):
    model = tiny_classifier(1, 2).eval()
    program = torch.export.export(model, (torch.zeros(1, 1, 64, 64),))
    torch.export.save(program, tmp_path / "model.pt2")
    run = clinibox("export", "--model", "model.pt2", "--input-shape", "1,64,64", "--targets",
                   "onnx", "--out", "pkg", "--keep-work", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    state = json.loads((tmp_path / "pkg" / ".convert" / "state.json").read_text())
    assert state["source"]["kind"] == "exported"
    assert state["spec"]["activation"] == "softmax" and state["spec"]["output_shapes"] == {
        "logits": [1, 2]}
    assert (tmp_path / "pkg" / "model.fp32.onnx").stat().st_size > 0
