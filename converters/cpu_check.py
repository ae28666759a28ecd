"""``clinibox cpu-check PACKAGE``: a model package's golden cases on CPUs this workstation
is not, under QEMU's user-mode emulation, before the package is shipped.

A runtime picks its kernels from the CPU it finds (ONNX Runtime's MLAS, oneDNN
in OpenVINO, XNNPACK in TFLite), so an artifact checked on one CPU may compute
something else on another: the demo package's full-range INT8 artifact,
validated on an Intel Xeon with VNNI, gave one answer for every image on an
AMD EPYC with AVX2 only (``int8_kernels.py``). ``qemu-x86_64 -cpu MODEL`` runs
this project's own interpreter with the CPUID of another CPU model: the
runtimes then choose the kernels they would choose there, and run them
instruction by instruction. That shows the **answers** on that CPU class,
never its **speed**: emulated timings say nothing about the real CPU.

The box does the same check on its own CPU when it loads a package (the golden
cases, ``models/golden.py``), and falls back to another artifact when one
fails, so a failure here costs the clinic speed, not a wrong answer. This check
finds it at the workstation, before the package is signed off.

Each CPU class is checked in one emulated child; the same child code runs
natively as the reference, in the same run. Exit status 1 when an artifact fails its
golden cases (or does not load, where it loads here) on a class.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clinibox_common.arguments import CommandParser
from clinibox_common.bundled import DEMO_PUBLIC_KEY
from clinibox_common.child_call import answer_parent, call_child
from clinibox_common.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE, CliniboxError

#: what the classes' kernels are chosen by, as numpy names the CPU's features
SHOWN_FEATURES = ("SSE42", "AVX", "AVX2", "FMA3", "AVX512F", "AVX512VNNI", "AVX512_SPR",
                  "ASIMD", "ASIMDDP")


@dataclass(frozen=True)
class CpuClass:
    """A kind of CPU a box may have, and the QEMU CPU model that stands for it."""

    name: str
    qemu: str
    model: str
    description: str
    #: features the emulated child must see, and must not see: else the check is void
    present: tuple[str, ...]
    absent: tuple[str, ...]
    #: an ARM class: the ``/proc/cpuinfo`` its runtimes read (QEMU 7.2 shows them this
    #: machine's, on which ONNX Runtime's ARM build crashes), and the CPU part number
    arm_features: str = ""
    arm_part: str = ""

    @property
    def arm(self) -> bool:
        """Whether the class runs an ARM interpreter (``--arm-python``)."""
        return bool(self.arm_features)

    def cpuinfo(self) -> str:
        """``/proc/cpuinfo`` of a 4-core CPU of this ARM class."""
        return "".join(
            f"processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {self.arm_features}\n"
            f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n"
            f"CPU part\t: {self.arm_part}\nCPU revision\t: 1\n\n" for n in range(4))


CPU_CLASSES: dict[str, CpuClass] = {c.name: c for c in (
    CpuClass("x86-64-v3", "qemu-x86_64", "EPYC-Rome",
             "AVX2 and FMA without AVX-512 or VNNI: AMD EPYC and Ryzen up to Zen 3, "
             "Intel Core from Haswell (2013) to Comet Lake", ("AVX2", "FMA3"),
             ("AVX512F", "AVX512VNNI")),
    CpuClass("x86-64-v2", "qemu-x86_64", "Nehalem",
             "SSE4.2 without AVX: Intel Atom, Celeron and Pentium of the small fanless PCs, "
             "Core before 2011", ("SSE42",), ("AVX", "AVX2")),
    CpuClass("armv8.0", "qemu-aarch64", "cortex-a72",
             "ARMv8.0 NEON without the dot product: Raspberry Pi 4 (Cortex-A72), Jetson Nano "
             "and TX2 (Cortex-A57)", ("ASIMD",), ("ASIMDDP",),
             "fp asimd evtstrm crc32 cpuid", "0xd08"),
    CpuClass("armv8.2-dotprod", "qemu-aarch64", "neoverse-n1",
             "ARMv8.2 with the dot product (SDOT/UDOT): Jetson Orin (Cortex-A78AE), "
             "Raspberry Pi 5 (Cortex-A76), AWS Graviton2", ("ASIMD", "ASIMDDP"), (),
             "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
             "lrcpc dcpop asimddp", "0xd0c"),
)}
#: checked when none is named (the ARM ones too when an ARM interpreter is given)
DEFAULT_CLASSES = ("x86-64-v3", "x86-64-v2")
ARM_CLASSES = ("armv8.0", "armv8.2-dotprod")
#: seconds one class may take (emulation runs the runtimes 10-100 times slower)
DEFAULT_TIMEOUT = 1800.0
PROJECT = Path(__file__).resolve().parents[1]
#: binds a file over /proc/cpuinfo in a private mount namespace, then runs the command
_WITH_CPUINFO = ["unshare", "--mount", "--map-root-user", "sh", "-c",
                 'mount --bind "$1" /proc/cpuinfo && shift && exec "$@"', "sh"]


@dataclass
class ArtifactCheck:
    """One (runtime, artifact) of the package or of its second stage, on one CPU."""

    model: str
    label: str
    passed: bool
    #: False when the runtime refused the artifact (as OpenVINO refuses the TensorRT form)
    loaded: bool = True
    cases: int = 0
    #: each golden case's computed values, in the manifest's order (key -> value)
    values: list[dict[str, float]] = field(default_factory=list)
    problem: str = ""


@dataclass
class CpuReport:
    """Every artifact checked on one CPU: this one (``cpu`` None) or an emulated class."""

    cpu: str
    features: list[str]
    seconds: float
    artifacts: list[ArtifactCheck]

    def find(self, model: str, label: str) -> ArtifactCheck | None:
        """The check of ``label`` of ``model``, when it was run."""
        return next((a for a in self.artifacts if a.model == model and a.label == label), None)


@dataclass
class Difference:
    """How an emulated class's answers differ from this CPU's, for one artifact."""

    cpu: str
    model: str
    label: str
    here_passed: bool
    there_passed: bool
    max_delta: float | None
    problem: str = ""
    there_loaded: bool = True

    @property
    def regression(self) -> bool:
        """Passes here and not there: the package would fall back (or fail) on that CPU."""
        return self.here_passed and not self.there_passed

    @property
    def wrong(self) -> bool:
        """Runs there and fails its golden cases: a wrong answer on that CPU, which the box
        would catch at load and fall back from. (A runtime that refuses the artifact there
        is reported, not counted: the box skips it, as it skips any it cannot load.)"""
        return self.there_loaded and not self.there_passed


# -- the child: runs on whatever CPU it is given --------------------------------------------


def cpu_features() -> list[str]:
    """The features numpy found on the CPU this process runs on (of :data:`SHOWN_FEATURES`)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as found
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_features__ as found
    return [name for name in SHOWN_FEATURES if found.get(name)]


def check_here(root: Path, trusted_keys: list[Path], precisions: tuple[str, ...] = (),
               runtimes: tuple[str, ...] = ()) -> list[ArtifactCheck]:
    """Run the golden cases of every artifact of the package at ``root`` and of its second
    stages on every runtime installed here (only ``precisions`` and ``runtimes`` when
    given)."""
    from engine.golden import run_golden_cases
    from engine.model_package import load_package
    from engine.runtime.selection import candidates, load_candidate
    from engine.settings import RuntimeConfig

    package = load_package(root, trusted_keys)
    runtime = RuntimeConfig()
    checks: list[ArtifactCheck] = []
    for model in (package, *package.stages):
        for candidate in candidates(model, runtime):
            if ((precisions and candidate.artifact.precision not in precisions)
                    or (runtimes and candidate.backend not in runtimes)):
                continue
            try:
                backend = load_candidate(candidate, model, runtime)
            except Exception as exc:  # a runtime refusing the artifact is a result too
                checks.append(ArtifactCheck(model.model_id, candidate.label, False, False,
                                            problem=f"does not load: {type(exc).__name__}: "
                                                    f"{str(exc).splitlines()[0]}"[:300]))
                continue
            try:
                report = run_golden_cases(model, backend, candidate.label)
            finally:
                backend.close()
            failed = [r.describe() for r in report.results if not r.passed]
            checks.append(ArtifactCheck(model.model_id, candidate.label, report.passed, True,
                                        len(report.results), [r.actual for r in report.results],
                                        "; ".join(failed)[:500]))
    return checks


def _child_work(request: dict[str, Any]) -> bytes:
    """The emulated (or native) child's answer: its CPU features and every check, as JSON."""
    began = time.perf_counter()
    checks = check_here(Path(request["root"]), [Path(k) for k in request["keys"]],
                        tuple(request["precisions"]), tuple(request["runtimes"]))
    return json.dumps({"features": cpu_features(), "seconds": time.perf_counter() - began,
                       "artifacts": [asdict(c) for c in checks]}).encode()


# -- the parent --------------------------------------------------------------------------------


class EmulationUnavailable(CliniboxError, RuntimeError):
    """QEMU's user-mode emulator for a class, or the ARM Python, is not installed."""

    exit_status = EXIT_USAGE
    kind = "emulation unavailable"


def _interpreter(cpu: CpuClass | None, arm_python: Path | None, scratch: Path
                 ) -> tuple[list[str], dict[str, str] | None]:
    """The command that runs this project's Python on ``cpu``, and its environment."""
    if cpu is None:
        return [sys.executable], None
    if shutil.which(cpu.qemu) is None:
        raise EmulationUnavailable(f"{cpu.qemu} is not installed (Debian: apt-get install "
                                   "qemu-user); it emulates the CPU classes")
    if not cpu.arm:
        return [cpu.qemu, "-cpu", cpu.model, sys.executable], None
    if arm_python is None or not (arm_python / "root" / "usr" / "bin" / "python3").exists():
        raise EmulationUnavailable(
            f"{cpu.name} needs an ARM Python with the box's runtimes: make one with "
            "scripts/arm64-python.sh DIR, then give --arm-python DIR")
    cpuinfo = scratch / f"cpuinfo-{cpu.name}"
    cpuinfo.write_text(cpu.cpuinfo())
    root = arm_python / "root"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{arm_python / 'site'}:{PROJECT}",
           "PYTHONDONTWRITEBYTECODE": "1"}
    return [*_WITH_CPUINFO, str(cpuinfo), cpu.qemu, "-L", str(root), "-cpu", cpu.model,
            str(root / "usr" / "bin" / "python3")], env


def run_on(cpu: CpuClass | None, root: Path, trusted_keys: list[Path],
           precisions: tuple[str, ...] = (), runtimes: tuple[str, ...] = (),
           timeout: float = DEFAULT_TIMEOUT, arm_python: Path | None = None) -> CpuReport:
    """Check the package on ``cpu`` (None: natively, on this CPU) in a fresh interpreter;
    ARM classes run the interpreter in ``arm_python`` (``scripts/arm64-python.sh``).

    Raises EmulationUnavailable without the emulator, and RuntimeError when the emulated
    CPU shows features it must not (or lacks ones it must): its answers would not be
    that class's.
    """
    request = {"root": str(root), "keys": [str(k) for k in trusted_keys],
               "precisions": list(precisions), "runtimes": list(runtimes)}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clinibox-cpu-check-") as scratch:
        interpreter, env = _interpreter(cpu, arm_python, Path(scratch))
        answer = json.loads(call_child("converters.cpu_check", request, timeout, interpreter,
                                       env))
    seconds = time.perf_counter() - began
    features = list(answer["features"])
    if cpu is not None:
        wrong = [f for f in cpu.present if f not in features] + \
                [f for f in cpu.absent if f in features]
        if wrong:
            raise RuntimeError(f"the emulated {cpu.model} shows {', '.join(features)}: not a "
                               f"{cpu.name} CPU ({', '.join(wrong)} wrong)")
    return CpuReport("this CPU" if cpu is None else cpu.name, features, seconds,
                     [ArtifactCheck(**a) for a in answer["artifacts"]])


def _max_delta(here: ArtifactCheck, there: ArtifactCheck) -> float | None:
    """Largest difference between the two runs' values of the same golden cases."""
    deltas = [abs(a[key] - b[key]) for a, b in zip(here.values, there.values, strict=False)
              for key in a if key in b]
    return max(deltas) if deltas else None


def compare(reference: CpuReport, other: CpuReport) -> list[Difference]:
    """Each artifact of ``other`` against the same artifact on ``reference`` (this CPU)."""
    found = []
    for there in other.artifacts:
        here = reference.find(there.model, there.label)
        here_passed = bool(here and here.passed)
        found.append(Difference(other.cpu, there.model, there.label, here_passed, there.passed,
                                _max_delta(here, there) if here else None, there.problem,
                                there.loaded))
    return found


def describe(reference: CpuReport, reports: list[CpuReport],
             differences: list[Difference]) -> list[str]:
    """The lines ``clinibox cpu-check`` prints."""
    lines = [f"this CPU ({' '.join(reference.features)}): {len(reference.artifacts)} "
             f"artifact(s), {reference.seconds:.0f} s"]
    for check in reference.artifacts:
        verdict = f"{check.cases} golden cases ok" if check.passed else f"FAILS: {check.problem}"
        lines.append(f"  {check.model:40s} {check.label:44s} {verdict}")
    for report in reports:
        cpu = CPU_CLASSES[report.cpu]
        lines.append(f"{cpu.name}, emulated as {cpu.model} ({' '.join(report.features)}; "
                     f"{cpu.description}): {report.seconds:.0f} s")
        for diff in (d for d in differences if d.cpu == report.cpu):
            delta = "" if diff.max_delta is None else f", at most {diff.max_delta:.2g} from " \
                                                      "this CPU"
            if diff.there_passed:
                verdict = f"golden cases ok{delta}"
            elif diff.wrong:
                verdict = f"FAILS{' THERE ONLY' if diff.here_passed else ''}{delta}: " \
                          f"{diff.problem}"
            else:
                verdict = f"not run{' (runs here)' if diff.here_passed else ''}: {diff.problem}"
            lines.append(f"  {diff.model:40s} {diff.label:44s} {verdict}")
    lines.append("emulation shows the answers of those CPUs, not their speed")
    return lines


def build_parser() -> argparse.ArgumentParser:
    """``clinibox cpu-check``'s options."""
    p = CommandParser(prog="clinibox cpu-check",
                      description="Run a model package's golden cases on other CPU classes "
                                  "under QEMU emulation (answers, not speed), against this "
                                  "CPU in the same run.")
    p.add_argument("package", type=Path, help="the package folder")
    p.add_argument("--cpu", action="append", choices=sorted(CPU_CLASSES),
                   help=f"CPU class to emulate (repeatable; default: {', '.join(DEFAULT_CLASSES)}"
                        f", and {', '.join(ARM_CLASSES)} with --arm-python)")
    p.add_argument("--arm-python", type=Path, metavar="DIR",
                   help="an ARM Python with the box's runtimes, made by "
                        "scripts/arm64-python.sh DIR: the ARM classes run it")
    p.add_argument("--precision", action="append", choices=("fp32", "fp16", "int8"),
                   help="only artifacts of this precision (repeatable; default: all)")
    p.add_argument("--runtime", action="append", choices=("onnxruntime", "openvino", "tflite"),
                   help="only this runtime (repeatable; default: every one installed)")
    p.add_argument("--trust", action="append", metavar="KEY.pub",
                   help="public key the package is signed with (repeatable; default: the "
                        "box's configured keys)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds one CPU class may take")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    return p


def main(argv: list[str] | None = None,
         box_trusted_keys: Callable[[], list[Path]] | None = None) -> int:
    """Entry point of ``clinibox cpu-check``. Without ``--trust`` it trusts what the box's
    configuration on this machine trusts: ``box_trusted_keys``, which the ``clinibox`` command
    hands in (the converter does not read the box's configuration itself)."""
    args = build_parser().parse_args(argv)
    if args.trust:
        keys = [Path(k) for k in args.trust]
    elif box_trusted_keys is not None:
        keys = box_trusted_keys()
    else:
        keys = [DEMO_PUBLIC_KEY]
    only = (tuple(args.precision or ()), tuple(args.runtime or ()))
    names = args.cpu or [*DEFAULT_CLASSES, *(ARM_CLASSES if args.arm_python else ())]
    try:
        reference = run_on(None, args.package, keys, *only, timeout=args.timeout)
        reports = [run_on(CPU_CLASSES[name], args.package, keys, *only, timeout=args.timeout,
                          arm_python=args.arm_python) for name in names]
    except EmulationUnavailable as exc:
        print(f"cpu-check: {exc}", file=sys.stderr)
        return exc.exit_status
    except (ChildProcessError, RuntimeError, OSError) as exc:
        print(f"cpu-check failed: {exc}", file=sys.stderr)
        return EXIT_FAIL
    differences = [d for report in reports for d in compare(reference, report)]
    if args.json:
        print(json.dumps({"reference": asdict(reference),
                          "classes": [asdict(r) for r in reports],
                          "differences": [asdict(d) for d in differences]}, indent=1))
    else:
        print("\n".join(describe(reference, reports, differences)))
    return EXIT_FAIL if any(d.wrong for d in differences) else EXIT_OK


if __name__ == "__main__":
    answer_parent(_child_work)
