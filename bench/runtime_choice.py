"""What the service's runtime choice costs in memory and time: timed in the service, timed in
a child process, or read from the timings kept at an earlier start.

Each way runs in a fresh interpreter that loads the bundled demo package
(phantom-trained, not for clinical use) and chooses its backend with
``[runtime] backend = "auto"``, as ``clinibox serve`` does; then its PSS, the
runtimes it imported and the time the choice took are read:

* reference: every candidate loaded and timed in the service's own process
  (the service before timings were moved out);
* first start: the candidates timed in a spawned child, only the winner loaded;
* later start: the winner read from the kept timings and loaded, no timing.

Then the whole appliance (``clinibox serve`` with its viewer) is started twice
on one state folder: PSS of its process tree when idle, and seconds to its
first C-ECHO answer.

    .venv/bin/python -m bench.runtime_choice [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import BOX_DEFAULTS, REPO, figure, machine, save
from bench.process_memory import tree_pss_mb
from tests.box_harness import echoscu, serve, stop, wait_for, write_config
from tests.ports import free_ports

CHOOSE = """
import json, os, sys, time
from pathlib import Path
from firmware_app.settings.box import Config
from engine.model_package import load_package
from firmware_app.models.store import resolve_package_root
from engine.runtime.selection import select_backend
config = Config()
package = load_package(resolve_package_root(config), config.trusted_key_paths)
timings = Path(sys.argv[1]) if sys.argv[1] else None
started = time.perf_counter()
loaded = select_backend(package, config.runtime, timings=timings)
took = time.perf_counter() - started
rollup = Path(f"/proc/{os.getpid()}/smaps_rollup").read_text().split("Pss:")[1]
print(json.dumps({"label": loaded.label, "seconds": round(took, 3),
                  "pss_mb": round(int(rollup.split()[0]) / 1024, 1),
                  "runtimes": sorted({m.split(".")[0] for m in sys.modules}
                                     & {"onnxruntime", "openvino", "ai_edge_litert"})}))
"""


def choose(timings: str) -> dict:
    """One runtime choice in a fresh interpreter (``timings``: '' for the reference)."""
    done = subprocess.run([sys.executable, "-c", CHOOSE, timings], capture_output=True,
                          text=True, cwd=REPO, timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def appliance(work: Path, config: Path) -> dict:
    """Start `clinibox serve`, wait for its C-ECHO, read its idle PSS, stop it."""
    port = int(next(line.split("=")[1] for line in config.read_text().splitlines()
                    if line.startswith("port =")))
    started = time.monotonic()
    proc = serve(config, work / "serve.log")
    try:
        wait_for(lambda: echoscu(port), 180, "clinibox to answer C-ECHO")
        ready = time.monotonic() - started
        time.sleep(3)
        return {"seconds_to_echo": round(ready, 2), "idle_pss": tree_pss_mb(proc.pid)}
    finally:
        stop(proc)


def main() -> int:
    """Run the comparison and print (and save) its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-runtime-choice-") as scratch:
        work = Path(scratch)
        runs: dict[str, list[dict]] = {"reference_in_service": [], "first_start_child": [],
                                       "later_start_kept": []}
        for n in range(args.rounds):
            kept = work / f"timings-{n}.json"
            runs["reference_in_service"].append(choose(""))
            runs["first_start_child"].append(choose(str(kept)))
            runs["later_start_kept"].append(choose(str(kept)))
        summary = {name: {"pss_mb": statistics.median(r["pss_mb"] for r in rows),
                          "seconds": statistics.median(r["seconds"] for r in rows),
                          "runtimes_loaded": sorted({m for r in rows for m in r["runtimes"]}),
                          "chosen": sorted({r["label"] for r in rows})}
                   for name, rows in runs.items()}
        port, web_port = free_ports(2)
        config = write_config(work / "box.toml", work / "state", port, BOX_DEFAULTS,
                              web={"enabled": True, "port": web_port, "host": "127.0.0.1"})
        whole = {"first_start": appliance(work, config), "later_start": appliance(work, config)}
    reference = "every candidate loaded and timed in the service's own process, same run"
    kept = {}
    for name, row in summary.items():
        ref = None if name == "reference_in_service" else reference
        kept[f"{name.replace('_', ' ')}: PSS"] = figure(row["pss_mb"], "MB", ref)
        kept[f"{name.replace('_', ' ')}: choice"] = figure(row["seconds"], "s", ref)
    for name, row in whole.items():
        kept[f"appliance {name.replace('_', ' ')}: C-ECHO"] = figure(row["seconds_to_echo"], "s")
        kept[f"appliance {name.replace('_', ' ')}: idle"] = figure(row["idle_pss"]["total"],
                                                                   "MB PSS")
    save("runtime_choice", {"machine": machine("onnxruntime", "openvino", "ai-edge-litert"),
                            "rounds": args.rounds, "choice": summary, "appliance": whole}, kept,
         notes=f"medians of {args.rounds} fresh interpreters; backend auto")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
