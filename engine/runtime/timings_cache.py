"""Runtime timings kept between starts: measured once per package, machine and runtimes.

With ``[runtime] backend = "auto"`` the service times every candidate of its
package in a child process (``selection.measure_in_child``), so that the
runtimes that lose never load into it. What the child measured is kept in a
small JSON file in the state folder, under a key naming everything that could
change the answer: the package (its manifest's digest and its folder: the
artifacts are kept by path), the CPU (model and
instruction-set flags), the installed runtime versions (read from package
metadata, nothing imported) and the ``[runtime]`` settings. A later start with
the same key loads the winner at once; any change measures again. ``clinibox
selftest`` keeps them too, so a box's first start after its self-test is quick.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
from pathlib import Path
from typing import Any

from clinibox_common.contracts.manifest import ModelPackage
from clinibox_common.fs import write_atomically
from engine.settings import RuntimeConfig

log = logging.getLogger(__name__)

#: the distributions whose version changes what a runtime does
RUNTIME_DISTRIBUTIONS = ("onnxruntime", "openvino", "ai-edge-litert", "numpy")
SCHEMA = "clinibox.runtime-timings/1"


def _cpu() -> str:
    """The CPU's model name and flags (``/proc/cpuinfo``), or '' where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith(("model name", "Model"))), "")
    flags = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith(("flags", "Features"))), "")
    return f"{model} | {' '.join(sorted(flags.split()))}"


def _versions() -> dict[str, str]:
    versions = {}
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = ""
    return versions


def timings_key(package: ModelPackage, config: RuntimeConfig) -> str:
    """A digest of everything that could change which candidate is fastest here."""
    manifest = (package.root / "manifest.json").read_bytes()
    parts = {"model": package.model_id, "root": str(package.root.resolve()),
             "manifest": hashlib.sha256(manifest).hexdigest(),
             "cpu": _cpu(), "runtimes": _versions(), "runtime": dataclasses.asdict(config)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def read_timings(path: Path, key: str) -> dict[str, Any] | None:
    """The timings kept under ``key``, or None (no file, another key, unreadable)."""
    try:
        kept = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or kept.get("schema") != SCHEMA or kept.get("key") != key:
        return None
    return kept


def write_timings(path: Path, key: str, timings: list[tuple[str, str, float]],
                  skipped: dict[str, str]) -> None:
    """Keep ``timings`` ((backend, artifact path, ms/run) each) and ``skipped`` under ``key``;
    a file that cannot be written is logged, not fatal (the next start measures again)."""
    text = json.dumps({"schema": SCHEMA, "key": key,
                       "timings": [list(t) for t in timings], "skipped": skipped}, indent=1)
    try:
        write_atomically(Path(path), text + "\n", mode=0o600)
    except OSError as exc:
        log.warning("runtime timings not kept in %s: %s", path, exc)
