"""The backend registry and the choice of backend + artifact for a model package.

Packages here are built in memory around the real fixture models
(tests/fixtures/runtime); selection trusts that the package was verified
already, so they carry no signature.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clinibox_common.contracts.manifest import Artifact, ModelPackage
from engine.runtime import registry, selection
from engine.runtime.base import BackendUnavailable
from engine.runtime.onnxruntime import OnnxRuntimeBackend
from engine.runtime.openvino import OpenVinoBackend
from engine.runtime.selection import Candidate, SelectionError, choose_fastest
from engine.runtime.tflite import TfliteBackend
from engine.settings import RuntimeConfig

FIXTURES = Path(__file__).resolve().parent.parent.parent / "fixtures" / "runtime"
ARTIFACTS = {
    "onnx/fp32": ("onnx", "fp32", "tiny_lesion.onnx", ()),
    "onnx/int8": ("onnx", "int8", "tiny_lesion.int8.onnx", ()),
    "openvino-ir/fp32": ("openvino-ir", "fp32", "tiny_lesion.xml", ("tiny_lesion.bin",)),
    "tflite/fp32": ("tflite", "fp32", "tiny_lesion.tflite", ()),
    "tflite/int8": ("tflite", "int8", "tiny_lesion.int8.tflite", ()),
}
ALL_CANDIDATES = {
    "onnxruntime:onnx/fp32",
    "openvino:onnx/fp32",
    "onnxruntime:onnx/int8",
    "openvino:onnx/int8",
    "openvino:openvino-ir/fp32",
    "tflite:tflite/fp32",
    "tflite:tflite/int8",
}
OUTPUTS = [
    {"name": "heatmap", "meaning": "lesion heatmap"},
    {"name": "lesion_logit", "meaning": "study-level logit"},
]


def package(labels=tuple(ARTIFACTS), root: Path = FIXTURES, outputs=None) -> ModelPackage:
    """A package holding the fixture artifacts named by ``labels``."""
    manifest: dict[str, Any] = {
        "name": "tiny-lesion",
        "version": "1.0",
        "inputs": [
            {
                "name": "image",
                "shape": [1, 1, 128, 128],
                "dtype": "float32",
                "layout": "NCHW",
                "normalisation": {"mean": 0.5, "std": 0.25},
            }
        ],
        "outputs": outputs or OUTPUTS,
        "artifacts": [
            {
                "format": fmt,
                "precision": precision,
                "path": path,
                "files": {f: "unchecked" for f in (path, *extra)},
            }
            for fmt, precision, path, extra in (ARTIFACTS[label] for label in labels)
        ],
    }
    return ModelPackage(root=root, manifest=manifest, signer="test")


def config(**kwargs) -> RuntimeConfig:
    """A RuntimeConfig with two threads (this machine's cores) unless given."""
    kwargs.setdefault("threads", 2)
    return RuntimeConfig(**kwargs)


def without(monkeypatch, *modules: str) -> None:
    """Make ``import <module>`` fail, as on a box without that package."""
    for name in list(sys.modules):
        if any(name == m or name.startswith(m + ".") for m in modules):
            monkeypatch.delitem(sys.modules, name)
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


# -- registry ----------------------------------------------------------------
def test_registry_format_table_matches_the_backend_classes():
    assert registry.FORMATS == {
        "onnxruntime": ("onnx",),
        "openvino": ("openvino-ir", "onnx"),
        "tflite": ("tflite",),
    }
    classes = {
        "onnxruntime": OnnxRuntimeBackend,
        "openvino": OpenVinoBackend,
        "tflite": TfliteBackend,
    }
    for key, cls in classes.items():
        assert registry.backend_class(key) is cls
        assert cls.key == key and cls.formats == registry.FORMATS[key]
    assert registry.backends_for_format("onnx") == ["onnxruntime", "openvino"]
    assert registry.backends_for_format("tflite") == ["tflite"]


def test_every_backend_is_available_on_this_machine():
    assert registry.available_backends() == ["onnxruntime", "openvino", "tflite"]


@pytest.mark.parametrize(
    ("key", "modules", "extra"),
    [
        ("onnxruntime", ("onnxruntime",), "onnxruntime is a core dependency"),
        ("openvino", ("openvino",), "pip install 'clinibox[openvino]'"),
        ("tflite", ("ai_edge_litert", "tflite_runtime"), "pip install 'clinibox[tflite]'"),
    ],
)
def test_missing_package_gives_backend_unavailable_naming_the_extra(
    monkeypatch, key, modules, extra
):
    cls = registry.backend_class(key)
    without(monkeypatch, *modules)
    assert cls.is_available() is False  # and it does not raise
    with pytest.raises(BackendUnavailable, match=extra.replace("[", r"\[").replace("]", r"\]")):
        registry.create_backend(key)
    assert key not in registry.available_backends()


def test_unknown_backend_key_is_refused():
    with pytest.raises(ValueError, match="unknown runtime backend 'tensorrt'"):
        registry.backend_class("tensorrt")


# -- the decision, with injected timings ---------------------------------------
def _candidate(backend: str, fmt: str, precision: str) -> Candidate:
    return Candidate(backend, Artifact(fmt, precision, Path(f"m.{precision}"), {}))


def test_choose_fastest_takes_the_lowest_time():
    fp32 = _candidate("onnxruntime", "onnx", "fp32")
    int8 = _candidate("openvino", "onnx", "int8")
    tfl = _candidate("tflite", "tflite", "fp32")
    assert choose_fastest([(fp32, 20.0), (int8, 12.0), (tfl, 15.0)]) is int8
    assert choose_fastest([(fp32, 9.0), (int8, 12.0), (tfl, 15.0)]) is fp32
    assert choose_fastest([(tfl, 5.0), (fp32, 6.0)]) is tfl


def test_int8_wins_over_fp32_only_when_measurably_faster():
    fp32 = _candidate("onnxruntime", "onnx", "fp32")
    int8 = _candidate("onnxruntime", "onnx", "int8")
    assert choose_fastest([(int8, 9.9), (fp32, 10.0)]) is fp32  # within 5 %: a tie
    assert choose_fastest([(int8, 8.0), (fp32, 10.0)]) is int8
    assert choose_fastest([(int8, 9.9), (fp32, 10.0)], tolerance=0.0, tie_ms=0.0) is int8
    with pytest.raises(ValueError):
        choose_fastest([])


def test_a_near_tie_in_speed_goes_to_the_runtime_that_holds_less_memory():
    """The demo model on this Xeon: OpenVINO FP32 1.594 ms, TFLite FP32 1.600 ms; OpenVINO
    would add about 60 MB to the service for 0.4 % of speed."""
    openvino = _candidate("openvino", "onnx", "fp32")
    tfl = _candidate("tflite", "tflite", "fp32")
    ort = _candidate("onnxruntime", "onnx", "fp32")
    assert choose_fastest([(openvino, 1.594), (tfl, 1.600), (ort, 2.07)]) is tfl
    assert choose_fastest([(openvino, 1.594), (ort, 1.62)]) is ort
    assert choose_fastest([(openvino, 1.00), (tfl, 1.600)]) is openvino  # clearly faster
    int8 = _candidate("tflite", "tflite", "int8")
    assert choose_fastest([(openvino, 1.594), (int8, 1.58)]) is openvino  # precision first


def test_a_difference_the_pipeline_cannot_see_is_a_tie():
    """The demo model on the Intel Xeon with AMX: OpenVINO INT8 0.53 ms, TFLite FP32
    0.86 ms; they drained about 83 and 80 CT slices a second (each instance costs the box
    about 10 ms besides the model), and OpenVINO held 67 MB more in the service."""
    ov_int8 = _candidate("openvino", "openvino-ir", "int8")
    ov_fp32 = _candidate("openvino", "openvino-ir", "fp32")
    tfl = _candidate("tflite", "tflite", "fp32")
    tfl_int8 = _candidate("tflite", "tflite", "int8")
    measured = [(ov_int8, 0.53), (ov_fp32, 0.73), (tfl, 0.86), (tfl_int8, 1.09)]
    assert choose_fastest(measured) is tfl  # within 0.5 ms: fp32, then the lighter runtime
    assert choose_fastest(measured, tie_ms=0.0) is ov_int8  # 0.53 ms is clearly the fastest
    # on a real-size model the relative rule decides: 1.5 ms of 10.3 is not a tie
    assert choose_fastest([(ov_int8, 10.3), (tfl, 11.8)]) is ov_int8
    assert choose_fastest([(ov_int8, 10.3), (tfl, 10.7)]) is tfl


# -- explicit configuration ----------------------------------------------------
@pytest.mark.parametrize(
    ("backend", "precision", "label"),
    [
        ("onnxruntime", "int8", "onnxruntime:onnx/int8"),
        ("tflite", "int8", "tflite:tflite/int8"),
        ("onnxruntime", "fp32", "onnxruntime:onnx/fp32"),
    ],
)
def test_explicit_backend_and_precision_are_honoured(backend, precision, label):
    loaded = selection.select_backend(
        package(), config(backend=backend, precision=precision), budget_s=0.1
    )
    assert loaded.label == label
    assert loaded.backend.key == backend and loaded.artifact.precision == precision
    assert list(loaded.ms_per_run) == [label]
    assert f"backend={backend} and precision={precision} set in [runtime]" in loaded.reason
    out = loaded.backend.infer(selection.sample_inputs(package()))
    assert out["heatmap"].shape == (1, 1, 32, 32)


def test_explicit_backend_with_auto_precision_measures_what_it_can_run():
    loaded = selection.select_backend(
        package(), config(backend="openvino", precision="fp32"), budget_s=0.1
    )
    assert set(loaded.ms_per_run) == {"openvino:onnx/fp32", "openvino:openvino-ir/fp32"}
    assert loaded.backend.key == "openvino"
    assert loaded.label in loaded.ms_per_run


def test_missing_precision_is_a_clear_error():
    with pytest.raises(SelectionError, match=r"no int8 artifact \(it has onnx/fp32, tflite/fp32\)"):
        selection.select_backend(package(["onnx/fp32", "tflite/fp32"]), config(precision="int8"))
    with pytest.raises(SelectionError, match="no fp16 artifact"):
        selection.select_backend(package(), config(precision="fp16"))


def test_backend_without_a_matching_artifact_is_a_clear_error():
    with pytest.raises(SelectionError, match="no int8 artifact that openvino can run"):
        selection.select_backend(
            package(["onnx/fp32", "tflite/int8"]), config(backend="openvino", precision="int8")
        )
    with pytest.raises(SelectionError, match="onnxruntime can run"):
        selection.select_backend(package(["tflite/fp32"]), config(backend="onnxruntime"))


def test_explicit_backend_that_is_not_installed_names_the_extra(monkeypatch):
    without(monkeypatch, "openvino")
    with pytest.raises(BackendUnavailable, match=r"clinibox\[openvino\]"):
        selection.select_backend(package(), config(backend="openvino"))


def test_auto_leaves_out_a_backend_that_is_not_installed(monkeypatch):
    without(monkeypatch, "openvino")
    found = selection.candidates(package(), config())
    assert {c.label for c in found} == ALL_CANDIDATES - {
        "openvino:onnx/fp32",
        "openvino:onnx/int8",
        "openvino:openvino-ir/fp32",
    }


@pytest.mark.parametrize("machine", ["aarch64", "arm64"])
def test_on_arm_openvino_is_not_given_onnx_runtimes_int8_onnx(monkeypatch, machine):
    """Found wrong there by `clinibox cpu-check` (QEMU's Cortex-A72 and Neoverse-N1)."""
    assert {c.label for c in selection.candidates(package(), config())} == ALL_CANDIDATES
    monkeypatch.setattr(selection.platform, "machine", lambda: machine)
    found = {c.label for c in selection.candidates(package(), config())}
    assert found == ALL_CANDIDATES - {"openvino:onnx/int8"}
    assert "onnxruntime:onnx/int8" in found and "openvino:onnx/fp32" in found


def test_two_artifacts_of_one_format_and_precision_get_distinct_labels(tmp_path):
    for name in ("a.onnx", "b.onnx"):
        shutil.copy(FIXTURES / "tiny_lesion.onnx", tmp_path / name)
    pkg = package(["onnx/fp32"], root=tmp_path)
    pkg.manifest["artifacts"] = [
        {"format": "onnx", "precision": "fp32", "path": name, "files": {name: "unchecked"}}
        for name in ("a.onnx", "b.onnx")
    ]
    loaded = selection.select_backend(pkg, config(backend="onnxruntime"), budget_s=0.1)
    assert set(loaded.ms_per_run) == {
        "onnxruntime:onnx/fp32 (a.onnx)",
        "onnxruntime:onnx/fp32 (b.onnx)",
    }
    assert loaded.label in loaded.ms_per_run


def test_manifest_output_shapes_reach_the_backend():
    outputs = [
        {"name": "lesion_logit", "shape": [1, 1]},
        {"name": "heatmap", "shape": [1, 1, 32, 32]},
    ]
    pkg = package(["tflite/fp32"], outputs=outputs)
    loaded = selection.select_backend(pkg, config(), budget_s=0.1)
    out = loaded.backend.infer(selection.sample_inputs(pkg))
    assert list(out) == ["lesion_logit", "heatmap"]
    assert out["lesion_logit"].shape == (1, 1)


# -- failures while loading ------------------------------------------------------
def _copy_with_corrupt(tmp_path: Path, corrupt: list[str]) -> Path:
    for label, (_, _, path, extra) in ARTIFACTS.items():
        for name in (path, *extra):
            shutil.copy(FIXTURES / name, tmp_path / name)
        if label in corrupt:
            (tmp_path / path).write_bytes(b"corrupted in transit" * 50)
    return tmp_path


def test_a_candidate_that_fails_to_load_is_skipped_and_logged(tmp_path, caplog):
    root = _copy_with_corrupt(tmp_path, ["onnx/int8"])
    with caplog.at_level(logging.WARNING, logger="engine.runtime.selection"):
        loaded = selection.select_backend(
            package(["onnx/fp32", "onnx/int8"], root=root), config(), budget_s=0.1
        )
    assert set(loaded.skipped) == {"onnxruntime:onnx/int8", "openvino:onnx/int8"}
    assert "ArtifactLoadError" in loaded.skipped["onnxruntime:onnx/int8"]
    assert set(loaded.ms_per_run) == {"onnxruntime:onnx/fp32", "openvino:onnx/fp32"}
    assert loaded.artifact.label == "onnx/fp32"
    assert "onnxruntime:onnx/int8 skipped" in caplog.text
    assert any("skipped" in line for line in loaded.status_lines())


def test_when_nothing_loads_every_reason_is_given(tmp_path):
    root = _copy_with_corrupt(tmp_path, ["onnx/int8", "tflite/int8"])
    with pytest.raises(SelectionError) as error:
        selection.select_backend(package(["onnx/int8", "tflite/int8"], root=root), config())
    message = str(error.value)
    for label in ("onnxruntime:onnx/int8", "openvino:onnx/int8", "tflite:tflite/int8"):
        assert label in message
    assert "cannot load tiny_lesion.int8.tflite" in message


# -- the real measurement ----------------------------------------------------------
@pytest.mark.slow
def test_auto_measures_every_candidate_and_keeps_the_fastest():
    pkg = package()
    began = time.perf_counter()
    loaded = selection.select_backend(pkg, config())
    elapsed = time.perf_counter() - began
    assert set(loaded.ms_per_run) == ALL_CANDIDATES
    assert all(0 < ms < 100 for ms in loaded.ms_per_run.values())
    by_label = {
        f"{k}:{a.label}": Candidate(k, a)
        for k in registry.FORMATS
        for a in pkg.artifacts
        if a.format in registry.FORMATS[k]
    }
    expected = choose_fastest([(by_label[lbl], ms) for lbl, ms in loaded.ms_per_run.items()])
    assert loaded.label == expected.label
    assert loaded.reason.startswith("auto; fastest of 7 measured here")
    assert loaded.skipped == {}
    out = loaded.backend.infer(selection.sample_inputs(pkg))  # the winner stays loaded
    assert np.isfinite(out["lesion_logit"]).all()
    assert elapsed < 4.0, f"auto choice took {elapsed:.1f} s"  # ~1.2 s here when idle
    print("\n".join(loaded.status_lines()))


def test_sample_input_has_the_manifest_shape_and_dtype():
    inputs = selection.sample_inputs(package())
    assert list(inputs) == ["image"]
    assert inputs["image"].shape == (1, 1, 128, 128) and inputs["image"].dtype == np.float32
