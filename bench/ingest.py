"""Ingest benchmark: C-STORE instances/s into clinibox vs Orthanc vs dcmtk's storescp.

Same phantom CT files, same storescu client (TCP_NODELAY=1), same run, fresh
state for every repetition. clinibox is measured as shipped (durable: file
fsync + folder fsync + SQLite FULL commit before each Success) with each of its two
receivers (``[dicom] receiver``: the native front ``clinibox-receiver``, built by
``make install``, and pynetdicom), with the worker off (ingest alone) and on (the real
box, ingest while inferring: sent once the model runs, so the worker analyses the first
objects while the rest arrive), and on while the model is still being verified and timed
(sent as soon as the box answers C-ECHO, as after a restart). Orthanc is measured
non-durable (SyncStorageArea false) and with its default (SyncStorageArea true); storescp
(no fsync, no index) is the ceiling. pynetdicom alone (``bare_scp.py``: a handler that
stores nothing, or only lets pynetdicom write the data set into a file) is the most a
pynetdicom receiver could reach.

    .venv/bin/python -m bench.ingest [--files 200] [--repeat 3] [--associations 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import BOX_DEFAULTS, REPO, figure, phantom_files, save
from firmware_app.ingest.native_receiver import receiver_binary
from tests.box_harness import (
    dcmtk_env,
    echoscu,
    send,
    serve,
    stop,
    wait_for,
    write_config,
)
from tests.ports import free_port, free_ports


def timed_receiver(command: list[str], port: int, ae_title: str, files: list[Path],
                   associations: int) -> float:
    """Start a receiver (TCP_NODELAY=1 in its environment), wait for its C-ECHO answer,
    return the seconds storescu takes to send ``files``, stop it."""
    proc = subprocess.Popen(command, env=dcmtk_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        wait_for(lambda: echoscu(port, ae_title=ae_title), 60, " ".join(command[:3]))
        return send(port, files, ae_title=ae_title, associations=associations)
    finally:
        stop(proc)


def run_storescp(files: list[Path], work: Path, associations: int) -> float:
    port = free_port()
    out = work / "storescp"
    out.mkdir()
    return timed_receiver(["/usr/bin/storescp", "-aet", "STORESCP", "-od", str(out), str(port)],
                          port, "STORESCP", files, associations)


def run_orthanc(files: list[Path], work: Path, associations: int, sync: bool) -> float:
    port, http = free_ports(2)
    storage = work / "orthanc-db"
    config = work / "orthanc.json"
    config.write_text(json.dumps({
        "Name": "bench", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
        "DicomAet": "ORTHANC", "DicomPort": port, "HttpPort": http,
        "DicomCheckCalledAet": False, "RemoteAccessAllowed": False,
        "SyncStorageArea": sync, "StorageCompression": False, "Plugins": [],
        "ConcurrentJobs": 1,
    }))
    return timed_receiver(["/usr/sbin/Orthanc", str(config)], port, "ORTHANC", files,
                          associations)


def run_bare(files: list[Path], work: Path, associations: int, into_file: bool) -> float:
    """pynetdicom alone (``bare_scp.py``): what the library costs before any durability."""
    port = free_port()
    command = [sys.executable, "-m", "bench.bare_scp", str(port)]
    if into_file:
        command += ["--into", str(work / "received")]
    return timed_receiver(command, port, "BARE", files, associations)


def run_clinibox(files: list[Path], work: Path, associations: int, worker: bool,
                 receiver: str, analysing: bool = False) -> float:
    """The box as shipped; with ``analysing``, sent only once its model runs (the worker
    analyses what arrives while the rest arrives), else as soon as it answers C-ECHO
    (with the worker on, while its model is still being verified and timed)."""
    port = free_port()
    config = write_config(work / "box.toml", work / "state", port, BOX_DEFAULTS,
                          worker={"enabled": worker}, dicom={"receiver": receiver})
    proc = serve(config, work / "serve.log", wait_for_model=analysing)
    try:
        wait_for(lambda: echoscu(port), 120, "clinibox")
        return send(port, files, associations=associations)
    finally:
        stop(proc)


def main() -> None:
    """Measure every target and print instances/s with ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--associations", type=int, default=1)
    args = parser.parse_args()
    cache = Path(tempfile.gettempdir()) / f"clinibox-bench-ct-{args.files}"
    files = phantom_files(cache, args.files, "ct")
    megabytes = sum(f.stat().st_size for f in files) / 2**20
    if receiver_binary() is None:
        sys.exit("clinibox-receiver is not built: make install (needs g++ and libdcmtk-dev)")

    targets = {
        "storescp (dcmtk, ceiling)": lambda w: run_storescp(files, w, args.associations),
        "orthanc (SyncStorageArea=false)": lambda w: run_orthanc(files, w, args.associations,
                                                                 False),
        "orthanc (default, SyncStorageArea=true)": lambda w: run_orthanc(
            files, w, args.associations, True),
        "pynetdicom alone (handler stores nothing)": lambda w: run_bare(
            files, w, args.associations, False),
        "pynetdicom alone (data set into a file, no fsync)": lambda w: run_bare(
            files, w, args.associations, True),
        "clinibox, pynetdicom receiver (durable, worker off)": lambda w: run_clinibox(
            files, w, args.associations, False, "pynetdicom"),
        "clinibox, native receiver (durable, worker off)": lambda w: run_clinibox(
            files, w, args.associations, False, "native"),
        "clinibox, native receiver (durable, worker on)": lambda w: run_clinibox(
            files, w, args.associations, True, "native", analysing=True),
        "clinibox, native receiver (durable, worker on, model still loading)": lambda w:
            run_clinibox(files, w, args.associations, True, "native"),
    }
    seconds: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(args.repeat):  # interleaved, so drift hits every target alike
        for name, run in targets.items():
            work = Path(tempfile.mkdtemp(prefix="clinibox-bench-"))
            try:
                seconds[name].append(run(work))
            finally:
                shutil.rmtree(work, ignore_errors=True)
    rates = {name: len(files) / statistics.median(s) for name, s in seconds.items()}
    ceiling = rates["storescp (dcmtk, ceiling)"]
    orthanc = rates["orthanc (SyncStorageArea=false)"]
    durable = rates["orthanc (default, SyncStorageArea=true)"]
    name = "ingest" if args.associations == 1 else f"ingest-{args.associations}-associations"
    reference = "orthanc (default, SyncStorageArea=true), same run"
    kept = {k: figure(round(v, 1), "instances/s", None if k.startswith(("storescp", "orthanc"))
                      else reference) for k, v in rates.items()}
    kept.update({f"{k} ÷ orthanc default": figure(round(v / durable, 3), "×", reference)
                 for k, v in rates.items() if k.startswith("clinibox")})
    # receiving never waits for analysis: the rate kept while the box analyses
    off = "clinibox, native receiver (durable, worker off)"
    kept["clinibox, native receiver: worker on ÷ worker off"] = figure(
        round(rates["clinibox, native receiver (durable, worker on)"] / rates[off], 3), "×",
        f"{off}, same run")
    save(name, {
        "files": len(files), "megabytes": round(megabytes, 1), "repeat": args.repeat,
        "associations": args.associations,
        "instances_per_s": {k: round(v, 1) for k, v in rates.items()},
        "ratio_to_storescp": {k: round(v / ceiling, 3) for k, v in rates.items()},
        "ratio_to_orthanc_nondurable": {k: round(v / orthanc, 3) for k, v in rates.items()},
        "ratio_to_orthanc_default": {k: round(v / durable, 3) for k, v in rates.items()},
    }, kept, notes=f"{len(files)} CT phantoms ({megabytes:.1f} MB), storescu with TCP_NODELAY=1, "
                   f"{args.associations} association(s), median of {args.repeat} interleaved "
                   "runs, fresh state each")


if __name__ == "__main__":
    main()
