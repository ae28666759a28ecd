"""TFLite INT8 of a YOLO-style detector: what the quantiser cannot make is left out or
refused with its words, never a crash of the run (issue 55).

litert-torch's PT2E path cannot quantise the cookbook's YOLO-style decode: with nothing kept
in float its converter fails ("Attempting to broadcast a dimension …" on the grid offsets);
with layers kept in float it makes an artifact whose boxes the gate finds nowhere near the
source's. Either way the float TFLite artifact is sound. Here the example's model is trained
briefly and converted for ``arm-cpu`` with no float fallback, so the one INT8 attempt fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clinibox_common.bundled import REPO_ROOT
from engine.model_package import load_package
from phantoms.cases import write_cases
from tests.conversion.cookbook import EXAMPLES, load, on_path
from tests.conversion.test_bring_your_own import one_thread


def _convert(folder: Path, key: Path, out: str, extra: str) -> subprocess.CompletedProcess:
    toml = (folder / "convert.toml").read_text(encoding="utf-8")
    toml = toml.replace('targets = ["onnx"]', 'targets = ["arm-cpu"]')
    toml = toml.replace("\n[[heads]]", f"float_fallback = false\n{extra}\n\n[[heads]]", 1)
    (folder / f"{out}.toml").write_text(toml, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), CLINIBOX_QUIET="1",
               TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "clinibox", "convert", "--config",
                           f"{out}.toml", "--key", str(key), "--out", f"packages/{out}/1.0.0"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_a_detector_s_tflite_int8_the_quantiser_cannot_make(tmp_path, signing_key):
    folder = tmp_path / "yolo"
    shutil.copytree(EXAMPLES / "yolo", folder,
                    ignore=shutil.ignore_patterns("__pycache__", "data", "packages", "*.pt"))
    with on_path(folder), one_thread():
        train = load(folder, "train")
        write_cases(folder / "data" / "train", seed=11, count=120)
        write_cases(folder / "data" / "check", seed=12, count=80)
        torch.manual_seed(0)
        torch.save(train.train(folder / "data" / "train").state_dict(), folder / "yolo.pt")

    refused = _convert(folder, signing_key, "required", "accept_weak_model = true")
    assert refused.returncode != 0
    said = refused.stderr + refused.stdout
    assert "tflite-int8 (model.int8.tflite): the quantiser failed" in said, said[-3000:]
    assert "int8_optional = true" in said and "arm-cpu" in said

    run = _convert(folder, signing_key, "optional", "accept_weak_model = true\n"
                   "int8_optional = true")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    manifest = load_package(folder / "packages" / "optional" / "1.0.0",
                            [signing_key.with_suffix(".pub")]).manifest
    kinds = {(a["format"], a["precision"]) for a in manifest["artifacts"]}
    assert ("tflite", "fp32") in kinds and ("tflite", "int8") not in kinds, kinds
    [left] = manifest["provenance"]["left_out"]
    assert left["kind"] == "tflite-int8" and left["profiles"] == ["arm-cpu"]
    assert left["reason"].startswith("the quantiser could not make this INT8 artifact")
    assert left["failures"][0].startswith("the quantiser failed: "), left
    assert not (folder / "packages" / "optional" / "1.0.0" / "model.int8.tflite").exists()
    report = (folder / "packages" / "optional" / "1.0.0" / "report.html").read_text()
    assert "the quantiser failed" in report
