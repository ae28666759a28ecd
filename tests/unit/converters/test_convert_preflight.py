"""`clinibox convert` refuses missing options before any work, and names the package itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from converters.config import ConvertConfig, ConvertConfigError, default_name, preflight

ROOT = Path(__file__).resolve().parents[3]
PROBE = """
import sys
from clinibox.table import main
status = main(sys.argv[1:])
print("STATUS", status, "TORCH", "torch" in sys.modules)
"""


def _convert(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, "convert", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


@pytest.mark.smoke
def test_a_missing_key_is_refused_before_torch_is_imported_or_anything_written(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"not looked at")
    (tmp_path / "images").mkdir()
    run = _convert(tmp_path, "--model", "model.pt", "--data", "images", "--input-shape",
                   "1,64,64", "--out", "pkg")
    assert "STATUS 2 TORCH False" in run.stdout, run.stderr
    assert "convert needs --key" in run.stderr and "nothing was done" in run.stderr
    assert not (tmp_path / "pkg").exists()


def test_every_missing_option_is_named_at_once(tmp_path):
    run = _convert(tmp_path, "--out", "pkg")
    assert "STATUS 2 TORCH False" in run.stdout, run.stderr
    assert "--model, --input-shape, --data, --key" in run.stderr


@pytest.mark.parametrize("missing, words", [
    ("public", "nokey.pub does not exist"),
    ("model", "--model: net.pt does not exist"),
    ("data", "--data: images does not exist"),
])
def test_missing_files_are_refused_before_any_work(tmp_path, missing, words, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("nokey.pem", "nokey.pub", "net.pt"):
        if not name.startswith({"public": "nokey.pub", "model": "net"}.get(missing, "-")):
            (tmp_path / name).write_text("x")
    if missing != "data":
        (tmp_path / "images").mkdir()
    config = ConvertConfig(out=Path("pkg"), model="net.pt", input_shape=(1, 8, 8),
                           data="images", key=Path("nokey.pem"))
    with pytest.raises(ConvertConfigError, match=words):
        preflight(config, None)


def test_the_package_name_defaults_from_the_model(tmp_path):
    config = ConvertConfig(out=tmp_path, model="tests.models:tiny_classifier", key=None)
    preflight(config, "export")
    assert config.name == "tiny-classifier"
    assert default_name("nets/Lesion_V2.pt") == "lesion-v2"
    assert default_name("::") == "model"
    named = ConvertConfig(out=tmp_path, model="x:y", name="clinic-resnet")
    preflight(named, "export")
    assert named.name == "clinic-resnet"


def test_floors_and_the_target_sensitivity_come_from_the_file_or_the_command_line(tmp_path):
    from converters.cli import _config, build_parser

    (tmp_path / "convert.toml").write_text("floor_auc = 0.7\ntarget_sensitivity = 0.98\n"
                                           "accept_weak_model = true\nheatmap = false\n")
    defaults = _config(build_parser().parse_args([]))
    assert (defaults.floor_auc, defaults.floor_sensitivity, defaults.target_sensitivity) == (
        0.80, 0.90, 0.95)
    assert defaults.accept_weak_model is False and defaults.heatmap is True
    from_file = _config(build_parser().parse_args(["--config", str(tmp_path / "convert.toml"),
                                                   "--floor-sensitivity", "0.85"]))
    assert (from_file.floor_auc, from_file.floor_sensitivity) == (0.7, 0.85)
    assert from_file.target_sensitivity == 0.98
    assert from_file.accept_weak_model is True and from_file.heatmap is False
    flags = _config(build_parser().parse_args(["--accept-weak-model", "--no-heatmap"]))
    assert flags.accept_weak_model is True and flags.heatmap is False


@pytest.mark.parametrize(("argv", "words"), [
    (["--target-sensitivity", "0"], "target_sensitivity must lie in (0, 1]"),
    (["--floor-auc", "1.5"], "floor_auc must lie in [0, 1]"),
    (["--floor-sensitivity", "-0.1"], "floor_sensitivity must lie in [0, 1]"),
])
def test_out_of_range_floors_are_refused(argv, words):
    from converters.cli import _config, build_parser

    with pytest.raises(ConvertConfigError) as caught:
        _config(build_parser().parse_args(argv))
    assert words in str(caught.value)


@pytest.mark.parametrize("stage, words", [
    ({"model": "m:f", "outputs": ["c"], "heads": [{}], "crop": {}, "colour": 1},
     "stage.colour"),
    ({"model": "m:f", "outputs": ["c"]}, "[stage] needs heads, crop"),
    ("m:f", "must be a table"),
])
def test_a_second_stage_table_is_checked_for_its_keys(stage, words):
    from converters.config import build

    with pytest.raises(ConvertConfigError) as caught:
        build({"stage": stage}, {})
    assert words in str(caught.value)
    good = build({"stage": {"model": "m:f", "weights": "w.pt", "outputs": ["c"],
                            "heads": [{"kind": "classification"}], "crop": {"size": [32, 32]}}},
                 {})
    assert good.stage["weights"] == Path("w.pt")
