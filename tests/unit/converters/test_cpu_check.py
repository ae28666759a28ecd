"""`clinibox cpu-check`'s verdicts: what counts as wrong on another CPU, and what it says
when an emulator or the ARM Python is missing (the emulated runs themselves are in
tests/integration/test_cpu_check.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from converters import cpu_check
from converters.cpu_check import (
    CPU_CLASSES,
    ArtifactCheck,
    CpuReport,
    EmulationUnavailable,
    compare,
    describe,
    run_on,
)

MODEL = "clinic-model@1.0.0"


def _report(cpu: str, *checks: ArtifactCheck) -> CpuReport:
    return CpuReport(cpu, ["AVX2"], 1.0, list(checks))


def _check(label: str, passed: bool, loaded: bool = True, p: float = 0.5) -> ArtifactCheck:
    return ArtifactCheck(MODEL, label, passed, loaded, 1, [{"probability": p}],
                         "" if passed else ("does not load: refused" if not loaded
                                            else "golden/a.npy: OUT OF TOLERANCE"))


def test_a_wrong_answer_there_counts_and_a_refused_artifact_does_not():
    here = _report("this CPU", _check("ort:int8", True, p=0.70), _check("ov:int8-trt", False,
                                                                        loaded=False),
                   _check("ov:int8", True), _check("tflite:int8", True, p=0.2))
    there = _report("x86-64-v3", _check("ort:int8", False, p=0.05),
                    _check("ov:int8-trt", False, loaded=False),
                    _check("ov:int8", False, loaded=False), _check("tflite:int8", True, p=0.25))
    found = {d.label: d for d in compare(here, there)}
    assert found["ort:int8"].wrong and found["ort:int8"].regression
    assert found["ort:int8"].max_delta == pytest.approx(0.65)
    assert not found["ov:int8-trt"].wrong and not found["ov:int8-trt"].regression
    assert not found["ov:int8"].wrong and found["ov:int8"].regression  # refused there only
    assert not found["tflite:int8"].wrong
    assert found["tflite:int8"].max_delta == pytest.approx(0.05)
    text = "\n".join(describe(here, [there], list(found.values())))
    assert "FAILS THERE ONLY, at most 0.65 from this CPU" in text
    assert "not run (runs here): does not load: refused" in text
    assert "golden cases ok, at most 0.05 from this CPU" in text


def test_an_arm_class_without_its_python_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_check.shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(EmulationUnavailable, match=r"scripts/arm64-python\.sh"):
        run_on(CPU_CLASSES["armv8.0"], tmp_path, [], arm_python=tmp_path)


def test_a_missing_emulator_is_named_with_its_package(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_check.shutil, "which", lambda name: None)
    with pytest.raises(EmulationUnavailable, match=r"qemu-x86_64 is not installed.*qemu-user"):
        run_on(CPU_CLASSES["x86-64-v3"], tmp_path, [])


def test_the_arm_classes_cpuinfo_names_their_features():
    a72, n1 = CPU_CLASSES["armv8.0"].cpuinfo(), CPU_CLASSES["armv8.2-dotprod"].cpuinfo()
    assert a72.count("processor\t:") == 4 and "CPU part\t: 0xd08" in a72
    assert "asimddp" not in a72 and " asimddp" in n1


def test_the_cli_refuses_an_unknown_class(capsys):
    with pytest.raises(SystemExit):
        cpu_check.main([str(Path("models")), "--cpu", "pentium-4"])
    assert "pentium-4" in capsys.readouterr().err
