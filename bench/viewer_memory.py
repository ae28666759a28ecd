"""Viewer process memory: what a viewer worker holds now that ``web`` no longer loads the service.

Until commit 503e4ab ``web/app.py`` imported ``firmware_app.service.appliance``
(earlier ``firmware_app.app``), so every viewer process also loaded
pynetdicom, paho-mqtt and the service's modules. Each round starts, in turn,
two fresh child processes, each on its own fresh temporary state dir:

- **viewer**: what a viewer worker does at start-up: ``from web.app import
  create_app``, build the app on a config whose state dir is the fresh one
  (``firmware_app.settings.box.from_dict``, as ``clinibox web`` and the tests
  build it), then serve ``/login`` and ``/`` (the redirect to it) with Flask's
  test client over https;
- **reference**: the same, after importing ``firmware_app.service.appliance``
  (what the viewer used to load).

When a child has served its requests it reports ``len(sys.modules)`` and
whether pynetdicom and paho are loaded, then waits while this process reads
its PSS (``/proc/<pid>/smaps_rollup``, ``process_memory.pss_mb``) and RSS
(``VmRSS``). Medians over ``--rounds`` rounds; the difference is the median
of the per-round differences. PSS shares each page among every process that
maps it, unrelated ones included (a test run importing numpy lowers the
children's PSS), so run this on an idle machine. The benchmark's own helpers
(``bench.common``, ``bench.process_memory``, ``argparse``) are imported in the parent only,
so the children hold only what they measure.

    .venv/bin/python -m bench.viewer_memory [--rounds 5]
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

#: what each child imports before it builds the viewer app
VARIANTS: dict[str, tuple[str, ...]] = {
    "viewer": (),
    "reference": ("firmware_app.service.appliance",),
}
REQUESTS = ("/login", "/")
MEASURED = ("pss_mb", "rss_mb", "modules", "firmware_app_modules")


def child(variant: str, state: str) -> None:
    """In the child: import, build the app, serve ``REQUESTS``, report, wait to be measured."""
    for module in VARIANTS[variant]:
        importlib.import_module(module)
    from firmware_app.settings.box import from_dict
    from web.app import create_app

    client = create_app(from_dict({"storage": {"state_dir": state}})).test_client()
    codes = [client.get(path, base_url="https://localhost").status_code for path in REQUESTS]
    gc.collect()
    print(json.dumps({
        "status_codes": codes, "modules": len(sys.modules),
        "firmware_app_modules": sum(name.startswith("firmware_app") for name in sys.modules),
        "pynetdicom": "pynetdicom" in sys.modules, "paho": "paho" in sys.modules,
    }), flush=True)
    sys.stdin.readline()  # the parent reads our memory now; EOF lets us exit


def spawn(command: list[str], pythonpath: str) -> dict[str, Any]:
    """Run one child until it reports, measure its PSS and RSS from outside, let it exit."""
    from bench.common import REPO
    from bench.process_memory import pss_mb, rss

    env = {**os.environ, "PYTHONPATH": pythonpath}
    proc = subprocess.Popen(command, cwd=REPO, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{command} exited with {proc.wait()} before reporting")
        facts = json.loads(line)
        facts.update(pss_mb=round(pss_mb(proc.pid), 1), rss_mb=rss(proc.pid)["VmRSS"])
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    return facts


def measure_variant(variant: str) -> dict[str, Any]:
    """One fresh child of ``variant`` on a fresh temporary state dir (this file run as a
    script, so that the child imports nothing of the benchmarks' own)."""
    from bench.common import REPO

    with tempfile.TemporaryDirectory(prefix="clinibox-viewer-memory-") as state:
        return spawn([sys.executable, __file__, "--child", variant, state], str(REPO))


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the measured figures, with the first sample's status codes and flags."""
    first = samples[0]
    medians = {key: round(statistics.median(s[key] for s in samples), 1) for key in MEASURED}
    return {**medians, "pynetdicom": first["pynetdicom"], "paho": first["paho"],
            "status_codes": first["status_codes"]}


def difference(more: list[dict[str, Any]], less: list[dict[str, Any]]) -> dict[str, float]:
    """Median over rounds of ``more - less``: paired by round, so load elsewhere cancels out."""
    pairs = list(zip(more, less, strict=True))
    return {key: round(statistics.median(a[key] - b[key] for a, b in pairs), 1)
            for key in MEASURED}


def compare(rounds: int) -> None:
    """Interleave the variants ``rounds`` times, print the medians and their difference."""
    from bench.common import figure, machine, save

    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name in VARIANTS:
            samples[name].append(measure_variant(name))
    result = {name: summary(found) for name, found in samples.items()}
    figures = {"machine": machine("flask", "pynetdicom", "paho-mqtt"), "rounds": rounds,
               "requests": list(REQUESTS), **result,
               "reference_minus_viewer": difference(samples["reference"], samples["viewer"]),
               "samples": samples}
    info = figures["machine"]
    print(f"CPU: {info['cpu']} ({info['cpu_features']}), {info['cores']} cores; "
          f"medians of {rounds} rounds")
    print(f"{'':10} {'PSS MB':>8} {'RSS MB':>8} {'modules':>8}  pynetdicom  paho")
    for name, row in result.items():
        print(f"{name:10} {row['pss_mb']:8.1f} {row['rss_mb']:8.1f} {row['modules']:8.0f}"
              f"  {row['pynetdicom']!s:10}  {row['paho']!s}")
    gap = figures["reference_minus_viewer"]
    print(f"{'difference':10} {gap['pss_mb']:8.1f} {gap['rss_mb']:8.1f} {gap['modules']:8.0f}"
          "  (reference - viewer, median of the rounds)")
    reference = "the same viewer after importing the service's wiring, same run"
    kept = {"viewer": figure(result["viewer"]["pss_mb"], "MB PSS", reference),
            "viewer RSS": figure(result["viewer"]["rss_mb"], "MB RSS", reference),
            "reference": figure(result["reference"]["pss_mb"], "MB PSS"),
            "reference − viewer": figure(gap["pss_mb"], "MB PSS", reference),
            "viewer modules": figure(result["viewer"]["modules"], "modules", reference)}
    save("viewer_memory", figures, kept,
         notes=f"a fresh child per variant, /login and / served; medians of {rounds} rounds")


def main() -> None:
    """``--child VARIANT STATE`` in a child process, else the comparison."""
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:4])
        return
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    compare(parser.parse_args().rounds)


if __name__ == "__main__":
    main()
