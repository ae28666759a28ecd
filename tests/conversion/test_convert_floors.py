"""`clinibox convert` refuses a model below the floors, and packages it only when asked, with
the weakness written into the manifest and at the top of the report."""

from __future__ import annotations

import json

import torch

from engine.model_package import load_package
from tests.conversion.conftest import clinibox, write_png_folder
from tests.conversion.tiny_models import tiny_classifier

MODULE = "from tests.conversion.tiny_models import tiny_classifier\n"


def test_an_untrained_model_is_refused_then_accepted_with_its_weakness(tmp_path, signing_key):
    labels = write_png_folder(tmp_path / "data", 80, 48, 2, seed=3)
    (tmp_path / "clinic_models.py").write_text(MODULE)
    torch.manual_seed(0)
    torch.save(tiny_classifier(1, 1).state_dict(), tmp_path / "untrained.pt")
    out = tmp_path / "package"
    args = ("convert", "--model", "clinic_models:tiny_classifier", "--weights", "untrained.pt",
            "--input-shape", "1,48,48", "--mean", "0.3", "--std", "0.2", "--data", "data",
            "--labels", str(labels), "--targets", "onnx", "--out", str(out),
            "--key", str(signing_key))

    refused = clinibox(*args, cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-4000:]
    assert "weak model refused" in refused.stderr
    assert "validation AUC of PyTorch source 0." in refused.stderr
    assert "is below the floor 0.800" in refused.stderr and "--accept-weak-model" in refused.stderr
    assert not (out / "manifest.json").exists()

    accepted = clinibox(*args, "--accept-weak-model", cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stdout[-2000:] + accepted.stderr[-4000:]
    manifest = load_package(out, [signing_key.with_suffix(".pub")]).manifest
    provenance = manifest["provenance"]
    weakness = provenance["weakness"]
    assert [(w["figure"], w["model"], w["floor"]) for w in weakness] == [
        ("validation AUC", "PyTorch source", 0.8)]
    assert weakness[0]["value"] < 0.8
    assert weakness[0]["value"] == provenance["source_metrics"]["auc"]
    assert "accept-weak-model" in weakness[0]["accepted_by"]
    assert provenance["floors"] == {"auc": 0.8, "sensitivity": 0.9}
    assert "sensitivity is at least 0.95" in provenance["threshold_from"]
    # the threshold was chosen for sensitivity: every artifact keeps at least the target
    assert provenance["source_metrics"]["sensitivity"] >= 0.95
    html = (out / "report.html").read_text(encoding="utf-8")
    body = html[html.index("<body>"):]
    assert body.index("Below the floor, accepted by the operator") < body.index("<h2>")
    assert json.loads((out / "manifest.json").read_text())["provenance"]["weakness"] == weakness
