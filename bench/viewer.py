"""Viewer benchmark: server-side render time of the clinic viewer's pages with a large store.

A real box state (``tests/viewer_state.py``: three phantom studies processed by
the real worker and demo model, one quarantined and one waiting object, a
technician and a clinician) is filled up in bulk, straight in SQLite, to
``--studies`` studies (default 10,000). Every extra study has one processed
instance whose spool file is one of the three real ones (so the study page
and the PNG routes really read its stored preview and render it) and a result copied from that
instance's (heatmap, key frame, timings), with its own probability; the
finding and alert flags follow the demo package's thresholds and
``studies`` is rolled up by the box's own ``update_study``
(``storage/study_rollup.py``). Received times are spread over 60 days;
one study in twenty carries a quality warning, and 20 waiting or
quarantined objects and verdicts on about one study in ten are added as
well. The reference, measured in the same run and interleaved request by
request, is the same store with 100 studies: the p95 ratio says whether a
page stays flat as the store grows.

Each page is requested through the real Flask app (``web.app.create_app``)
with ``tests.web_client.ViewerClient`` (HTTPS, cookies; no network), logged
in as the clinician (the device page as the technician), and timed with
``time.perf_counter()`` around the whole request: session check, SQL,
template. Five warm-up requests, then ``--runs`` timed ones per page and
store; p50 and p95 in ms. The raw worklist query
(``firmware_app.storage.studies.worklist(conn, page_size=50)`` on an open connection) is timed
as a second reference. The appliance never runs ``ANALYZE``, so neither does
the main run; the worklist pages are timed again after ``ANALYZE`` as an
extra line.

    .venv/bin/python -m bench.viewer [--studies 10000] [--runs 200] [--reference 100]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import figure, machine, percentiles, save
from engine.inference.runner import ModelRunner
from firmware_app.service.appliance import load_runner
from firmware_app.settings.box import Config
from firmware_app.storage import db
from firmware_app.storage import studies as queries
from firmware_app.storage.study_rollup import update_study
from tests.viewer_state import CLINICIAN, TECHNICIAN, build_viewer_state
from tests.web_client import ViewerClient
from web import render
from web.app import create_app

#: The demo package's thresholds (models/clinibox-demo-lesion/1.0.0/manifest.json).
FINDING, ALERT = 0.4088, 0.8834
SPAN_S = 60 * 86_400
ALERT_SHARE, FINDING_SHARE, FEEDBACK_SHARE, WARNING_SHARE = 0.08, 0.12, 0.10, 0.05
WAITING, QUARANTINED = 10, 10
WARMUP = 5
QUARANTINE_REASONS = ("truncated file (element (7FE0,0010) runs past the end of the file)",
                      "not a DICOM file", "unsupported transfer syntax 1.2.840.10008.1.2.4.100",
                      "image too large: 12000 x 12000 pixels")
#: Quality warnings as the worker stores them (engine/imaging/quality.py).
QUALITY_WARNINGS = ('[{"code": "low_contrast", "message": "low contrast, check window/exposure"}]',
                    '[{"code": "too_dark", "message": "image too dark, rescan suggested"}]')


@dataclass
class Store:
    """One populated box, its viewer app, logged-in clients and what the pages ask for."""

    studies: int
    config: Config
    clinician: ViewerClient
    technician: ViewerClient
    day: str
    last_page: int
    #: the study and instance timed again and again (a bulk copy of the alert CT)
    study_id: int
    instance_id: int
    key_frame: int
    #: bulk studies in id order (the "many studies" variant cycles through them)
    bulk_studies: list[int] = field(default_factory=list)
    #: studies on the timed day, and alert studies (the rows those pages can show)
    day_studies: int = 0
    alerts: int = 0
    build_s: float = 0.0


# -- building the store ---------------------------------------------------------------

def _uid(rng: np.random.Generator) -> str:
    """A random DICOM UID (2.25 arc: a 128-bit number)."""
    return f"2.25.{int.from_bytes(rng.bytes(16), 'big')}"


def _sources(conn: sqlite3.Connection, ids: dict[str, int]) -> dict[str, dict[str, Any]]:
    """The three really processed instances with their results, by name."""
    out = {}
    for name in ("alert", "clear", "sweep"):
        row = conn.execute(
            "SELECT i.modality, i.spool_path, i.size_bytes, r.* FROM instances i"
            " JOIN results r ON r.instance_id = i.id WHERE i.id = ?", (ids[name],)).fetchone()
        out[name] = dict(row)
    return out


def fill(conn: sqlite3.Connection, ids: dict[str, int], accounts: dict[str, int], extra: int,
         rng: np.random.Generator) -> list[int]:
    """Add ``extra`` one-instance studies, waiting and quarantined objects and verdicts.

    Returns the new instance ids in order; the first is a copy of the alert CT
    (alert, with a verdict) for the pages timed on one study.
    """
    sources = _sources(conn, ids)
    names = list(sources)
    waiting_path = conn.execute("SELECT spool_path FROM instances WHERE id = ?",
                                (ids["waiting"],)).fetchone()[0]
    now = time.time()
    next_id = int(conn.execute("SELECT MAX(id) FROM instances").fetchone()[0]) + 1
    instances, results, studies, feedback, bulk = [], [], [], [], []
    for n in range(extra):
        name = "alert" if n == 0 else names[int(rng.integers(3))]
        src = sources[name]
        draw = rng.random()
        if n == 0 or draw < ALERT_SHARE:
            probability = rng.uniform(ALERT, 1.0)
        elif draw < ALERT_SHARE + FINDING_SHARE:
            probability = rng.uniform(FINDING, ALERT)
        else:
            probability = rng.uniform(0.01, FINDING)
        finding, alert = int(probability >= FINDING), int(probability >= ALERT)
        received = now - SPAN_S * rng.random() if n else now - 3600.0
        warnings = src["warnings_json"]
        if n == 0 or rng.random() < WARNING_SHARE:
            warnings = QUALITY_WARNINGS[int(rng.integers(len(QUALITY_WARNINGS)))]
        key, iid = _uid(rng), next_id + n
        instances.append((iid, uuid.UUID(bytes=rng.bytes(16)).hex, _uid(rng), key, _uid(rng),
                          src["modality"], "dicom", "BENCH", src["spool_path"],
                          src["size_bytes"], "processed", 1, received, received + 2.0))
        results.append((iid, src["model_id"], src["backend"], probability, finding, alert,
                        src["findings_json"] if finding else "[]", warnings,
                        src["key_frame"], src["frames_inferred"], src["heatmap"],
                        src["heatmap_shape"], src["timings_json"], received + 2.0,
                        src["input_mean"], src["input_std"]))
        studies.append((key, src["modality"], {
            "patient_name": f"PHANTOM^BULK{n:05d}", "patient_id": f"BULK-{n:05d}",
            "study_date": dt.date.fromtimestamp(received).strftime("%Y%m%d"),
            "study_description": f"{src['modality']} PHANTOM {name.upper()}"}, received + 2.0))
        if n == 0 or rng.random() < FEEDBACK_SHARE:
            verdict = ("agree", "disagree", "unsure")[int(rng.integers(3))]
            feedback.append((iid, -1, verdict, accounts["clinician"], received + 600.0))
            if finding:
                feedback.append((iid, 0, verdict, accounts["clinician"], received + 660.0))
        bulk.append(iid)
    held = []
    for k in range(WAITING + QUARANTINED):
        received = now - SPAN_S * rng.random()
        quarantined = k >= WAITING
        held.append((next_id + extra + k, uuid.UUID(bytes=rng.bytes(16)).hex, None, None, None,
                     None, "dicom", "BENCH", waiting_path, 132_326,
                     "quarantined" if quarantined else "queued", int(quarantined),
                     QUARANTINE_REASONS[k % len(QUARANTINE_REASONS)] if quarantined else None,
                     received, received))
    with db.transaction(conn):
        conn.executemany(
            "INSERT INTO instances(id, local_id, sop_instance_uid, study_instance_uid,"
            " series_instance_uid, modality, source, origin, spool_path, size_bytes, status,"
            " attempts, received_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            instances)
        conn.executemany(
            "INSERT INTO results(instance_id, model_id, backend, probability, finding, alert,"
            " findings_json, warnings_json, key_frame, frames_inferred, heatmap, heatmap_shape,"
            " timings_json, created_at, input_mean, input_std)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", results)
        for key, modality, display, at in studies:
            update_study(conn, key, modality, display, at)
        conn.executemany(
            "INSERT INTO instances(id, local_id, sop_instance_uid, study_instance_uid,"
            " series_instance_uid, modality, source, origin, spool_path, size_bytes, status,"
            " attempts, reason, received_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            held)
        conn.executemany("INSERT INTO feedback(instance_id, finding, verdict, account_id, at)"
                         " VALUES (?,?,?,?,?)", feedback)
    return bulk


def build_store(root: Path, runner: ModelRunner, studies: int, seed: int) -> Store:
    """A box with ``studies`` studies in all under ``root``, its app and logged-in clients."""
    started = time.perf_counter()
    state = build_viewer_state(root, runner)
    conn = db.connect(state.config.database_path)
    try:
        accounts = {row["role"]: row["id"] for row in conn.execute("SELECT id, role FROM accounts")}
        real = conn.execute("SELECT COUNT(*) FROM studies").fetchone()[0]
        bulk = fill(conn, state.instances, accounts, studies - real, np.random.default_rng(seed))
        study_ids = dict(conn.execute(
            "SELECT i.id, s.id FROM studies s JOIN instances i"
            " ON i.study_instance_uid = s.study_key WHERE i.origin = 'BENCH'").fetchall())
        total = conn.execute("SELECT COUNT(*) FROM studies").fetchone()[0]
        # the day of the median bulk study (local time): it has studies in both stores
        median = conn.execute("SELECT received_at FROM studies ORDER BY received_at"
                              " LIMIT 1 OFFSET ?", (total // 2,)).fetchone()[0]
        key_frame = conn.execute("SELECT key_frame FROM results WHERE instance_id = ?",
                                 (bulk[0],)).fetchone()[0]
        day = dt.date.fromtimestamp(median)
        day_studies = queries.worklist(conn, day=day).total
        alerts = queries.worklist(conn, status="alert").total
    finally:
        conn.close()
    if total != studies:
        raise RuntimeError(f"store holds {total} studies, not {studies}")
    app = create_app(state.config)
    clinician, technician = ViewerClient(app), ViewerClient(app)
    for client, (name, password) in ((clinician, CLINICIAN), (technician, TECHNICIAN)):
        if client.login(name, password).status_code != 302:
            raise RuntimeError(f"could not log in as {name}")
    page_size = state.config.web.page_size
    return Store(studies=studies, config=state.config, clinician=clinician,
                 technician=technician, day=day.isoformat(),
                 last_page=-(-total // page_size), study_id=study_ids[bulk[0]],
                 instance_id=bulk[0], key_frame=key_frame,
                 bulk_studies=[study_ids[i] for i in bulk], day_studies=day_studies,
                 alerts=alerts, build_s=time.perf_counter() - started)


# -- timing ---------------------------------------------------------------------------

@dataclass
class Page:
    """A timed page: its label, who asks, the path of run ``i`` and a hook before each run."""

    key: str
    label: str
    path: Callable[[Store, int], str]
    technician: bool = False
    before: Callable[[], None] | None = None


def pages() -> list[Page]:
    """The pages of the issue, in the order they are printed."""
    def window(store: Store, i: int) -> str:
        """The timed instance's key frame through a window that changes every run."""
        centre, width = 40 + (i % 97), 300 + 7 * (i % 131)  # a new window every run
        return (f"/instance/{store.instance_id}/frame/{store.key_frame}.png"
                f"?centre={centre}&width={width}")

    def many(store: Store, i: int) -> str:
        """A different bulk study each run (stepping by 37 through all of them)."""
        return f"/study/{store.bulk_studies[(37 * i) % len(store.bulk_studies)]}"

    return [
        Page("worklist", "worklist, first page (/)", lambda s, i: "/"),
        Page("alerts", "worklist, alerts only", lambda s, i: "/?status=alert"),
        Page("day", "worklist, one day", lambda s, i: f"/?day={s.day}"),
        Page("last_page", "worklist, last page (OFFSET)", lambda s, i: f"/?page={s.last_page}"),
        Page("rows", "auto-refresh fragment (/worklist/rows)", lambda s, i: "/worklist/rows"),
        Page("study", "study page, same study (frame cached)",
             lambda s, i: f"/study/{s.study_id}"),
        Page("study_many", "study page, a different study each run", many),
        Page("study_cold", "  same, preview cache emptied first", many,
             before=render.clear_cache),
        Page("frame_png", "frame PNG, new window each run", window),
        Page("device", "device page (technician)", lambda s, i: "/device", technician=True),
    ]


def time_page(stores: list[Store], page: Page, runs: int) -> list[dict[str, float]]:
    """Warm up, then time ``runs`` requests per store, alternating stores request by request."""
    samples: list[list[float]] = [[] for _ in stores]
    for i in range(-WARMUP, runs):
        for store, out in zip(stores, samples, strict=True):
            client = store.technician if page.technician else store.clinician
            path = page.path(store, i)
            if page.before is not None:
                page.before()
            started = time.perf_counter()
            response = client.get(path)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200 or not response.data:
                raise RuntimeError(f"{path}: HTTP {response.status_code}")
            if i >= 0:
                out.append(elapsed)
    return [percentiles(s) for s in samples]


def time_sql(stores: list[Store], runs: int) -> list[dict[str, float]]:
    """``queries.worklist(conn, page_size=50)`` alone on an open connection."""
    conns = [db.connect(s.config.database_path) for s in stores]
    samples: list[list[float]] = [[] for _ in stores]
    try:
        for i in range(-WARMUP, runs):
            for conn, out in zip(conns, samples, strict=True):
                started = time.perf_counter()
                queries.worklist(conn, page_size=50)
                elapsed = (time.perf_counter() - started) * 1000
                if i >= 0:
                    out.append(elapsed)
    finally:
        for conn in conns:
            conn.close()
    return [percentiles(s) for s in samples]


def query_plans(store: Store) -> dict[str, list[str]]:
    """EXPLAIN QUERY PLAN of the worklist's and the device page's queries on ``store``."""
    lo, hi = queries.day_bounds(dt.date.fromisoformat(store.day))
    statements = {
        # the statements of firmware_app/storage/studies.py's worklist (no day chosen, then one day)
        "worklist counts (instances)": (
            "SELECT SUM(status IN ('queued', 'processing')), SUM(status IN ('quarantined',"
            " 'failed')) FROM instances WHERE status IN ('queued', 'processing', 'quarantined',"
            " 'failed')", ()),
        "worklist alert count": ("SELECT COUNT(*) FROM studies WHERE alert = 1", ()),
        "worklist page, all": (
            "SELECT id FROM studies WHERE 1"
            " ORDER BY alert DESC, max_probability DESC, received_at DESC LIMIT 50 OFFSET 0",
            ()),
        "worklist page, one day": (
            "SELECT id FROM studies WHERE 1 AND received_at >= ? AND received_at < ?"
            " ORDER BY alert DESC, max_probability DESC, received_at DESC LIMIT 50 OFFSET 0",
            (lo, hi)),
        "device statuses": ("SELECT status, COUNT(*) FROM instances GROUP BY status", ()),
        "device received today": ("SELECT COUNT(*) FROM instances WHERE received_at >= ?",
                                  (hi,)),
    }
    conn = db.connect(store.config.database_path)
    try:
        return {name: [row["detail"] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args)]
                for name, (sql, args) in statements.items()}
    finally:
        conn.close()


def analyse(stores: list[Store]) -> None:
    """Run ``ANALYZE`` on every store (new connections, so every request, see the statistics)."""
    for store in stores:
        conn = db.connect(store.config.database_path)
        try:
            conn.execute("ANALYZE")
        finally:
            conn.close()


# -- main ---------------------------------------------------------------------------

def ratio(reference: dict[str, float], large: dict[str, float]) -> float:
    """p95 of the large store over p95 of the reference."""
    return round(large["p95_ms"] / reference["p95_ms"], 2)


def print_table(figures: dict[str, Any]) -> None:
    """The figures as a readable table."""
    small, large = figures["reference_studies"], figures["studies"]
    left, right = f"{small} studies p50/p95", f"{large:,} studies p50/p95"
    print(f"\nViewer, server side, ms ({figures['runs']} runs per page and store, "
          f"interleaved; {figures['machine']['cores']} cores)")
    print(f"  {'page':<44}{left:>22}{right:>26}{'p95 ratio':>11}")

    def line(label: str, row: dict[str, Any]) -> None:
        """One row: both stores' p50 / p95 and the ratio of the p95s."""
        ref, big = row["reference"], row["large"]
        print(f"  {label:<44}{ref['p50_ms']:>13.2f} /{ref['p95_ms']:>7.2f}"
              f"{big['p50_ms']:>17.2f} /{big['p95_ms']:>7.2f}{row['p95_ratio']:>11.2f}")

    for row in figures["pages"].values():
        line(row["label"], row)
    line("raw SQL: queries.worklist(conn, page_size=50)", figures["sql"])
    print("\n  after ANALYZE (the appliance does not run it):")
    for row in figures["after_analyze"].values():
        line(row["label"], row)
    days, alerts = figures["day_studies"], figures["alert_studies"]
    print(f"\n  rows behind the filtered pages: {alerts['reference']} and {alerts['large']} "
          f"alert studies, {days['reference']} and {days['large']} studies on the day "
          f"(pages of {figures['page_size']})")
    print(f"  stores built in {figures['build_s']['reference']:.1f} s and "
          f"{figures['build_s']['large']:.1f} s; run time {figures['run_s']:.0f} s\n")


def main() -> None:
    """Build both stores, time every page on both, print the table, save bench/out/viewer.json."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=10_000, help="studies in the large store")
    parser.add_argument("--reference", type=int, default=100,
                        help="studies in the reference store")
    parser.add_argument("--runs", type=int, default=200, help="timed requests per page and store")
    args = parser.parse_args()
    if min(args.studies, args.reference) < 4:
        parser.error("a store needs at least 4 studies (3 real ones and a bulk one)")
    started = time.perf_counter()
    config = Config()
    config.runtime.backend = "onnxruntime"
    runner = load_runner(config)
    root = Path(tempfile.mkdtemp(prefix="clinibox-bench-viewer-"))
    try:
        stores = [build_store(root / "reference", runner, args.reference, seed=11),
                  build_store(root / "large", runner, args.studies, seed=12)]
        figures: dict[str, Any] = {
            "studies": args.studies, "reference_studies": args.reference, "runs": args.runs,
            "warmup": WARMUP, "page_size": stores[1].config.web.page_size,
            "machine": machine("flask", "werkzeug", "jinja2", "numpy", "pillow", "pydicom"),
            "build_s": {"reference": round(stores[0].build_s, 2),
                        "large": round(stores[1].build_s, 2)},
            "day": {"reference": stores[0].day, "large": stores[1].day},
            "day_studies": {"reference": stores[0].day_studies, "large": stores[1].day_studies},
            "alert_studies": {"reference": stores[0].alerts, "large": stores[1].alerts},
            "last_page": {"reference": stores[0].last_page, "large": stores[1].last_page},
            "pages": {}}
        for page in pages():
            ref, big = time_page(stores, page, args.runs)
            figures["pages"][page.key] = {"label": page.label.strip(), "reference": ref,
                                          "large": big, "p95_ratio": ratio(ref, big)}
        ref, big = time_sql(stores, args.runs)
        figures["sql"] = {"reference": ref, "large": big, "p95_ratio": ratio(ref, big)}
        figures["query_plans"] = {"before_analyze": query_plans(stores[1])}
        analyse(stores)
        figures["query_plans"]["after_analyze"] = query_plans(stores[1])
        figures["after_analyze"] = {}
        for page in pages()[:5]:
            ref, big = time_page(stores, page, args.runs // 2)
            figures["after_analyze"][page.key] = {"label": page.label, "reference": ref,
                                                  "large": big, "p95_ratio": ratio(ref, big)}
        ref, big = time_sql(stores, args.runs // 2)
        figures["after_analyze"]["sql"] = {"label": "raw SQL: queries.worklist", "reference": ref,
                                           "large": big, "p95_ratio": ratio(ref, big)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    figures["run_s"] = round(time.perf_counter() - started, 1)
    print_table(figures)
    reference = f"the same page with {args.reference:,} studies, interleaved, same run"
    kept = {}
    for row in [*figures["pages"].values(), {"label": "raw SQL worklist", **figures["sql"]}]:
        kept[f"{row['label']}: p95, {args.reference:,} studies"] = figure(
            row["reference"]["p95_ms"], "ms")
        kept[f"{row['label']}: p95, {args.studies:,} studies"] = figure(
            row["large"]["p95_ms"], "ms", reference)
        kept[f"{row['label']}: p95 ratio"] = figure(row["p95_ratio"], "×", reference)
    save("viewer", figures, kept,
         notes=f"server side, through the Flask app, {args.runs} runs per page and store; "
               "no ANALYZE (as the appliance)")


if __name__ == "__main__":
    main()
