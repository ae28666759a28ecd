"""Model lifecycle costs: golden cases at start-up, `model install`, rollback, a live switch.

Each figure has a reference measured in the same run:

* start-up model load (verify + backend choice + golden cases) against the
  same load without the golden cases: what the check adds to every start;
* `clinibox model install` (stage, verify, golden cases on the chosen
  backend, atomic switch) against verifying the package alone;
* `clinibox model rollback` against reading the store's state;
* a running service switching to a newly installed package (from the end of
  `model install` to systemd's READY=1 with the new model, heard on a notify
  socket) against a cold start of `clinibox serve` to READY=1.

The packages are copies of the demo package (ONNX fp32 + int8), re-signed
with the demo key. Run: ``.venv/bin/python -m bench.lifecycle``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import BOX_DEFAULTS, figure, machine, save
from engine.golden import run_golden_cases
from engine.model_package import load_package
from engine.runtime.selection import sample_inputs, select_backend
from firmware_app.models.install import install, rollback
from firmware_app.models.store import resolve_package_root, store_for
from firmware_app.service.appliance import load_runner
from firmware_app.settings.box import from_dict
from tests.box_harness import Notify, serve, stop, write_config
from tests.model_packages import make_package
from tests.ports import free_port


def _ms(samples: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(samples) * 1000, 2),
            "max_ms": round(max(samples) * 1000, 2)}


def timed(action, runs: int) -> list[float]:
    """Wall seconds of ``runs`` calls."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


def startup_load(config, runs: int) -> dict:
    """load_runner (with golden cases) against loading without them."""
    def without() -> None:
        package = load_package(resolve_package_root(config), config.trusted_key_paths)
        select_backend(package, config.runtime).close()

    def with_golden() -> None:
        load_runner(config).backend.close()

    package = load_package(resolve_package_root(config), config.trusted_key_paths)
    loaded = select_backend(package, config.runtime)
    inputs = sample_inputs(package)
    try:
        golden = timed(lambda: run_golden_cases(package, loaded.backend, loaded.label), 50)
        inference = timed(lambda: loaded.backend.infer(inputs), 50)
    finally:
        loaded.close()
    first, second = [], []
    for _ in range(runs):  # interleaved, so that neither side gets the warmer caches
        first += timed(with_golden, 1)
        second += timed(without, 1)
    return {"with_golden_cases": _ms(first), "reference_without": _ms(second),
            "golden_cases_alone": _ms(golden), "reference_one_inference": _ms(inference),
            "backend": loaded.label}


def install_and_rollback(root: Path, runs: int, runtime: dict) -> dict:
    """`model install` and `rollback` against verify-only and a state read."""
    installs, verifies, rollbacks, reads = [], [], [], []
    for run in range(runs):
        config = from_dict({"storage": {"state_dir": str(root / f"state-{run}")},
                            "runtime": runtime})
        package = make_package(root / f"packages-{run}", "1.1.0")
        verifies += timed(lambda p=package, c=config: load_package(p, c.trusted_key_paths), 1)
        installs += timed(lambda p=package, c=config: install(c, p), 1)
        reads += timed(lambda c=config: store_for(c).read(), 1)
        rollbacks += timed(lambda c=config: rollback(c), 1)
    return {"install": _ms(installs), "reference_verify_only": _ms(verifies),
            "rollback": _ms(rollbacks), "reference_state_read": _ms(reads)}


def live_switch(root: Path, runs: int, runtime: dict) -> dict:
    """Cold start to READY against the switch of a running service to a new package."""
    colds, switches = [], []
    root.mkdir(parents=True, exist_ok=True)
    for run in range(runs):
        state = root / f"serve-{run}"
        config_path = write_config(root / f"serve-{run}.toml", state, free_port(),
                                   BOX_DEFAULTS, web={"enabled": False}, runtime=runtime)
        config = from_dict({"storage": {"state_dir": str(state)}, "runtime": runtime})
        notify = Notify(root / f"notify-{run}")
        started = time.monotonic()
        proc = serve(config_path, root / f"serve-{run}.log", notify=notify,
                     output=subprocess.DEVNULL)
        try:
            colds.append(notify.heard("READY=1", 120) - started)
            # the box receives before its model runs; it watches for a switch once it does
            notify.heard("STATUS=model ", 120)
            install(config, make_package(root / f"switch-{run}", "1.1.0"))
            installed = time.monotonic()
            switches.append(notify.heard("clinibox-demo-lesion@1.1.0", 120) - installed)
        finally:
            stop(proc)
            notify.close()
    return {"switch_after_install": _ms(switches), "reference_cold_start": _ms(colds)}


#: what each measurement was compared to, in the same run
REFERENCES = {"with_golden_cases": "the same load without the golden cases, same run",
              "golden_cases_alone": "one inference on the same backend, same run",
              "install": "verifying the package alone, same run",
              "rollback": "reading the store's state, same run",
              "switch_after_install": "a cold start of clinibox serve to READY=1, same run"}


def main() -> None:
    """Measure, print and save bench/out/lifecycle.json."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the rollbacks' own warnings are expected here
    root = Path(tempfile.mkdtemp(prefix="clinibox-bench-lifecycle-"))
    auto = {"backend": "auto", "precision": "auto"}
    fixed = {"backend": "onnxruntime", "precision": "fp32"}
    figures = {
        "runs": args.runs,
        "machine": machine("onnxruntime", "numpy"),
        "startup_load_auto": startup_load(from_dict({"runtime": auto}), args.runs),
        "startup_load_onnxruntime_fp32": startup_load(from_dict({"runtime": fixed}), args.runs),
        "install_auto": install_and_rollback(root / "auto", args.runs, auto),
        "install_onnxruntime_fp32": install_and_rollback(root / "fixed", args.runs, fixed),
        "live_switch_onnxruntime_fp32": live_switch(root / "live", args.runs, fixed),
    }
    kept = {}
    for what, row in (("start-up load, auto", figures["startup_load_auto"]),
                      ("start-up load, onnxruntime fp32",
                       figures["startup_load_onnxruntime_fp32"]),
                      ("model lifecycle, auto", figures["install_auto"]),
                      ("model lifecycle, onnxruntime fp32", figures["install_onnxruntime_fp32"]),
                      ("live switch, onnxruntime fp32", figures["live_switch_onnxruntime_fp32"])):
        for key, value in row.items():
            if isinstance(value, dict):
                kept[f"{what}: {key.replace('_', ' ')} median"] = figure(
                    value["median_ms"], "ms", REFERENCES.get(key))
    save("lifecycle", figures, kept,
         notes=f"{args.runs} runs each, interleaved; copies of the demo package re-signed")


if __name__ == "__main__":
    main()
