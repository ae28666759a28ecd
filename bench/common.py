"""Shared helpers for the benchmarks: phantom files, processes, ports, dcmtk."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
STORESCU = "/usr/bin/storescu"   # dcmtk's, not pynetdicom's app in .venv/bin
ECHOSCU = "/usr/bin/echoscu"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # no Nagle delay on loopback


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until true, or raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def echo(port: int, ae_title: str) -> bool:
    """C-ECHO with dcmtk's echoscu."""
    return subprocess.run([ECHOSCU, "-aec", ae_title, "127.0.0.1", str(port)],
                          capture_output=True, env=DCMTK_ENV).returncode == 0


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


def send(port: int, ae_title: str, files: list[Path], associations: int = 1) -> float:
    """Send files with storescu over ``associations`` parallel associations; seconds taken."""
    chunks = [files[i::associations] for i in range(associations)]
    started = time.perf_counter()
    procs = [subprocess.Popen([STORESCU, "-aec", ae_title, "127.0.0.1", str(port),
                               *map(str, chunk)], env=DCMTK_ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for chunk in chunks]
    for proc in procs:
        output = proc.communicate()[0].decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed: {output[-2000:]}")
    return time.perf_counter() - started


def write_box_config(path: Path, state: Path, port: int, **sections: dict) -> Path:
    """A clinibox config for a benchmark run."""
    merged: dict[str, dict] = {"storage": {"state_dir": str(state)},
                               "dicom": {"port": port, "host": "127.0.0.1"},
                               "usb": {"enabled": False}}
    for name, values in sections.items():
        merged.setdefault(name, {}).update(values)
    lines = []
    for name, values in merged.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Notify:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        """Bind ``path`` (it must not exist)."""
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)

    def wait_for(self, text: str, started: float, timeout: float = 300) -> float:
        """Seconds from ``started`` (time.monotonic) until a datagram containing ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if text in self.sock.recv(4096).decode():
                    return round(time.monotonic() - started, 2)
            except TimeoutError:
                continue
        raise TimeoutError(f"no {text!r} on the notify socket")

    def close(self) -> None:
        """Close and remove the socket."""
        self.sock.close()
        self.path.unlink(missing_ok=True)


def start_box(config: Path, log: Path, notify: Notify | None = None,
              wait_for_model: bool = False) -> subprocess.Popen:
    """Start `clinibox serve` with a config (telling ``notify``, when given, what systemd
    would hear). The box receives before its model runs; ``wait_for_model`` returns only
    once the model runs (its STATUS), so that a measurement does not count the model's
    first-start timing; otherwise the caller waits for readiness."""
    own = notify is None and wait_for_model
    if own:
        notify = Notify(log.with_suffix(".notify"))
    env = dict(os.environ)
    if notify is not None:
        env["NOTIFY_SOCKET"] = str(notify.path)
    started = time.monotonic()
    with open(log, "w") as output:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "firmware_app.cli", "serve",
                                 "--config", str(config)], cwd=REPO, stdout=output,
                                stderr=subprocess.STDOUT, env=env)
    if wait_for_model:
        assert notify is not None
        try:
            notify.wait_for("STATUS=model ", started)
        finally:
            if own:
                notify.close()
    return proc


def stop(proc: subprocess.Popen) -> None:
    """Terminate a server process and wait for it."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def save(name: str, figures: dict) -> None:
    """Print the figures and keep them under bench/out/<name>.json."""
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50 and p95 of ``samples`` (ms), rounded (nearest-rank p95)."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered), 2), "p95_ms": round(p95, 2)}


#: the instruction-set extensions that decide which int8/bf16 kernels a runtime picks
KERNEL_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
                   "amx_bf16", "asimd", "asimddp", "i8mm")


def cpu_features(flags: set[str]) -> str:
    """The kernel-deciding features present (e.g. ``avx2 avx512f avx512_vnni``), or ``-``."""
    return " ".join(f for f in KERNEL_FEATURES if f in flags) or "-"


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
