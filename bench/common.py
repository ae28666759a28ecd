"""Shared helpers for the benchmarks: their records, the machine, phantom files, CPUID masks.

Every script hands its figures to :func:`save`, which prints the script's details (as the
scripts always did), keeps them under ``bench/out/<name>.json`` (scratch, git-ignored) and
writes the record that is kept: ``bench/results/<cpu>/<name>.json`` (committed; ``bench/table.py``
makes the published table of them). ``<cpu>`` is :func:`cpu_slug`. Starting and stopping
``clinibox serve``, its config and dcmtk's clients are the tests' own harness
(``tests/box_harness.py``), shared with the integration tests.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
RESULTS = REPO / "bench" / "results"
#: what every benchmark's box has unless its script says otherwise (with
#: ``tests.box_harness.write_config``): no USB import folder watched
BOX_DEFAULTS: dict[str, dict] = {"usb": {"enabled": False}}


def phantom_files(out: Path, count: int, kind: str, seed: int = 1,
                  size: int | None = None) -> list[Path]:
    """Write (once) and return phantom DICOM files made by the project's generator
    (``size``: every image that many pixels a side; None: the generator's mix)."""
    files = sorted(out.rglob("*.dcm"))
    if len(files) != count:
        sized = [] if size is None else ["--size", str(size)]
        subprocess.run([sys.executable, "-m", "phantoms", "--out", str(out),
                        "--count", str(count), "--kind", kind, "--format", "dicom",
                        "--seed", str(seed), *sized], check=True, cwd=REPO,
                       capture_output=True)
        files = sorted(out.rglob("*.dcm"))
    return files


# -- the records ---------------------------------------------------------------------------

def figure(value: Any, unit: str, reference: str | None = None) -> dict[str, Any]:
    """One figure of a record: its value, its unit and, where the script measured one, what
    it was compared to in the same run (words, e.g. ``"Orthanc default, same run"``; the
    reference's own value is a figure of the same record)."""
    found: dict[str, Any] = {"value": value, "unit": unit}
    if reference:
        found["reference"] = reference
    return found


def _check_figures(figures: Mapping[str, Any]) -> None:
    for name, value in figures.items():
        plain = value is None or isinstance(value, int | float)
        if not plain and not (isinstance(value, Mapping) and "value" in value
                              and "unit" in value):
            raise ValueError(f"figure {name!r}: a number or figure(value, unit, reference), "
                             f"not {value!r}")


@cache
def git_commit() -> str:
    """``git rev-parse --short HEAD``, with ``+dirty`` when the working tree differs from it
    (bench/results/ aside: records written by earlier scripts of the same run do not count);
    ``unknown`` outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", ".",
                                  ":(exclude)bench/results"], cwd=REPO, check=True,
                                 capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if changed else "")


def save(name: str, details: dict, figures: Mapping[str, Any], notes: str = "") -> Path:
    """Print ``details`` (everything the script found), keep them under bench/out/<name>.json
    and write the record of ``figures`` (name → :func:`figure` or a plain number) to
    bench/results/<cpu slug>/<name>.json; the record's path."""
    _check_figures(figures)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(details, indent=2) + "\n")
    print(json.dumps(details, indent=2))
    record = {"script": name,
              "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "commit": git_commit(),
              # the load when it was saved: figures taken on a busy machine say so
              "machine": {**(details.get("machine") or machine()),
                          "load_average": [round(x, 2) for x in os.getloadavg()]},
              "figures": dict(figures), "notes": notes}
    path = RESULTS / cpu_slug() / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    print(f"record: {path.relative_to(REPO)}", file=sys.stderr)
    return path


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50 and p95 of ``samples`` (ms), rounded (nearest-rank p95)."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered), 2), "p95_ms": round(p95, 2)}


# -- the CPU ---------------------------------------------------------------------------------

#: the instruction-set extensions that decide which int8/bf16 kernels a runtime picks
KERNEL_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
                   "amx_bf16", "asimd", "asimddp", "i8mm")


def cpu_features(flags: set[str]) -> str:
    """The kernel-deciding features present (e.g. ``avx2 avx512f avx512_vnni``), or ``-``."""
    return " ".join(f for f in KERNEL_FEATURES if f in flags) or "-"


#: Intel family 6 models by micro-architecture (the server and client parts a box may have)
INTEL_CORES = {
    "haswell": (0x3C, 0x3F, 0x45, 0x46), "broadwell": (0x3D, 0x47, 0x4F, 0x56),
    "skylake": (0x4E, 0x5E), "kabylake": (0x8E, 0x9E), "cometlake": (0xA5, 0xA6),
    "icelake": (0x6A, 0x6C, 0x7D, 0x7E), "tigerlake": (0x8C, 0x8D), "rocketlake": (0xA7,),
    "alderlake": (0x97, 0x9A), "raptorlake": (0xB7, 0xBA, 0xBF), "meteorlake": (0xAA, 0xAC),
    "sapphirerapids": (0x8F,), "emeraldrapids": (0xCF,), "graniterapids": (0xAD, 0xAE),
    "goldmont": (0x5C, 0x5F, 0x7A), "tremont": (0x86, 0x96, 0x9C),
}
#: ARM's own cores by ``CPU part`` (CPU implementer 0x41)
ARM_CORES = {0xD03: "cortex-a53", 0xD07: "cortex-a57", 0xD08: "cortex-a72",
             0xD0B: "cortex-a76", 0xD0C: "neoverse-n1", 0xD40: "neoverse-v1",
             0xD41: "cortex-a78", 0xD42: "cortex-a78ae", 0xD49: "neoverse-n2",
             0xD4F: "neoverse-v2"}
PRODUCT_LINES = ("epyc", "threadripper", "ryzen", "athlon", "xeon", "core", "pentium",
                 "celeron", "atom")


def _amd_core(family: int, model: int) -> str:
    if family == 0x17:
        return "zen2" if model >= 0x30 else "zen1"
    if family == 0x19:
        zen4 = 0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F or 0xA0 <= model <= 0xAF
        return "zen4" if zen4 else "zen3"
    if family == 0x1A:
        return "zen5"
    return f"family{family}-model{model:#x}"


def _intel_core(family: int, model: int, stepping: int) -> str:
    if family == 6 and model == 0x55:  # one model number, three server generations
        return "cooperlake" if stepping >= 10 else "cascadelake" if stepping >= 5 else "skylake"
    if family == 6:
        for name, models in INTEL_CORES.items():
            if model in models:
                return name
    return f"family{family}-model{model:#x}"


def cpu_slug(cpuinfo: str | None = None) -> str:
    """A stable name of this CPU for bench/results/: vendor, product line, micro-architecture
    and the kernel-deciding features, joined by ``-`` (e.g. ``amd-epyc-zen4-avx512-vnni-bf16``).

    From ``/proc/cpuinfo`` (``cpuinfo``: its text), the kernel's view, so a run under a CPUID
    mask is filed under the real CPU. The micro-architecture comes from the CPU family and
    model numbers (a virtual machine's model name is often only "AMD EPYC"): AMD family 0x19
    is Zen 3, or Zen 4 for models 0x10-0x1f, 0x60-0x7f and 0xa0-0xaf; 0x17 Zen 1/2, 0x1a
    Zen 5; Intel family 6 by :data:`INTEL_CORES`; ARM by ``CPU part``. The features: the
    widest vector set (``avx512``, ``avx2``, ``sse4``; ``asimd`` on ARM), then ``vnni``,
    ``bf16``, ``amx`` (``dotprod``, ``i8mm`` on ARM) where present."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # the first processor's
    flags = set((fields.get("flags") or fields.get("Features") or "").split())

    def number(key: str) -> int:
        try:
            return int(fields.get(key, "0"), 0)
        except ValueError:
            return 0

    name = fields.get("model name", "").lower()
    line_ = next((p for p in PRODUCT_LINES if p in name.split() or f"{p}(r)" in name), "")
    vendor_id = fields.get("vendor_id", "")
    if vendor_id == "AuthenticAMD":
        parts = ["amd", line_, _amd_core(number("cpu family"), number("model"))]
    elif vendor_id == "GenuineIntel":
        parts = ["intel", line_, _intel_core(number("cpu family"), number("model"),
                                             number("stepping"))]
    elif "CPU implementer" in fields:
        implementer, part = number("CPU implementer"), number("CPU part")
        vendor = {0x41: "arm", 0x61: "apple", 0xC0: "ampere", 0x51: "qualcomm"}.get(
            implementer, f"implementer{implementer:#x}")
        parts = [vendor, ARM_CORES.get(part, f"part{part:#x}") if vendor == "arm"
                 else f"part{part:#x}"]
    else:
        parts = [platform.machine().lower() or "unknown"]
    if "asimd" in flags:
        parts += ["asimd", *(["dotprod"] if "asimddp" in flags else []),
                  *(["i8mm"] if "i8mm" in flags else [])]
    elif flags:
        parts.append("avx512" if "avx512f" in flags else "avx2" if "avx2" in flags
                     else "sse4" if "sse4_2" in flags else "x86-64")
        parts += [tag for tag, present in (
            ("vnni", {"avx512_vnni", "avx_vnni"} & flags), ("bf16", "avx512_bf16" in flags),
            ("amx", "amx_int8" in flags)) if present]
    return "-".join(p for p in parts if p)


#: ``cpu_mask/cpuid_mask.c``'s masks: the kernel-deciding features each one hides
CPUID_MASKS = {"avx2": {"avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
                        "amx_bf16"},
               "avx512": {"avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16"}}
CPUID_MASK_SOURCE = Path(__file__).with_name("cpu_mask") / "cpuid_mask.c"
#: where the benchmarks' native helpers are compiled, once per source change
NATIVE_BUILDS = Path(tempfile.gettempdir()) / "clinibox-bench-native"


def build_native(source: Path, name: str, command: list[str]) -> Path:
    """``NATIVE_BUILDS/name`` compiled from ``source`` by ``command`` (the compiler and its
    flags; the source and ``-o`` output are added), unless it is newer than the source.
    subprocess.CalledProcessError, with the compiler's words, when it does not build."""
    binary = NATIVE_BUILDS / name
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    NATIVE_BUILDS.mkdir(parents=True, exist_ok=True)
    subprocess.run([command[0], str(source), "-o", str(binary), *command[1:]],
                   capture_output=True, text=True, check=True)
    return binary


def cpuid_mask_environment(mask: str) -> dict[str, str]:
    """The environment in which a process sees this CPU without the features ``mask`` hides
    (``cpu_mask/cpuid_mask.c``, built here with gcc; Linux CPUID faulting, `cpuid_fault` in
    /proc/cpuinfo): its kernels are that instruction set's, run by this core."""
    if mask not in CPUID_MASKS:
        raise ValueError(f"unknown CPUID mask {mask!r} (known: {', '.join(CPUID_MASKS)})")
    library = build_native(CPUID_MASK_SOURCE, "cpuid_mask.so",
                           ["gcc", "-O2", "-shared", "-fPIC"])
    return {**os.environ, "CLINIBOX_CPUID_MASK": mask, "LD_PRELOAD": str(library)}


def machine(*packages: str) -> dict:
    """Facts about the machine, and the versions of ``packages`` measured (the features as
    this process sees them under a CPUID mask)."""
    cpu, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")) and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    versions = {name: importlib.metadata.version(name) for name in packages}
    mask = os.environ.get("CLINIBOX_CPUID_MASK", "")
    if mask:
        cpu += f" (CPUID masked to {mask}: {', '.join(sorted(CPUID_MASKS[mask] & flags))} hidden)"
        flags -= CPUID_MASKS[mask]
    return {"cores": os.cpu_count(), "cpu": cpu, "cpu_features": cpu_features(flags),
            "machine": platform.machine(),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, **versions}
