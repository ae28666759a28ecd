"""`python -m demo.train --quick` builds a package the box accepts.

(How long it takes is no test's business: a shared or slower CPU takes longer.)"""

from __future__ import annotations

import json
import subprocess
import sys

from clinibox_common.bundled import REPO_ROOT
from clinibox_common.contracts import signing
from converters.training import bf16_supported
from engine.model_package import load_package


def test_quick_training_produces_a_loadable_package(tmp_path):
    key, pub = tmp_path / "keys" / "test.pem", tmp_path / "keys" / "test.pub"
    signing.generate_key_pair(key, pub)
    out = tmp_path / "models" / "clinibox-demo-lesion" / "1.0.0"
    run = subprocess.run(
        [sys.executable, "-m", "demo.train", "--quick", "--out", str(out),
         "--key", str(key), "--checkpoint", str(tmp_path / "checkpoint.pt")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    package = load_package(out, [pub])
    manifest = package.manifest
    assert {a.label for a in package.artifacts} == {"onnx/fp32", "onnx/int8"}
    steps = manifest["provenance"]["steps"]
    assert steps["detection"]["quick"] is True
    # the trainable model federated fine-tuning runs on the box: the lesion logit is the
    # log-sum-exp pool (sharpness 4) of the cam over the final maps
    learning = manifest["learning"]
    assert (learning["maps_output"], learning["score_output"], learning["head_output"]) == (
        "trainable_maps", "lesion_logit", "cam")
    assert learning["sharpness"] == 4.0 and learning["channels"] > 0
    assert (out / learning["path"]).is_file()  # and its sha256 checked by load_package
    assert steps["distill"]["mac_ratio"] <= 0.25
    assert steps["prune"]["macs_after"] < steps["prune"]["macs_before"]
    assert all(manifest["provenance"]["source"]["files"].values())
    assert len(manifest["golden_cases"]) >= 4  # a quick run holds few held-out images
    assert {c["class"] for c in manifest["golden_cases"]} == {"finding", "no-finding"}
    assert [h["kind"] for h in manifest["heads"]] == ["detection", "classification",
                                                      "segmentation", "heatmap"]
    assert manifest["postprocessing"]["name"] == "heads"
    shapes = {o["name"]: o["shape"] for o in manifest["outputs"]}
    assert shapes["lesion_class"] == [1, 2, 32, 32] and shapes["lesion_mask"] == [1, 1, 64, 64]
    # the range measures the input's own statistics (computed by the box), then the features
    statistics = manifest["ood"]["image_statistics"]
    counted = len(statistics["levels"]) + 2 * len(statistics["scales"])
    assert shapes["features"] == [1, len(manifest["ood"]["mean"]) - counted]
    assert manifest["ood"]["threshold"] > 0
    # the INT8 artifact runs at its own finding threshold, at most the package's
    int8 = next(a for a in manifest["artifacts"] if a["precision"] == "int8")
    own = int8["conversion"]["operating_threshold"]
    assert own["guard_band_logit"] >= 0 and own["calibration_images"] > 0
    assert 0 < own["finding"] <= manifest["thresholds"]["finding"]
    assert int8["validation"]["threshold"] == own["finding"]
    assert int8.get("thresholds", {}).get("finding", manifest["thresholds"]["finding"]) == \
        own["finding"]
    ood = steps["ood"]
    assert set(ood["torch"]["real_files"]) >= {"CT_small.dcm", "MR_small.dcm",
                                               "emri_small.dcm"}
    assert set(ood["artifacts"]) == {"onnx fp32 (model.fp32.onnx)", "onnx int8 (model.int8.onnx)"}
    assert steps["lesions"]["lesions"] > 0 and "sizes" in steps["lesions"]
    assert "sizes" in steps["lesions_first_stage"]
    [stage] = package.stages  # the second stage, loaded as the box loads it
    assert stage.name == "clinibox-demo-lesion/lesion-crop"
    assert [a.label for a in stage.artifacts] == ["onnx/fp32"]  # no TFLite target here
    assert len(stage.manifest["golden_cases"]) == 2
    assert steps["stage"]["training_crops"] > 0 and "class_auc" in steps["stage"]
    # the demo's stage has four scales by default, trained under bf16 autocast where the CPU
    # runs it natively
    assert steps["stage"]["depth"] == 4 == stage.manifest["validation"]["depth"]
    assert steps["stage"]["bf16_autocast"] is bf16_supported()
    card = (out / "MODEL_CARD.md").read_text()
    assert "Validated range" in card and "Benign/malignant AUC" in card
    assert "Second stage" in card
    assert (out / "report.html").exists() and not (out / ".convert").exists()
    assert json.loads((out / "manifest.json").read_text())["signature"]["key_id"] == \
        signing.key_id(signing.load_public_key(pub))


def test_a_rebuild_from_the_checkpoint_names_the_build_that_trained_it(tmp_path):
    """``--from-checkpoint`` records which build trained the first stage; a package that was
    itself rebuilt from the checkpoint passes on the training build, not its own date."""
    import argparse

    import torch

    from converters.prune import save_module
    from demo.train import kept_training

    checkpoint = tmp_path / "checkpoint.pt"
    save_module(torch.nn.Conv2d(1, 1, 1), checkpoint)
    steps = {k: {} for k in ("teacher", "distill", "prune", "mask_calibration")}
    steps["detection"] = {"torch_test_metrics": {}}
    for earlier, expected in (({}, "2026-11-24T13:22:00+00:00"),
                              ({"package_built": "2026-11-20T09:00:00+00:00"},
                               "2026-11-20T09:00:00+00:00")):
        manifest = {"provenance": {"created": "2026-11-24T13:22:00+00:00",
                                   "steps": {**steps, "from_checkpoint": earlier}}}
        (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        args = argparse.Namespace(out=tmp_path, checkpoint=checkpoint, recover_checkpoint=False)
        _module, kept, _summaries = kept_training(args, lambda _line: None)
        assert kept["from_checkpoint"]["package_built"] == expected
