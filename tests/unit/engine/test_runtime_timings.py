"""The service's runtime choice: candidates timed in a child process, kept between starts.

The bundled demo package (phantom-trained, not for clinical use) on this
machine's real runtimes. The memory point is checked in a fresh interpreter
(this test process has long imported every runtime): after the choice only
the winner's runtime is imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.model_package import load_package
from engine.runtime import selection
from engine.runtime.timings_cache import read_timings, timings_key
from engine.settings import RuntimeConfig
from firmware_app.models.store import resolve_package_root
from firmware_app.settings.box import Config

REPO = Path(__file__).resolve().parents[3]
#: the top-level module each backend imports
MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tflite": "ai_edge_litert"}


@pytest.fixture(scope="module")
def package():
    config = Config()
    return load_package(resolve_package_root(config), config.trusted_key_paths)


@pytest.mark.slow
def test_a_fresh_service_loads_only_the_winning_runtime_and_keeps_the_timings(tmp_path):
    timings = tmp_path / "timings.json"
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from firmware_app.settings.box import Config
        from engine.model_package import load_package
        from firmware_app.models.store import resolve_package_root
        from engine.runtime.selection import select_backend
        config = Config()
        package = load_package(resolve_package_root(config), config.trusted_key_paths)
        loaded = select_backend(package, config.runtime, timings=Path({str(timings)!r}))
        runtimes = sorted({{m.split(".")[0] for m in sys.modules}} & {set(MODULES.values())!r})
        children = [c for task in Path("/proc/self/task").iterdir()
                    for c in (task / "children").read_text().split()]
        print(json.dumps({{"label": loaded.label, "backend": loaded.label.split(":")[0],
                          "reason": loaded.reason, "runtimes": runtimes, "children": children,
                          "measured": sorted(loaded.ms_per_run)}}))
    """)

    def start() -> dict:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              cwd=REPO, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = start()
    assert "timed in a child process" in first["reason"]
    assert first["runtimes"] == [MODULES[first["backend"]]]  # the losers never loaded
    assert first["children"] == []  # the timing process is gone, and left no helper behind
    assert len(first["measured"]) > 1 and timings.exists()
    second = start()  # the same package, CPU and runtimes: no timing at all
    assert "timed at an earlier start" in second["reason"]
    assert (second["label"], second["measured"]) == (first["label"], first["measured"])
    assert second["runtimes"] == [MODULES[second["backend"]]]


def test_kept_timings_choose_and_a_change_of_settings_measures_again(
        tmp_path, package, monkeypatch):
    timings, runtime = tmp_path / "timings.json", RuntimeConfig()
    pairs = selection._every_pair(package, runtime)
    fastest = next(k for k in pairs if k[0] == "onnxruntime")
    fake = [(k, p, 1.0 if (k, p) == fastest else 5.0) for k, p in pairs]
    calls = []

    def child(package, config, budget_s):
        calls.append(config)
        return fake, {}

    monkeypatch.setattr(selection, "measure_in_child", child)
    loaded = selection.select_backend(package, runtime, timings=timings)
    assert (loaded.label.split(":")[0], str(loaded.artifact.path)) == fastest
    assert read_timings(timings, timings_key(package, runtime))["timings"] == [list(t)
                                                                              for t in fake]
    loaded.close()
    kept = selection.select_backend(package, runtime, timings=timings)
    assert len(calls) == 1 and kept.label == loaded.label and "earlier start" in kept.reason
    kept.close()
    other = RuntimeConfig(threads=2)
    assert timings_key(package, other) != timings_key(package, runtime)
    selection.select_backend(package, other, timings=timings).close()
    assert len(calls) == 2  # another setting: measured again


@pytest.mark.slow
def test_a_child_that_cannot_run_falls_back_to_timing_in_the_service(
        tmp_path, package, monkeypatch):
    def broken(*_args):
        raise ChildProcessError("a sandbox refused the child")

    monkeypatch.setattr(selection, "measure_in_child", broken)
    loaded = selection.select_backend(package, RuntimeConfig(), timings=tmp_path / "t.json",
                                      budget_s=0.2)
    assert "timed" not in loaded.reason and len(loaded.ms_per_run) > 1
    assert not (tmp_path / "t.json").exists()
    loaded.close()


#: imported first by every interpreter started with its folder on PYTHONPATH: ONNX Runtime
#: dies of a segmentation fault on loading the artifact named in CLINIBOX_TEST_SEGFAULT_ON
CRASHING_RUNTIME = """
import os, signal
from engine.runtime import onnxruntime as backend

loads = backend.OnnxRuntimeBackend.load


def load(self, artifact, **kwargs):
    if os.path.basename(str(artifact)) == os.environ.get("CLINIBOX_TEST_SEGFAULT_ON"):
        os.kill(os.getpid(), signal.SIGSEGV)
    return loads(self, artifact, **kwargs)


backend.OnnxRuntimeBackend.load = load
"""


@pytest.mark.slow
def test_a_runtime_that_crashes_in_the_timing_process_is_skipped_never_loaded_here(
        tmp_path, package, monkeypatch):
    """A runtime that crashes on this CPU or on an artifact (OpenVINO's CPU plugin died so
    compiling an INT8 graph on an AMD EPYC) kills the timing process, not the service:
    each candidate is then timed alone, and the crashing one is skipped, kept so."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CRASHING_RUNTIME)
    monkeypatch.setenv("PYTHONPATH", f"{hook}:{REPO}")
    monkeypatch.setenv("CLINIBOX_TEST_SEGFAULT_ON", "model.int8.onnx")
    runtime, timings = RuntimeConfig(precision="int8"), tmp_path / "t.json"
    loaded = selection.select_backend(package, runtime, timings=timings, budget_s=0.5)
    crashed = "onnxruntime:onnx/int8 (model.int8.onnx)"
    assert crashed in loaded.skipped and "crashed" in loaded.skipped[crashed]
    assert "SIGSEGV" in loaded.skipped[crashed] or "-11" in loaded.skipped[crashed]
    assert crashed not in loaded.ms_per_run and len(loaded.ms_per_run) >= 3
    assert loaded.label != crashed and "timed in a child process" in loaded.reason
    loaded.close()
    kept = read_timings(timings, timings_key(package, runtime))
    assert crashed in kept["skipped"]
    assert all(path != str(package.root / "model.int8.onnx") or key != "onnxruntime"
               for key, path, _ms in kept["timings"])


@pytest.mark.slow
def test_the_self_test_keeps_the_timings_the_service_starts_from(tmp_path, monkeypatch):
    """`clinibox selftest` times the candidates as the service would and keeps them, so the
    next `clinibox serve` loads the winner at once; a package moved to another folder (its
    artifacts are kept by path) is timed again."""
    import shutil

    from engine.golden import load_verified
    from firmware_app.models.store import runtime_timings_path
    from firmware_app.ops.selftest import check_golden_cases

    config = Config()
    config.storage.state_dir = str(tmp_path / "state")
    config.state_dir.mkdir()
    package = load_package(resolve_package_root(config), config.trusted_key_paths)
    check = check_golden_cases(config, package)
    assert check.status == "PASS", check.detail
    path = runtime_timings_path(config, package.name)
    assert read_timings(path, timings_key(package, config.runtime)) is not None

    def no_child(*args):
        raise AssertionError("the service timed again after the self-test")

    monkeypatch.setattr(selection, "measure_in_child", no_child)
    loaded, _report = load_verified(package, config.runtime, path)
    assert "earlier start" in loaded.reason
    loaded.close()
    moved_root = tmp_path / "moved" / package.name / package.version
    shutil.copytree(package.root, moved_root)
    moved = load_package(moved_root, config.trusted_key_paths)
    assert timings_key(moved, config.runtime) != timings_key(package, config.runtime)
