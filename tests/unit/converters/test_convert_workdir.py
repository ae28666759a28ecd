"""The converter's working folder is keyed by the run's inputs: work made from other inputs
(another --targets, other weights, another gate) is never reused or packaged; the command
line and convert.toml name every option alike."""

from __future__ import annotations

import argparse
import json

import pytest

from converters import formats
from converters.cli import build_parser
from converters.config import (
    FIELDS,
    NEGATED,
    RUN_OPTIONS,
    ConvertConfig,
    ConvertConfigError,
    build,
    load_toml,
)
from converters.pipeline import Conversion
from converters.workdir import StaleWorkError, describe_left, run_inputs


def _config(tmp_path, **changes) -> ConvertConfig:
    (tmp_path / "weights.pt").write_bytes(changes.pop("weights_bytes", b"weights one"))
    values = {"out": tmp_path / "out", "model": "tests.conversion.tiny_models:tiny_classifier",
              "weights": tmp_path / "weights.pt", "targets": ["onnx", "x86-cpu"],
              **changes}
    return ConvertConfig(**values)


def _earlier_run(config: ConvertConfig) -> Conversion:
    """What a run that failed after its exports leaves: records and their files."""
    conv = Conversion(config)
    for kind in formats.kinds_for(config.targets):
        for rel in (kind.path, *kind.companions):
            (conv.out / rel).parent.mkdir(parents=True, exist_ok=True)
            (conv.out / rel).write_bytes(b"artifact")
        conv.record_artifact(kind, {"method": "test"})
    conv.state["steps"]["heatmap"] = {"added": False}
    conv.save_state()
    return conv


def test_a_rerun_with_other_targets_packages_nothing_of_the_earlier_run(tmp_path):
    earlier = _earlier_run(_config(tmp_path))
    assert "openvino-fp32" in {r.kind for r in earlier.records()}
    rerun = Conversion(_config(tmp_path, targets=["onnx"]))
    assert any(line.startswith("targets: ['onnx', 'x86-cpu'] then") for line in rerun.stale)
    with pytest.raises(StaleWorkError, match="targets") as refused:  # a single step
        rerun.claim("package")
    assert "clinibox convert" in str(refused.value)
    removed = rerun.start_afresh()  # what the whole chain does first
    assert "openvino/model.fp32.xml" in removed and "openvino/model.fp32.bin" in removed
    assert rerun.records() == [] and rerun.state["steps"] == {}
    assert not (rerun.out / "openvino" / "model.fp32.xml").exists()
    assert not (rerun.out / "model.int8.onnx").exists()
    rerun.claim("export")  # now its own
    assert Conversion(_config(tmp_path, targets=["onnx"])).stale == []


@pytest.mark.parametrize("change", [
    {"weights_bytes": b"weights two"},
    {"gate": {"int8_min_agreement": 0.9}},
    {"factory_kwargs": {"classes": 3}},
    {"calibration_size": 64},
])
def test_work_from_other_weights_gate_or_settings_is_stale(tmp_path, change):
    _earlier_run(_config(tmp_path))
    assert Conversion(_config(tmp_path, **change)).stale


def test_package_only_settings_continue_the_same_work(tmp_path):
    _earlier_run(_config(tmp_path))
    later = Conversion(_config(tmp_path, accept_weak_model=True, name="other", version="2.0.0",
                               floor_auc=0.5, key=tmp_path / "k.pem"))
    assert later.stale == [] and len(later.records()) == 4
    later.claim("package")


def test_work_recorded_without_its_inputs_is_not_reused(tmp_path):
    conv = _earlier_run(_config(tmp_path))
    conv.state.pop("inputs")
    (conv.work / "state.json").write_text('{"steps": {"export": {}}, "artifacts": [], '
                                          '"metrics": {}, "benchmarks": {}}')
    assert Conversion(_config(tmp_path)).stale == ["the inputs it was made from (not recorded)"]


def test_the_model_and_weights_are_keyed_by_their_contents(tmp_path):
    one = run_inputs(_config(tmp_path))
    assert run_inputs(_config(tmp_path)) == one
    two = run_inputs(_config(tmp_path, weights_bytes=b"weights two"))
    assert two["weights"] != one["weights"] and len(one["weights"]) == 64
    assert "tiny_classifier (" in one["model"]  # the module's file hashed too
    assert "out" not in one and "key" not in one


def test_a_failed_run_says_what_it_left_and_where(tmp_path):
    conv = _earlier_run(_config(tmp_path))
    text = describe_left(conv.work, conv.state)
    assert str(conv.work) in text and "steps done: heatmap" in text
    assert "openvino/model.int8.xml" in text and "start afresh" in text


def _dest(action: argparse.Action) -> str:
    return action.option_strings[-1].lstrip("-").replace("-", "_")


def test_every_command_line_option_has_its_file_key_and_every_file_key_its_option():
    actions = [a for a in build_parser()._actions
               if a.option_strings and a.dest != "help"]
    file_keys = {_dest(a) for a in actions} - set(RUN_OPTIONS)
    assert {"no_heatmap", "input_shape", "keep_work"} <= {_dest(a) for a in actions}
    accepted = set(FIELDS) | set(NEGATED)
    assert file_keys - accepted == set()
    # a file key without an option is a table or a list the command line cannot spell
    file_only = set(FIELDS) - {NEGATED.get(k, k) for k in file_keys}
    assert file_only == {"output_meanings", "split", "preprocessing", "preprocessing_params",
                         "postprocessing", "postprocessing_params", "heads", "thresholds",
                         "task", "gate", "float_fallback", "int8_guard_band", "int8_optional",
                         "stage"}


SAMPLES = {"factory_kwargs": '{"classes": 3}', "teacher_kwargs": '{"width": 4}',
           "input_shape": "1,48,48", "targets": "onnx,arm-cpu", "activation": "softmax",
           "prune": "0.5", "max_student_mac_ratio": "0.3", "target_sensitivity": "0.9",
           "floor_auc": "0.7", "floor_sensitivity": "0.85", "alpha": "0.4"}


def test_each_option_gives_the_same_setting_from_the_file_as_from_the_command_line(tmp_path):
    parser = build_parser()
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        key = _dest(action)
        if key in RUN_OPTIONS:
            continue
        if action.nargs == 0:
            argv, toml = [action.option_strings[-1]], f"{key} = true\n"
        else:
            text = SAMPLES.get(key, "7" if action.type in (int, float) else "x")
            argv = [action.option_strings[-1], text]
            value = json.loads(text) if text.startswith("{") else text
            toml = f"{key} = {_toml(value, action.type)}\n"
        (tmp_path / "convert.toml").write_text(toml)
        from_cli = build({}, {k: v for k, v in vars(parser.parse_args(argv)).items()
                              if k != "step" and k not in RUN_OPTIONS})
        from_file = build(load_toml(tmp_path / "convert.toml"), {})
        assert from_file == from_cli, (key, toml)


def _toml(value, kind) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {v}" for k, v in value.items()) + "}"
    if kind in (int, float):
        return str(kind(value))
    return f'"{value}"'


def test_no_heatmap_in_the_file_is_the_switch_the_docs_promise(tmp_path):
    (tmp_path / "convert.toml").write_text("no_heatmap = true\n")
    assert build(load_toml(tmp_path / "convert.toml"), {}).heatmap is False
    (tmp_path / "convert.toml").write_text("no-heatmap = false\n")
    assert build(load_toml(tmp_path / "convert.toml"), {}).heatmap is True
    (tmp_path / "convert.toml").write_text("no_heatmap = true\nheatmap = true\n")
    with pytest.raises(ConvertConfigError, match="both set"):
        load_toml(tmp_path / "convert.toml")
    (tmp_path / "convert.toml").write_text('no_heatmap = "yes"\n')
    with pytest.raises(ConvertConfigError, match="true or false"):
        load_toml(tmp_path / "convert.toml")
