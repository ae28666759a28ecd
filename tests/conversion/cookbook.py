"""Run a model maker's cookbook example (``examples/model-makers/<family>``) as its page says.

:func:`run_example` copies the example's folder, runs its ``train.py``'s ``main()`` in this
process (with ``tests/torchvision_cpu`` loaded first for the torchvision examples: the
examples import torchvision as a workstation has it), then its page's command line
``clinibox convert --config convert.toml --key KEY --out packages/NAME/1.0.0`` in that folder;
:func:`install` runs ``clinibox model install`` on a box's config and loads that box's runner.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from clinibox_common.bundled import REPO_ROOT
from engine.inference.runner import ModelRunner
from engine.model_package import load_package
from firmware_app.service.appliance import load_runner
from firmware_app.settings import box as box_config
from tests.box_harness import Box
from tests.conversion.test_bring_your_own import one_thread

EXAMPLES = REPO_ROOT / "examples" / "model-makers"
# the convert command with torchvision's operators in pure PyTorch (tests/torchvision_cpu.py)
SHIMMED_CLI = ("from tests.torchvision_cpu import load; load(); import sys; "
               "from clinibox.table import main; sys.exit(main())")


@dataclass
class Example:
    """A trained and converted example: its folder, package, manifest and timings (s)."""

    folder: Path
    out: Path
    manifest: dict
    train_s: float
    convert_s: float
    convert_stdout: str


@contextlib.contextmanager
def on_path(folder: Path) -> Iterator[None]:
    """``folder`` importable (as ``python train.py`` there has it); its modules forgotten
    after, so that two examples' modules never meet."""
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", "") or "").startswith(str(folder)):
                del sys.modules[name]


def load(folder: Path, name: str) -> ModuleType:
    """The example's module ``name`` (e.g. ``train``) from ``folder``, under a unique name."""
    spec = importlib.util.spec_from_file_location(f"cookbook_{folder.name}_{name}",
                                                  folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(family: str, tmp_path: Path, key: Path, name: str,
                torchvision: bool = False) -> Example:
    """Copy ``examples/model-makers/<family>``, train it and convert it as its page says."""
    folder = tmp_path / family
    shutil.copytree(EXAMPLES / family, folder,
                    ignore=shutil.ignore_patterns("__pycache__", "data", "packages", "*.pt"))
    if torchvision:
        from tests.torchvision_cpu import load as load_torchvision

        load_torchvision()
    started = time.perf_counter()
    with on_path(folder), one_thread():
        load(folder, "train").main(folder)
    trained = time.perf_counter()
    out = Path("packages") / name / "1.0.0"
    prefix = ["-c", SHIMMED_CLI] if torchvision else ["-m", "clinibox"]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), CLINIBOX_QUIET="1",
               TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, *prefix, "convert", "--config", "convert.toml",
                          "--key", str(key), "--out", str(out)], cwd=folder, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-6000:]
    converted = time.perf_counter()
    manifest = load_package(folder / out, [key.with_suffix(".pub")]).manifest
    return Example(folder, folder / out, manifest, trained - started, converted - trained,
                   run.stdout)


def install(example: Example, tmp_path: Path, key: Path, name: str) -> ModelRunner:
    """``clinibox model install PACKAGE`` on a box's config, then that box's runner."""
    (tmp_path / "box").mkdir()
    box = Box(tmp_path / "box", {
        "runtime": {"backend": "onnxruntime", "precision": "fp32"},
        "models": {"dir": str(tmp_path / "models"), "name": name,
                   "trusted_keys": [str(key.with_suffix(".pub"))]}})
    box.cli("model", "install", str(example.out))
    return load_runner(box_config.load(box.config))


def report_text(example: Example) -> str:
    """The conversion report's HTML."""
    return (example.out / "report.html").read_text(encoding="utf-8")
