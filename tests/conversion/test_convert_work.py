"""A failed conversion says what it left and where; a rerun with other --targets packages
nothing of it (it once packaged the stale OpenVINO artifacts left in OUT/.convert)."""

from __future__ import annotations

import torch

from engine.model_package import load_package
from tests.conversion.conftest import clinibox, write_png_folder
from tests.conversion.tiny_models import tiny_classifier

MODULE = "from tests.conversion.tiny_models import tiny_classifier\n"


def test_a_rerun_with_other_targets_after_a_failed_run_packages_only_its_own(tmp_path,
                                                                             signing_key):
    labels = write_png_folder(tmp_path / "data", 80, 48, 2, seed=3)
    (tmp_path / "clinic_models.py").write_text(MODULE)
    torch.manual_seed(0)
    torch.save(tiny_classifier(1, 1).state_dict(), tmp_path / "untrained.pt")
    out = tmp_path / "package"
    args = ("--model", "clinic_models:tiny_classifier", "--weights", "untrained.pt",
            "--input-shape", "1,48,48", "--mean", "0.3", "--std", "0.2", "--data", "data",
            "--labels", str(labels), "--out", str(out), "--key", str(signing_key))
    # an untrained model is refused at the package step, after every artifact was written
    failed = clinibox("convert", *args, "--targets", "onnx,x86-cpu", cwd=tmp_path)
    assert failed.returncode == 2, failed.stdout[-2000:] + failed.stderr[-4000:]
    assert f"convert stopped: its work is left in {out / '.convert'}" in failed.stderr
    assert "openvino/model.int8.xml" in failed.stderr and "steps done:" in failed.stderr
    assert (out / "openvino" / "model.fp32.xml").is_file()

    # one step with other targets refuses the earlier work, naming what differs
    step = clinibox("package", *args, "--targets", "onnx", "--accept-weak-model", cwd=tmp_path)
    assert step.returncode == 2, step.stdout[-2000:] + step.stderr[-4000:]
    assert "holds the work of a run with other inputs (targets: ['onnx', 'x86-cpu']" \
        in step.stderr
    assert not (out / "manifest.json").exists()

    # the whole chain with other targets starts afresh: nothing of OpenVINO is packaged
    rerun = clinibox("convert", *args, "--targets", "onnx", "--accept-weak-model", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-4000:]
    manifest = load_package(out, [signing_key.with_suffix(".pub")]).manifest
    assert {a["format"] for a in manifest["artifacts"]} == {"onnx"}
    assert not (out / "openvino" / "model.fp32.xml").exists()
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "openvino" not in report
    # each INT8 artifact's speed against the FP32 of its runtime, in the manifest and report
    int8 = next(a for a in manifest["artifacts"] if a["precision"] == "int8")
    validation = int8["validation"]
    assert validation["fp32_source"] == "model.fp32.onnx" and validation["cpu"]
    assert validation["speedup_vs_fp32"] > 0
    assert isinstance(validation["slower_than_fp32"], bool)
    assert "speed vs its FP32" in report and f"Measured on {validation['cpu']}" in report
