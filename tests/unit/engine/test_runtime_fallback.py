"""A chosen artifact that fails its golden cases costs speed, never the box.

On an AVX2 CPU without VNNI the old demo INT8 artifact gave one answer for
every image (ONNX Runtime's u8×s8 kernel saturated). ``blind_int8`` rebuilds
that symptom on any CPU: the package's INT8 artifact multiplies its input by
zero. A box told to run ``onnxruntime``/``int8`` must come up on a verified
artifact, say so (log, status, device event for the hospital), and decide
like FP32; it refuses only when nothing passes.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from engine.golden import GoldenCasesFailed, check_golden, load_verified
from engine.model_package import load_package
from engine.runtime.selection import LoadedModel
from firmware_app.service.appliance import load_runner
from firmware_app.settings.box import Config, from_dict
from tests.model_packages import DEMO, DEMO_PRIVATE_KEY, make_package
from tests.unit.engine.test_runtime_timings import CRASHING_RUNTIME, REPO

INT8_ORT = "onnxruntime:onnx/int8"
FP32_ORT = "onnxruntime:onnx/fp32"


def box(tmp_path: Path, package_root: Path, precision: str = "int8") -> Config:
    return from_dict({"storage": {"state_dir": str(tmp_path / "state")},
                      "models": {"dir": str(package_root.parent.parent),
                                 "version": package_root.name},
                      "runtime": {"backend": "onnxruntime", "precision": precision}})


def outbox_events(config: Config) -> list[dict]:
    conn = sqlite3.connect(config.database_path)
    try:
        return [json.loads(r[0]) for r in conn.execute(
            "SELECT payload FROM outbox WHERE kind = 'event' ORDER BY seq")]
    finally:
        conn.close()


def public_key() -> Path:
    return DEMO_PRIVATE_KEY.with_suffix(".pub")


@pytest.mark.slow
def test_a_blind_int8_artifact_fails_its_golden_cases_and_fp32_takes_over(tmp_path, caplog):
    root = make_package(tmp_path / "packages", "1.0.1", blind_int8=True)
    package = load_package(root, [public_key()])
    runtime = box(tmp_path, root).runtime
    with caplog.at_level(logging.WARNING, logger="engine.golden"):
        loaded, report = load_verified(package, runtime)
    try:
        assert loaded.label == FP32_ORT
        assert report.passed and report.backend_label == FP32_ORT
        assert list(loaded.fell_back_from) == [INT8_ORT]
        assert "OUT OF TOLERANCE" in loaded.fell_back_from[INT8_ORT]
        assert "fell back" in report.describe() and INT8_ORT in report.describe()
        assert any("fails its golden cases" in r.getMessage() for r in caplog.records)
        assert any(INT8_ORT in line and "fell back" in line for line in loaded.status_lines())
    finally:
        loaded.close()


@pytest.mark.slow
def test_the_box_comes_up_says_so_and_decides_like_fp32(tmp_path):
    root = make_package(tmp_path / "packages", "1.0.1", blind_int8=True)
    config = box(tmp_path, root)
    runner = load_runner(config)
    reference = load_runner(box(tmp_path / "ref", root, precision="fp32"))
    try:
        # the first stage fell back to FP32; its second stage (FP32 only) runs beside it
        assert runner.backend_label == f"{FP32_ORT} + {FP32_ORT}"
        event = outbox_events(config)[-1]
        assert (event["event"], event["reason"]) == ("runtime_fallback", "golden_cases_failed")
        assert event["model"] == "clinibox-demo-lesion@1.0.1"
        conn = sqlite3.connect(config.database_path)
        notes = [r[0] for r in conn.execute("SELECT message FROM events")]
        conn.close()
        assert any(INT8_ORT in n and FP32_ORT in n for n in notes)  # the device page's list
        rng = np.random.default_rng(3)
        for case in [*load_package(root, [public_key()]).manifest["golden_cases"]]:
            image = np.load(root / case["input"])[0, 0]
            image = (image - image.min()) / max(float(np.ptp(image)), 1e-6)
            got, want = runner.run(image)[0], reference.run(image)[0]
            assert got.probability == pytest.approx(want.probability, abs=1e-5)
        for _ in range(4):
            image = rng.random((256, 256), dtype=np.float32)
            assert runner.run(image)[0].probability == pytest.approx(
                reference.run(image)[0].probability, abs=1e-5)
    finally:
        runner.backend.close()
        reference.backend.close()


@pytest.mark.slow
def test_the_demo_int8_artifact_runs_when_it_passes_here(tmp_path):
    """On a CPU where the INT8 artifact is right, ``int8`` keeps it (no fallback, no event)."""
    package = load_package(DEMO, [public_key()])
    config = box(tmp_path, DEMO)
    loaded, report = load_verified(package, config.runtime)
    try:
        assert report.passed and not loaded.fell_back_from
        assert loaded.artifact.precision == "int8"
    finally:
        loaded.close()


@pytest.mark.slow
def test_nothing_passes_refuses_with_every_reason(tmp_path):
    root = make_package(tmp_path / "packages", "1.0.1", failing_golden=True)
    package = load_package(root, [public_key()])
    with pytest.raises(GoldenCasesFailed) as refused:
        check_golden(package, box(tmp_path, root).runtime)
    text = str(refused.value)
    assert "no artifact of clinibox-demo-lesion@1.0.1 passes" in text
    assert INT8_ORT in text and FP32_ORT in text


def test_a_fallback_that_does_not_load_is_one_more_reason(tmp_path, monkeypatch):
    root = make_package(tmp_path / "packages", "1.0.1", blind_int8=True)
    package = load_package(root, [public_key()])
    import engine.golden as golden

    def broken(previous: LoadedModel, candidate, *args) -> LoadedModel:
        raise RuntimeError(f"{candidate.label} cannot be loaded (injected)")

    monkeypatch.setattr(golden, "load_fallback", broken)
    with pytest.raises(GoldenCasesFailed, match=r"does not load: RuntimeError"):
        check_golden(package, box(tmp_path, root).runtime)


@pytest.mark.slow
def test_a_fallback_that_crashes_its_runtime_is_never_loaded_into_the_service(
        tmp_path, monkeypatch):
    """A fallback nobody timed here is first run in a process of its own: ONNX Runtime dying
    of a segmentation fault on the FP32 artifact (in child interpreters only, by a
    ``sitecustomize`` hook) makes it a failure with its reason. This package has no other
    artifact, so the box refuses to run it and says why, where loading FP32 straight into
    the service would have killed the service (here: come up on it, as before the probe)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CRASHING_RUNTIME)
    monkeypatch.setenv("PYTHONPATH", f"{hook}:{REPO}")
    monkeypatch.setenv("CLINIBOX_TEST_SEGFAULT_ON", "model.fp32.onnx")
    root = make_package(tmp_path / "packages", "1.0.1", blind_int8=True)
    package = load_package(root, [public_key()])
    with pytest.raises(GoldenCasesFailed) as refused:
        load_verified(package, box(tmp_path, root).runtime)
    why = str(refused.value)
    assert f"{INT8_ORT}: 4/8 golden cases" in why and "OUT OF TOLERANCE" in why
    assert f"{FP32_ORT}: not loaded here: crashed the runtime's process" in why
    monkeypatch.delenv("CLINIBOX_TEST_SEGFAULT_ON")  # the same FP32 artifact, not crashing
    loaded, report = load_verified(package, box(tmp_path, root).runtime)
    try:
        assert report.passed and loaded.label == FP32_ORT
    finally:
        loaded.close()
