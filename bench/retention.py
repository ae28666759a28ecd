"""Retention benchmark: the time of one retention pass with a large store, against a small one.

Two boxes are filled in bulk, straight in SQLite: ``--instances`` (default
100,000) and ``--reference`` (default 1,000) processed instances, one study
each, received evenly over 60 days, with their results; 8 % of the studies
alerted (and in ``alerted_studies``), a summary period ending now, 1 % held
objects (quarantined). As on a box that has run retention for a while, every
image older than 30 days is already deleted (marked, no file) except the
``--due`` oldest (default 100): those are real DICOM files of 64 KiB in the
spool, just past the 30-day line (the next ones are at least an hour short of
it, so none crosses it during the run). The other images of the last 30 days are
rows only (retention never opens them).

Three passes are timed with ``time.perf_counter()`` around
``firmware_app.storage.retention.apply_retention`` (lock, recovery check, selection,
marks, header reads, unlinks, event), on both stores, interleaved run by run:

* **age**: the hourly pass, deleting the ``--due`` images past ``image_days``;
* **disk**: ``image_days = 0`` and a disk usage (a function over the real
  files) just above ``max_disk_used_pct`` by the ``--due`` files' bytes: the
  pass deletes the same images, oldest first, estimating and then measuring;
* **idle**: nothing due (the next hourly pass).

Before each timed age or disk pass the ``--due`` images are put back (files
rewritten, marks cleared), so both stores always delete the same number of
files and the ratio shows what the other rows cost. p50 and p95 in ms over
``--runs`` runs after two warm-up runs.

    .venv/bin/python -m bench.retention [--instances 100000] [--reference 1000] [--due 100]
                                        [--runs 15]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import figure, machine, percentiles, save
from firmware_app.settings.box import Config
from firmware_app.settings.storage import StorageConfig
from firmware_app.storage import db
from firmware_app.storage.retention import apply_retention

DAY = 86_400.0
SPAN_DAYS, IMAGE_DAYS = 60, 30
ALERT_SHARE, HELD_SHARE = 0.08, 0.01
WARMUP = 2
MODEL_ID = "clinibox-demo-lesion@1.0.0"
Usage = namedtuple("Usage", "total used free")


def dicom_file(rows: int = 256, columns: int = 128) -> bytes:
    """A CT image of ``rows`` x ``columns`` 16-bit pixels (64 KiB of pixel data by default)."""
    from pydicom.uid import generate_uid

    from tests.corpus import image_dataset, to_bytes

    return to_bytes(image_dataset("retention-bench", rows, columns,
                                  sop_instance_uid=generate_uid()))


@dataclass
class Store:
    """One filled box and the images each timed pass deletes."""

    instances: int
    config: Config
    conn: sqlite3.Connection
    due: list[tuple[int, Path]] = field(default_factory=list)
    build_s: float = 0.0


def build_store(root: Path, count: int, due: int, seed: int) -> Store:
    """Fill a box as the module docstring says."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    config = Config(storage=StorageConfig(state_dir=str(root / "state")))
    conn = db.connect(config.database_path)
    db.initialise(conn)
    now = time.time()
    # evenly over the span, oldest first; the ``due`` oldest present ones just past 30 days
    line = now - IMAGE_DAYS * DAY
    ages = np.sort(rng.uniform(0, SPAN_DAYS * DAY, count))[::-1]
    instances, results, studies, alerted = [], [], [], []
    due_ids: list[tuple[int, str]] = []
    older = int(np.sum(now - ages < line))
    first_due = max(0, older - due)
    for n, age in enumerate(ages, start=1):
        received = now - age
        if n - 1 >= first_due and n - 1 < older:  # the oldest images still on the box
            received = line - 3600.0 + (n - 1 - first_due)  # crossed the line this hour
        elif n - 1 >= older:  # none crosses the line while the benchmark runs
            received = max(received, line + 3600.0)
        local = uuid.UUID(bytes=rng.bytes(16)).hex
        key = f"2.25.{int.from_bytes(rng.bytes(16), 'big')}"
        held = rng.random() < HELD_SHARE and received > line
        deleted = received + IMAGE_DAYS * DAY if n - 1 < first_due else None
        status = "quarantined" if held else "processed"
        instances.append((n, local, key, "CT", "dicom", str(root / "unused"), 65_536, status,
                          "not a DICOM file" if held else None, received, received + 2.0,
                          deleted))
        if held:
            continue
        alert = int(rng.random() < ALERT_SHARE)
        probability = rng.uniform(0.9, 1.0) if alert else rng.uniform(0.0, 0.4)
        results.append((n, MODEL_ID, "onnxruntime/int8", probability, alert, alert,
                        '[]', '[]', 0, 1, '{"total": 40.0}', received + 2.0))
        # complete since its result; its alert (one per study and model) queued just after
        studies.append((key, "CT", probability, alert, alert, n, received, received + 2.0,
                        received + 2.0, received + 2.0 if alert else None))
        if alert:
            alerted.append((key, MODEL_ID.partition("@")[0], n, received + 3.0))
        if deleted is None and len(due_ids) < due:
            due_ids.append((n, local))
    with db.transaction(conn):
        conn.executemany(
            "INSERT INTO instances(id, local_id, study_instance_uid, modality, source, spool_path,"
            " size_bytes, status, reason, received_at, updated_at, image_deleted_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", instances)
        conn.executemany(
            "INSERT INTO results(instance_id, model_id, backend, probability, finding, alert,"
            " findings_json, warnings_json, key_frame, frames_inferred, timings_json, created_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", results)
        conn.executemany(
            "INSERT INTO studies(study_key, modality, instances, max_probability, findings,"
            " alert, top_instance_id, warnings, received_at, updated_at, completed_at,"
            " alerts_done_at) VALUES (?, ?, 1, ?, ?, ?, ?, 0, ?, ?, ?, ?)", studies)
        conn.executemany("INSERT INTO alerted_studies(study_key, model, seq, at)"
                         " VALUES (?, ?, ?, ?)", alerted)
        conn.execute("INSERT INTO telemetry_state(name, value) VALUES ('summary_end', ?)",
                     (now,))
    store = Store(count, config, conn)
    for instance, local in due_ids:
        path = config.spool_dir / local[:2] / f"{local}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        conn.execute("UPDATE instances SET spool_path = ? WHERE id = ?", (str(path), instance))
        store.due.append((instance, path))
    store.build_s = time.perf_counter() - started
    return store


def put_back(store: Store, data: bytes) -> None:
    """Rewrite the due images' files and clear their marks."""
    for _instance, path in store.due:
        path.write_bytes(data)
    with db.transaction(store.conn):
        store.conn.executemany(
            "UPDATE instances SET image_deleted_at = NULL, image_rows = NULL,"
            " image_columns = NULL WHERE id = ?", [(i,) for i, _ in store.due])


def disk_over_by(store: Store, data: bytes) -> Callable[[Path], Usage]:
    """A disk just over 85 % used by the due files' bytes (the real files, counted each call)."""
    total = 10 * 2**30
    base = int(total * 0.85)

    def usage(_path: Path) -> Usage:
        present = sum(1 for _i, path in store.due if path.exists())
        used = base + present * len(data) - 1
        return Usage(total, used, total - used)
    return usage


def roomy(_path: Path) -> Usage:
    """A disk far below the limit."""
    return Usage(100, 10, 90)


def time_pass(store: Store, kind: str, data: bytes) -> float:
    """One timed pass of ``kind`` (age, disk or idle); ms."""
    config = store.config
    config.retention.image_days = 0.0 if kind == "disk" else float(IMAGE_DAYS)
    if kind != "idle":
        put_back(store, data)
    usage = disk_over_by(store, data) if kind == "disk" else roomy
    started = time.perf_counter()
    report = apply_retention(store.conn, config, disk_usage=usage)
    elapsed = (time.perf_counter() - started) * 1000
    expected = 0 if kind == "idle" else len(store.due)
    if report.images != expected:
        raise AssertionError(f"{kind} pass on {store.instances} deleted {report.images}, "
                             f"expected {expected}")
    return elapsed


def main() -> None:
    """Build both stores, time the three passes on both, print and save bench/out/retention.json."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--reference", type=int, default=1_000)
    parser.add_argument("--due", type=int, default=100, help="images each pass deletes")
    parser.add_argument("--runs", type=int, default=15, help="timed passes per kind and store")
    args = parser.parse_args()
    if args.due * 4 > args.reference:
        parser.error("--reference needs at least four times --due instances")
    started = time.perf_counter()
    data = dicom_file()
    root = Path(tempfile.mkdtemp(prefix="clinibox-bench-retention-"))
    try:
        stores = [build_store(root / "reference", args.reference, args.due, seed=21),
                  build_store(root / "large", args.instances, args.due, seed=22)]
        timings: dict[str, dict[int, list[float]]] = {
            kind: {s.instances: [] for s in stores} for kind in ("age", "disk", "idle")}
        for run in range(WARMUP + args.runs):
            for kind in timings:
                for store in stores:
                    elapsed = time_pass(store, kind, data)
                    if run >= WARMUP:
                        timings[kind][store.instances].append(elapsed)
        figures: dict[str, Any] = {
            "instances": args.instances, "reference_instances": args.reference,
            "due": args.due, "file_bytes": len(data), "runs": args.runs, "warmup": WARMUP,
            "machine": machine("pydicom"),
            "build_s": {"reference": round(stores[0].build_s, 2),
                        "large": round(stores[1].build_s, 2)},
            "passes": {}}
        for kind, by_store in timings.items():
            ref = percentiles(by_store[args.reference])
            big = percentiles(by_store[args.instances])
            figures["passes"][kind] = {"reference": ref, "large": big,
                                       "p50_ratio": round(big["p50_ms"] / ref["p50_ms"], 2)}
        for store in stores:
            store.conn.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    figures["run_s"] = round(time.perf_counter() - started, 1)
    print(f"\nRetention pass, ms ({args.runs} runs, interleaved; {args.due} images of "
          f"{len(data) // 1024} KiB deleted per age/disk pass)")
    print(f"  {'pass':<8}{args.reference:>10,} p50/p95{args.instances:>12,} p50/p95"
          f"{'p50 ratio':>11}")
    for kind, row in figures["passes"].items():
        ref, big = row["reference"], row["large"]
        print(f"  {kind:<8}{ref['p50_ms']:>9.1f} /{ref['p95_ms']:>6.1f}"
              f"{big['p50_ms']:>11.1f} /{big['p95_ms']:>6.1f}{row['p50_ratio']:>11.2f}")
    print()
    reference = f"the same pass on a store of {args.reference:,} instances, same run"
    kept = {}
    for kind, row in figures["passes"].items():
        kept[f"{kind} pass, {args.reference:,} instances p50"] = figure(
            row["reference"]["p50_ms"], "ms")
        kept[f"{kind} pass, {args.instances:,} instances p50"] = figure(
            row["large"]["p50_ms"], "ms", reference)
        kept[f"{kind} pass, {args.instances:,} instances p95"] = figure(
            row["large"]["p95_ms"], "ms", reference)
        kept[f"{kind} pass p50 ratio"] = figure(row["p50_ratio"], "×", reference)
    save("retention", figures, kept,
         notes=f"one apply_retention pass, {args.due} images of {len(data) // 1024} KiB deleted "
               f"per age or disk pass, {args.runs} runs interleaved")


if __name__ == "__main__":
    main()
