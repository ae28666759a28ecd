"""The converter's working folder ``OUT/.convert``, keyed by the run's inputs.

A conversion's work (``state.json``, ``model.pt`` and the artifacts it lists)
is reused only by a run with the same inputs: the model and weights (their
SHA-256), the data and labels, the targets, the gate and every other setting
that changes what is written. The whole chain (``clinibox convert``) starts
afresh; a single step refuses work made from other inputs, naming what
differs. Settings that only decide whether and how a package is signed
(``out``, ``key``, ``name``, ``version``, ``intended_use``, the floors and
``accept_weak_model``) are not inputs: ``clinibox package --accept-weak-model``
continues a refused run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from converters.config import ConvertConfig, ConvertConfigError

#: settings that decide only whether and how the package is written, not its artifacts
NOT_INPUTS = frozenset({"out", "key", "name", "version", "intended_use", "accept_weak_model",
                        "floor_auc", "floor_sensitivity"})
#: settings naming files whose contents are inputs
FILE_INPUTS = ("model", "weights", "teacher", "teacher_weights", "labels")
#: settings naming folders whose listing (names, sizes, times) is an input
FOLDER_INPUTS = ("data", "extra_validation")


class StaleWorkError(ConvertConfigError):
    """The working folder holds the work of a run with other inputs."""

    kind = "work of another run"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _module_file(reference: str) -> Path | None:
    """The source file of ``MODULE`` in ``MODULE:FACTORY`` (cwd first, as the loader)."""
    module = reference.partition(":")[0]
    local = Path.cwd() / (module.replace(".", os.sep) + ".py")
    if local.is_file():
        return local
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None) if spec else None
    return Path(origin) if origin and Path(origin).is_file() else None


def _file_input(value: Any) -> str | None:
    if value in (None, ""):
        return None
    path = Path(str(value))
    if path.is_file():
        return _sha256(path)
    if ":" in str(value):
        module = _module_file(str(value))
        return f"{value} ({_sha256(module)})" if module else str(value)
    return str(value)


def _folder_input(value: Any) -> str | None:
    if value in (None, ""):
        return None
    folder = Path(str(value))
    if not folder.is_dir():
        return str(value)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
                      .encode())
    return f"{value} ({digest.hexdigest()})"


def run_inputs(config: ConvertConfig, source_files: dict[str, str] | None = None) -> dict:
    """What this run's work depends on, as plain JSON values (files by their SHA-256).
    ``source_files`` are the hashes of a source model handed in by a caller."""
    inputs: dict[str, Any] = {}
    for field in dataclasses.fields(ConvertConfig):
        key = field.name
        if key in NOT_INPUTS:
            continue
        value = getattr(config, key)
        if key in FILE_INPUTS:
            value = _file_input(value)
        elif key in FOLDER_INPUTS:
            value = _folder_input(value)
        inputs[key] = json.loads(json.dumps(value, default=str, sort_keys=True))
    if source_files:
        inputs["source_files"] = dict(sorted(source_files.items()))
    return inputs


def differences(recorded: dict | None, current: dict) -> list[str]:
    """The inputs that differ, in words (``targets: ['onnx', 'x86-cpu'] then ['onnx']``);
    work recorded without inputs (an older converter) differs in all of them."""
    if recorded is None:
        return ["the inputs it was made from (not recorded)"]
    keys = sorted(set(recorded) | set(current))
    return [f"{key}: {recorded.get(key)!r} then, now, {current.get(key)!r}"
            for key in keys if recorded.get(key) != current.get(key)]


def describe_left(work: Path, state: dict) -> str:
    """What a run that stopped left behind and where, in words."""
    steps = ", ".join(state.get("steps") or {}) or "none"
    artifacts = ", ".join(a["path"] for a in state.get("artifacts") or []) or "none"
    return (f"its work is left in {work} (state.json; steps done: {steps}; artifacts "
            f"written beside it in {work.parent}: {artifacts}). A single step with the same "
            "options continues it; clinibox convert (the whole chain) or other inputs start "
            "afresh and remove it.")


def read_state(work: Path) -> dict[str, Any]:
    """``state.json`` of the work folder ``work``, or an empty state."""
    path = work / "state.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    return {"steps": {}, "artifacts": [], "metrics": {}, "benchmarks": {}}


def write_state(work: Path, state: dict[str, Any]) -> None:
    """Write ``state.json`` in ``work`` atomically (numpy values and paths as JSON)."""
    tmp = work / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2, default=_jsonable), encoding="utf-8")
    tmp.replace(work / "state.json")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def remove_work(out: Path, work: Path, state: dict[str, Any]) -> list[str]:
    """Remove the artifact files ``state`` lists (inside ``out`` only), then the work
    folder's state and model; returns the removed artifacts' paths."""
    removed = []
    for entry in state.get("artifacts") or []:
        for rel in entry.get("files") or [entry.get("path")]:
            path = out / str(rel)
            if rel and path.is_file() and out.resolve() in path.resolve().parents:
                path.unlink()
                removed.append(str(rel))
    for name in ("state.json", "model.pt"):
        (work / name).unlink(missing_ok=True)
    return removed
