"""Export memory: ``clinibox export-study`` streams a study object by object.

A box state is made once under a temporary folder: studies of 1, 3 and 10 CT
objects of 64 MB each (4000 × 8000 int16 pixels of noise, so deflate has real
work; landed with the box's own ``Lander``, as the receiver stores them). Each
measurement is a fresh child process that imports the command line and the
export (pydicom, dicognito …), reads its own ``VmRSS`` (idle), runs
``clinibox export-study STUDY --out PATH [--zip]`` in-process through
``clinibox.table.main``, then reads ``VmHWM``: the export's peak is
``VmHWM - idle``. Each is run for:

- **streaming**: the export as it is (``firmware_app/dicom_out/export.py``);
- **reference**: the same command with the old all-in-memory algorithm, a copy
  of which is kept below (:func:`reference_export_study`, the code before issue
  43: every object de-identified into a ``BytesIO`` and its bytes kept in a list,
  then all written), patched in for ``firmware_app.cli.export.export_study``.

The folder and the zip target each; both variants in the same run, on the same
box, interleaved. Every export's file count is checked.

    .venv/bin/python -m bench.export_memory [--counts 1 3 10] [--rounds 1]
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

OBJECT_SHAPE = (4000, 8000)  # int16: 64,000,000 bytes of pixel data
VARIANTS = ("streaming", "reference")
TARGETS = ("folder", "zip")


# -- the reference: the export before issue 43, all objects' bytes kept in memory -------------

def reference_export_study(conn, study, out, *, as_zip=False, account, address="", secret=None,
                           extra_documents=(), target_label=None):
    """The export as it was: every object de-identified into memory, then all written."""
    from firmware_app.dicom_out import export as ex
    from firmware_app.dicom_out.deidentify import Deidentifier
    from firmware_app.storage import exports as queries

    out = Path(out)
    found = ex.resolve_study(conn, study, secret)
    ex.check_target(out, as_zip)
    left_out: list = []
    outputs: list[tuple[str, bytes]] = []
    deidentifier = Deidentifier()
    for instance in queries.study_instances(conn, found.study_key):
        source, reason = ex._source(instance)
        if source is None:
            left_out.append(ex.LeftOut(f"instance {instance.id}", reason))
            continue
        _reference_add(outputs, left_out, deidentifier, source, f"instance {instance.id}",
                       "IMAGE")
    for n, document in enumerate(extra_documents, start=1):
        _reference_add(outputs, left_out, deidentifier, ex._detached(document),
                       f"document {n}", "DOCUMENT")
    if not outputs:
        raise ex.ExportError(f"nothing to export: {left_out}")
    export_id = _reference_write(out, as_zip, outputs, lambda: queries.record_export(
        conn, account=account, address=address, study_key=found.study_key,
        files=len(outputs), target=target_label or str(out)))
    return ex.ExportSummary(export_id, found.id, target_label or str(out),
                            [name for name, _ in outputs], left_out)


def _reference_add(outputs, left_out, deidentifier, ds, what, prefix) -> None:
    from firmware_app.dicom_out import export as ex
    from firmware_app.dicom_out.leaks import identifying_values, leaked

    values = identifying_values(ds)
    deidentifier.deidentify(ds)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    survivors = leaked(data, values)
    if survivors:
        left_out.append(ex.LeftOut(what, ", ".join(survivors)))
        return
    count = sum(1 for name, _ in outputs if name.startswith(prefix)) + 1
    outputs.append((f"{prefix}{count:04d}.dcm", data))


def _reference_write(out: Path, as_zip: bool, outputs, record) -> int:
    from clinibox_common.fs import fsync_dir
    from firmware_app.dicom_out import export as ex

    parent = out.parent
    staging = Path(tempfile.mkdtemp(prefix=".clinibox-export-", dir=parent))
    try:
        if as_zip:
            staged = staging / "export.zip"
            with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as archive:
                for name, data in outputs:
                    archive.writestr(name, data)
            ex._fsync(staged)
        else:
            staged = staging / "export"
            staged.mkdir()
            for name, data in outputs:
                (staged / name).write_bytes(data)
                ex._fsync(staged / name)
            fsync_dir(staged)
        export_id = int(record())
        if not as_zip and out.is_dir():
            out.rmdir()
        os.replace(staged, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return export_id


# -- the child: idle, export, peak --------------------------------------------------------------

def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def child(variant: str, config: str, study: str, out: str, target: str) -> None:
    """In the child: import, note idle RSS, export through the command line, report."""
    import contextlib

    import firmware_app.cli.export as cli_export
    import firmware_app.dicom_out.export  # noqa: F401 (pydicom, dicognito: part of idle)
    from clinibox.table import main

    if variant == "reference":
        cli_export.export_study = reference_export_study
    idle = _status_mb("VmRSS")
    argv = ["export-study", study, "--out", out, "--config", config, "--json"]
    argv += ["--zip"] if target == "zip" else []
    started = time.perf_counter()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(argv)
    seconds = time.perf_counter() - started
    text = printed.getvalue()
    summary = json.loads(text[text.index("{"):]) if status == 0 else {}
    print(json.dumps({"status": status, "files": len(summary.get("files", [])),
                      "idle_rss_mb": round(idle, 1), "peak_rss_mb": round(_status_mb("VmHWM"), 1),
                      "above_idle_mb": round(_status_mb("VmHWM") - idle, 1),
                      "seconds": round(seconds, 2)}))


# -- the parent: the box, the runs ---------------------------------------------------------------

def make_box(root: Path, counts: list[int]) -> tuple[Path, dict[int, str]]:
    """A box state with one study per count of 64 MB CT objects; its config and the study
    UIDs by count."""
    import numpy as np
    from pydicom import uid as uids

    from bench.common import BOX_DEFAULTS
    from firmware_app.ingest.landing import Lander
    from firmware_app.settings.box import Config
    from firmware_app.settings.storage import StorageConfig
    from firmware_app.storage import db
    from firmware_app.storage.spool import make_spool
    from phantoms.dicom import ct_dataset
    from tests.box_harness import write_config

    config = Config()
    config.storage = StorageConfig(state_dir=str(root / "state"))
    conn = db.connect(config.database_path)
    db.initialise(conn)
    conn.close()
    lander = Lander(make_spool(config), config.database_path, 80 * 2**20)
    template = ct_dataset(np.zeros((8, 8), np.float32),
                          identity={"PatientName": "QQBENCH^ZZEXPORT", "PatientID": "QQ-BENCH-43"})
    noise = np.random.default_rng(43).integers(0, 2000, OBJECT_SHAPE, dtype=np.int16)
    template.Rows, template.Columns = OBJECT_SHAPE
    template.PixelData = noise.tobytes()
    del noise
    studies = {}
    for count in counts:
        study = uids.generate_uid()
        studies[count] = study
        template.StudyInstanceUID = study
        template.SeriesInstanceUID = uids.generate_uid()
        for n in range(count):
            template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = (
                uids.generate_uid())
            template.InstanceNumber = n + 1
            buffer = io.BytesIO()
            template.save_as(buffer, enforce_file_format=True)
            landed = lander.land(buffer.getvalue(), sop_instance_uid=None, source="dicom",
                                 origin="BENCH")
            _as_processed(config.database_path, landed.instance_id, study)
    path = write_config(root / "box.toml", root / "state", 11112,  # never listened on
                        BOX_DEFAULTS)
    return path, studies


def _as_processed(database: Path, instance_id: int, study: str) -> None:
    """What the worker's bookkeeping would record for the export to find the instance (the
    model is not run on a 64 MB noise image: the export does not read its results)."""
    import sqlite3

    conn = sqlite3.connect(database)
    with conn:
        conn.execute("UPDATE instances SET study_instance_uid = ?, modality = 'CT',"
                     " status = 'processed' WHERE id = ?", (study, instance_id))
        conn.execute("INSERT OR IGNORE INTO studies(study_key, modality, instances,"
                     " max_probability, findings, alert, warnings, received_at, updated_at)"
                     " VALUES (?, 'CT', 0, 0, 0, 0, 0, ?, ?)", (study, time.time(), time.time()))
    conn.close()


def run_child(variant: str, config: Path, study: str, out: Path, target: str) -> dict[str, Any]:
    """One export in a fresh child (this file run as a script, so that it imports nothing of
    the benchmarks' own); its figures."""
    from bench.common import REPO

    done = subprocess.run([sys.executable, __file__, "--child", variant, str(config), study,
                           str(out), target], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} {target}: {done.stderr[-2000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["status"] != 0:
        raise RuntimeError(f"{variant} {target}: {figures}: {done.stderr[-2000:]}")
    return figures


def compare(counts: list[int], rounds: int, work: Path) -> dict[str, Any]:
    """Every count × target × variant, ``rounds`` times; the medians' table."""
    import statistics

    from bench.common import figure, machine, save

    config, studies = make_box(work, counts)
    results: dict[str, Any] = {}
    for count in counts:
        for target in TARGETS:
            for _ in range(rounds):
                for variant in VARIANTS:
                    out = work / "out" / (f"{variant}.zip" if target == "zip" else variant)
                    out.parent.mkdir(exist_ok=True)
                    figures = run_child(variant, config, studies[count], out, target)
                    if figures["files"] != count:
                        raise RuntimeError(f"{variant} {target}: {figures}")
                    results.setdefault(f"{count}/{target}/{variant}", []).append(figures)
                    shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink()
    table = {key: {name: round(statistics.median(s[name] for s in samples), 1)
                   for name in ("above_idle_mb", "idle_rss_mb", "seconds")}
             for key, samples in results.items()}
    figures = {"machine": machine("pydicom", "dicognito"), "object_mb": 64, "rounds": rounds,
               "medians": table, "samples": results}
    info = figures["machine"]
    print(f"CPU: {info['cpu']} ({info['cpu_features']}), {info['cores']} cores")
    print(f"{'objects':>7} {'target':7} {'streaming MB':>13} {'reference MB':>13} "
          f"{'streaming s':>12} {'reference s':>12}")
    for count in counts:
        for target in TARGETS:
            s, r = table[f"{count}/{target}/streaming"], table[f"{count}/{target}/reference"]
            print(f"{count:7d} {target:7} {s['above_idle_mb']:13.1f} {r['above_idle_mb']:13.1f} "
                  f"{s['seconds']:12.1f} {r['seconds']:12.1f}")
    reference = "the all-in-memory export before issue 43, same study, same run"
    kept = {}
    for count in counts:
        for target in TARGETS:
            for variant in VARIANTS:
                row = table[f"{count}/{target}/{variant}"]
                kept[f"{count} × 64 MB, {target}, {variant}: above idle"] = figure(
                    row["above_idle_mb"], "MB", reference if variant == "streaming" else None)
                kept[f"{count} × 64 MB, {target}, {variant}: time"] = figure(
                    row["seconds"], "s", reference if variant == "streaming" else None)
    save("export_memory", figures, kept,
         notes=f"clinibox export-study in a fresh child, peak VmHWM above idle VmRSS, "
               f"medians of {rounds} round(s)")
    return figures


def main() -> None:
    """``--child VARIANT CONFIG STUDY OUT TARGET`` in a child process, else the comparison."""
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:7])
        return
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clinibox-export-memory-") as work:
        compare(args.counts, args.rounds, Path(work))


if __name__ == "__main__":
    main()
