"""Province-scale load: 2,000 boxes through Mosquitto into receivers sharing one PostgreSQL.

Simulated boxes (``bench.central_traffic``; clinic ``county-07-clinic-0123``, device
``box-1``, 50 clinics a county, each box its own Ed25519 key, enrolled in the store, every
clinic a ``clinics`` row with its county) send heartbeats every 5 minutes, summaries hourly
(realistic histograms; one box in 200 drifting: its histograms shifted) and alerts for 2 % of
their summaries' studies (12 studies an hour a box). Simulated time runs ``--speed`` times
faster than real time (default 4: 2,000 boxes then offer about 29 messages/s). Then a
burst: ``--burst-factor`` (10) times the steady rate, as when a county's boxes flush their
outboxes after an outage. Every envelope is sealed before the clock starts.

SIMPLIFICATION: the boxes publish through ``--gateways`` (4) client identities that a
bench-only ACL block lets publish on ``clinibox/#``, not through 2,000 client certificates:
the receivers' work (verify, decrypt, check, store) is the same, the broker's per-client
cost (2,000 TLS sessions) is not measured. Issuing one client certificate is timed so the
cost of 2,000 can be said. The broker logs no debug lines (no line a message).

Receivers are ``clinibox central serve`` processes (each its own client id, one shared
subscription group) into one PostgreSQL (``tests/postgres_server.py``, durable settings).
Phases: warm-up (history: 48 hourly summaries of the drifting boxes and as many steady ones,
so drift has a baseline), the reference (ONE receiver alone: steady, then the burst), the
main run (``--receivers`` (3): steady, burst, drain). Measured from the store afterwards:
messages/s stored (steady and burst), the backlog over time (published − stored) and how
long after the burst it drained, publish→stored latency (``received_at``), and no loss, no
duplicates: every (clinic, device, seq) published is stored exactly once, and the
receivers' own counts (their ``messages so far`` log line) say how many redeliveries they
saw as duplicates. Then, when ``clinibox central web`` exists, the console's pages are timed
over HTTPS (p50/p95 of 50 requests each); otherwise that phase is skipped with a note.

    .venv/bin/python -m bench.central_load [--quick] [--boxes 2000] [--receivers 3]
                                           [--burst-factor 10] [--speed 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg

from bench.central_traffic import (
    QUIET_LOG,
    SUMMARY_S,
    Gateways,
    Key,
    Planned,
    SimBox,
    gateway_acl,
    issue_gateways,
    make_boxes,
    schedule,
    seal_plan,
    summary,
)
from bench.common import REPO, figure, machine, percentiles, save
from central.store import Store
from clinibox_common.contracts.envelope import generate_x25519_pair, load_x25519_public
from tests.box_harness import stop, to_toml
from tests.mqtt_broker import Broker, MqttPki, make_mqtt_pki, receiver_settings
from tests.ports import free_port
from tests.postgres_server import PostgresServer

COUNTS = re.compile(r"messages so far: (.*)$", re.MULTILINE)


# -- the receivers -----------------------------------------------------------------------

def receiver_config(root: Path, broker: Broker, pki: MqttPki, url: str, client_id: str) -> Path:
    """A ``clinibox central`` config for one receiver into ``url``."""
    settings = receiver_settings(broker, pki, root / "unused.db", root / "hospital.pem",
                                 client_id)
    settings["database"] = {"url": url}
    path = root / f"{client_id}.toml"
    path.write_text(to_toml(settings))
    return path


def start_receiver(root: Path, config: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``clinibox central serve`` and wait for its "connected" line."""
    log = config.with_suffix(".log")
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "clinibox", "central", "serve", "--config",
                                 str(config)], stdout=out, stderr=out, cwd=REPO)
    deadline = time.monotonic() + 30
    while "connected to" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"receiver did not connect:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)
    time.sleep(1.0)  # its SUBSCRIBE, answered after the CONNACK
    return proc, log


def stop_receiver(proc: subprocess.Popen[bytes], log: Path) -> dict[str, int]:
    """SIGTERM a receiver; its outcome counts as it logged them on the way out."""
    stop(proc, 30)
    found = COUNTS.findall(log.read_text(errors="replace"))
    counts: dict[str, int] = {}
    for part in (found[-1].split(", ") if found else []):
        word, _, number = part.rpartition(" ")
        counts[word] = int(number)
    return counts


# -- the store ----------------------------------------------------------------------------

def enrol(url: str, boxes: list[SimBox]) -> float:
    """Enrol every box and give every clinic its county; seconds it took."""
    started = time.perf_counter()
    store = Store(url)
    try:
        for box in boxes:
            store.enrol(box.clinic, box.device, box.pem)
            store.set_clinic(box.clinic, box.clinic, box.county)
    finally:
        store.close()
    return time.perf_counter() - started


def stored_rows(url: str, since: float = 0.0) -> dict[Key, float]:
    """(clinic, device, seq) → received_at of every message stored at or after ``since``."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT clinic, device, seq, received_at FROM messages"
                            " WHERE received_at >= %s", (since,)).fetchall()
    return {(r[0], r[1], int(r[2])): float(r[3]) for r in rows}


def wait_stored(url: str, count: int, since: float, timeout: float) -> dict[Key, float]:
    """Wait until ``count`` messages stored at or after ``since`` (the phase's start: only its
    own) are there, or ``timeout``; then those rows, read once (the wait only counts them, so
    as not to load the store it measures)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            stored = conn.execute("SELECT COUNT(*) FROM messages WHERE received_at >= %s",
                                  (since,)).fetchone()
            if stored is not None and int(stored[0]) >= count:
                break
            time.sleep(0.5)
    return stored_rows(url, since)


def table_counts(url: str) -> dict[str, Any]:
    """Rows in the tables the console reads, and the drift marks."""
    out: dict[str, Any] = {}
    with psycopg.connect(url) as conn:
        for table in ("messages", "alerts", "clinics", "box_state", "drift_points",
                      "rejections"):
            out[table] = int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        out["box_state_drift"] = int(conn.execute(
            "SELECT COUNT(*) FROM box_state WHERE drift <> 0").fetchone()[0])
        out["drift_points_marked"] = int(conn.execute(
            "SELECT COUNT(*) FROM drift_points WHERE drift <> 0").fetchone()[0])
    return out


# -- a phase --------------------------------------------------------------------------------

def run_phase(gateways: Gateways, plan: list[Planned], url: str, steady_s: float,
              drain_timeout: float) -> dict[str, Any]:
    """Publish a steady+burst plan, wait for the store, and measure it."""
    sent: dict[Key, float] = {}
    acked_before = gateways.acked + sum(gateways.refused.values())
    start = gateways.publish(plan, sent)
    published_end = time.time()
    gateways.wait_acked(acked_before + len(plan))
    rows = wait_stored(url, len(sent), start, drain_timeout)
    burst_start, burst_end = start + steady_s, start + plan[-1].at
    kinds = {item.key: item.kind for item in plan}
    missing = [k for k in sent if k not in rows]
    latency = {k: (rows[k] - sent[k]) * 1e3 for k in sent if k in rows}

    def stats(keys: list[Key]) -> dict[str, float]:
        samples = [latency[k] for k in keys if k in latency]
        if not samples:
            return {}
        return {**percentiles(samples), "max_ms": round(max(samples), 1)}

    steady = [k for k in sent if sent[k] < burst_start]
    burst = [k for k in sent if sent[k] >= burst_start]
    stored_in_burst = sum(1 for k in sent if k in rows and burst_start <= rows[k] <= burst_end)
    stored_in_steady = sum(1 for k in steady if k in rows and rows[k] < burst_start)
    # backlog (published − stored) each second from the phase's start
    times_sent = sorted(sent.values())
    times_stored = sorted(rows[k] for k in sent if k in rows)
    horizon = max([*times_stored, published_end]) - start
    backlog, i, j = [], 0, 0
    for second in range(int(horizon) + 2):
        t = start + second
        while i < len(times_sent) and times_sent[i] <= t:
            i += 1
        while j < len(times_stored) and times_stored[j] <= t:
            j += 1
        backlog.append(i - j)
    last_burst_stored = max((rows[k] for k in burst if k in rows), default=burst_end)
    return {
        "published": len(sent), "stored": len(sent) - len(missing), "missing": len(missing),
        "missing_examples": [list(k) for k in missing[:5]],
        "by_kind": {kind: sum(1 for k in sent if kinds[k] == kind)
                    for kind in sorted(set(kinds.values()))},
        "steady_s": round(burst_start - start, 1), "burst_s": round(burst_end - burst_start, 1),
        "offered_steady_per_s": round(len(steady) / max(burst_start - start, 1e-9), 1),
        "offered_burst_per_s": round(len(burst) / max(burst_end - burst_start, 1e-9), 1),
        "stored_steady_per_s": round(stored_in_steady / max(burst_start - start, 1e-9), 1),
        "stored_during_burst_per_s": round(stored_in_burst / max(burst_end - burst_start, 1e-9),
                                           1),
        "burst_stored_per_s": round(len([k for k in burst if k in rows])
                                    / max(last_burst_stored - burst_start, 1e-9), 1),
        "drained_after_burst_s": round(max(0.0, last_burst_stored - burst_end), 2),
        "backlog_max": max(backlog), "backlog_at_burst_end": backlog[
            min(len(backlog) - 1, int(burst_end - start))],
        "backlog_per_s": backlog,
        "latency_steady": stats(steady), "latency_burst": stats(burst),
    }


def phase_plan(boxes: list[SimBox], rng: random.Random, speed: float, steady_s: float,
               burst_s: float, factor: float, sim_start: float) -> list[Planned]:
    """Steady traffic for ``steady_s`` real seconds, then ``factor``× it for ``burst_s``."""
    steady = schedule(boxes, rng, sim_start, steady_s * speed, speed)
    burst = schedule(boxes, rng, sim_start + steady_s * speed, burst_s * speed * factor,
                     speed * factor)
    return seal_plan(steady + [(steady_s + at, *rest) for at, *rest in burst])


def history_plan(boxes: list[SimBox], rng: random.Random, now: float) -> list[Planned]:
    """48 hourly summaries of the past two days for the drifting boxes and as many steady
    ones (the drifting ones' last 24 shifted), all at once: drift gets a baseline."""
    drifting = [b for b in boxes if b.drifting]
    steady = [b for b in boxes if not b.drifting][:len(drifting)]
    events = []
    for box in drifting + steady:
        for hour in range(48, 0, -1):
            end = int(now - hour * SUMMARY_S)
            events.append((0.0, box, "summary",
                           summary(box, rng, end, box.drifting and hour <= 24)))
    return seal_plan(events)


# -- the console ------------------------------------------------------------------------------

def console_phase(root: Path, url: str, boxes: list[SimBox], requests_each: int
                  ) -> dict[str, Any]:
    """Time the console's pages over HTTPS, or say why not."""
    if requests_each <= 0:
        return {"skipped": "--requests 0: the console was not timed"}
    probe = subprocess.run([sys.executable, "-m", "clinibox", "central", "web", "--help"],
                           capture_output=True, text=True, cwd=REPO)
    if probe.returncode != 0:
        return {"skipped": "clinibox central web is not there yet (the console, issue 45): "
                           "the pages were not timed"}
    import requests
    import urllib3

    port = free_port()
    config = root / "console.toml"
    config.write_text(to_toml({"database": {"url": url},
                               "keys": {"hospital_key": str(root / "hospital.pem")},
                               "web": {"port": port}}))
    user = subprocess.run([sys.executable, "-m", "clinibox", "central", "user", "add", "bench",
                           "--role", "admin", "--password-stdin", "--config", str(config)],
                          input="tall-river-9431-quiet\n", capture_output=True, text=True,
                          cwd=REPO)
    if user.returncode != 0:
        return {"skipped": f"clinibox central user add failed: {user.stderr.strip()[-300:]}"}
    log = root / "console.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "clinibox", "central", "web", "--config",
                                 str(config)], stdout=out, stderr=out, cwd=REPO)
    base = f"https://127.0.0.1:{port}"
    warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=False
    session.verify = False  # the console's self-signed certificate
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = session.get(f"{base}/login", timeout=5)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    return {"skipped": f"console did not start: {log.read_text()[-500:]}"}
                time.sleep(0.5)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        answer = session.post(f"{base}/login", headers={"Referer": f"{base}/login"},
                              data={"csrf_token": token.group(1) if token else "",
                                    "name": "bench", "password": "tall-river-9431-quiet"},
                              timeout=10, allow_redirects=False)
        if answer.status_code != 302 or "/login" in answer.headers.get("Location", "/login"):
            return {"skipped": f"could not log in to the console (HTTP {answer.status_code})"}
        with psycopg.connect(url) as conn:
            alert_id = conn.execute("SELECT MIN(id) FROM alerts").fetchone()[0]
        box = boxes[len(boxes) // 2]
        pages = {"alert worklist": "/alerts", "alert page": f"/alerts/{alert_id}",
                 "fleet, first page": "/fleet", "fleet, one county": f"/fleet?county={box.county}",
                 "box page": f"/fleet/{box.clinic}/{box.device}", "drift page": "/drift"}
        out: dict[str, Any] = {}
        for name, path in pages.items():
            samples, statuses = [], set()
            for _ in range(requests_each):
                started = time.perf_counter()
                answer = session.get(base + path, timeout=30, allow_redirects=False)
                samples.append((time.perf_counter() - started) * 1e3)
                statuses.add(answer.status_code)
            out[name] = {"path": path, "status": sorted(statuses), **percentiles(samples)}
        return out
    finally:
        stop(proc, 20)


# -- main ----------------------------------------------------------------------------------------

def certificate_cost(pki: MqttPki, root: Path) -> float:
    """Milliseconds to issue one client certificate (the median of 5)."""
    samples = []
    for n in range(5):
        started = time.perf_counter()
        pki.authority.issue_client(f"cost-clinic/box-{n}", root)
        samples.append((time.perf_counter() - started) * 1e3)
    return sorted(samples)[2]


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Every phase; the details."""
    rng = random.Random(45)
    generate_x25519_pair(root / "hospital.pem", root / "hospital.pub")
    hospital = load_x25519_public(root / "hospital.pub")
    boxes = make_boxes(args.boxes, max(1, args.boxes // 200), hospital)
    details: dict[str, Any] = {"boxes": args.boxes, "receivers": args.receivers,
                               "speed": args.speed, "burst_factor": args.burst_factor,
                               "gateways": args.gateways, "machine": machine("psycopg")}
    started = time.perf_counter()
    now = time.time()
    history = history_plan(boxes, rng, now - 7 * 3600)
    reference = phase_plan(boxes, rng, args.speed, args.ref_steady, args.ref_burst,
                           args.burst_factor, now - 6 * 3600)
    main_plan = phase_plan(boxes, rng, args.speed, args.steady, args.burst, args.burst_factor,
                           now - 3 * 3600)
    details["sealing_s"] = round(time.perf_counter() - started, 1)
    pki = make_mqtt_pki(root / "pki", [])
    details["client_certificate_ms"] = round(certificate_cost(pki, root / "pki"), 2)
    server = PostgresServer(root / "postgres", durable=True)
    gateway_ids = issue_gateways(pki, args.gateways)
    broker = Broker(root / "broker", pki, extra_acl=gateway_acl(gateway_ids),
                    log_types=QUIET_LOG)
    receivers: list[tuple[subprocess.Popen[bytes], Path]] = []
    gateways = None
    try:
        server.start()
        url = server.create_database("central")
        details["postgresql"] = server.bin_dir.parent.name
        details["enrol_s"] = round(enrol(url, boxes), 1)
        broker.start()
        receivers.append(start_receiver(root, receiver_config(root, broker, pki, url,
                                                              "bench-receiver-1")))
        gateways = Gateways(broker, gateway_ids)
        sent: dict[Key, float] = {}
        wait_stored(url, len(history), gateways.publish(history, sent), 120)
        details["reference_one_receiver"] = run_phase(gateways, reference, url,
                                                      args.ref_steady, args.drain_timeout)
        for n in range(2, args.receivers + 1):
            receivers.append(start_receiver(root, receiver_config(root, broker, pki, url,
                                                                  f"bench-receiver-{n}")))
        details["main"] = run_phase(gateways, main_plan, url, args.steady, args.drain_timeout)
        details["tables"] = table_counts(url)
        published = len(history) + len(reference) + len(main_plan)
        rows = stored_rows(url)
        planned = {p.key for p in history + reference + main_plan}
        details["check"] = {"published": published, "stored": len(rows),
                            "published_and_stored": len(planned & rows.keys()),
                            "broker_refused": dict(gateways.refused)}
        gateways.close()
        gateways = None
        details["receiver_counts"] = [stop_receiver(*r) for r in receivers]
        receivers = []
        details["check"]["duplicates_seen_by_receivers"] = sum(
            c.get("duplicate", 0) for c in details["receiver_counts"])
        details["console"] = console_phase(root, url, boxes, args.requests)
    finally:
        if gateways is not None:
            gateways.close()
        for proc, log in receivers:
            stop_receiver(proc, log)
        broker.stop()
        broker.kill()
        server.stop()
    details["run_s"] = round(time.perf_counter() - started, 1)
    return details


def record(details: dict[str, Any]) -> None:
    """Print the tables and save the record."""
    ref, main, check = details["reference_one_receiver"], details["main"], details["check"]
    n = details["receivers"]
    one = "one receiver alone, same PostgreSQL, same traffic shape, same run"
    figures: dict[str, Any] = {
        f"{n} receivers: stored/s, steady": figure(main["stored_steady_per_s"], "messages/s"),
        f"{n} receivers: offered/s, burst": figure(main["offered_burst_per_s"], "messages/s"),
        f"{n} receivers: stored/s through the burst": figure(main["burst_stored_per_s"],
                                                             "messages/s", one),
        "1 receiver: stored/s through the burst": figure(ref["burst_stored_per_s"],
                                                         "messages/s"),
        f"{n} receivers: drained after the burst": figure(main["drained_after_burst_s"], "s",
                                                          one),
        "1 receiver: drained after the burst": figure(ref["drained_after_burst_s"], "s"),
        f"{n} receivers: backlog max": figure(main["backlog_max"], "messages", one),
        "1 receiver: backlog max": figure(ref["backlog_max"], "messages"),
        f"{n} receivers: latency p95, steady": figure(main["latency_steady"].get("p95_ms"), "ms"),
        f"{n} receivers: latency p95, burst": figure(main["latency_burst"].get("p95_ms"), "ms",
                                                     one),
        "1 receiver: latency p95, burst": figure(ref["latency_burst"].get("p95_ms"), "ms"),
        f"{n} receivers: latency max, burst": figure(main["latency_burst"].get("max_ms"), "ms"),
        "messages lost": figure(check["published"] - check["published_and_stored"], "messages"),
        "duplicates seen by receivers": figure(check["duplicates_seen_by_receivers"],
                                               "messages"),
        "client certificate, issued": figure(details["client_certificate_ms"], "ms"),
    }
    console = details["console"]
    for name, row in console.items():
        if isinstance(row, dict):
            figures[f"console {name}: p95"] = figure(row["p95_ms"], "ms")
    print(f"\n{details['boxes']} boxes, speed ×{details['speed']}, burst ×"
          f"{details['burst_factor']}, {details['gateways']} gateways")
    print(f"  {'':<34}{'1 receiver':>14}{f'{n} receivers':>14}")
    for label, key in (("offered/s steady", "offered_steady_per_s"),
                       ("stored/s steady", "stored_steady_per_s"),
                       ("offered/s burst", "offered_burst_per_s"),
                       ("stored/s through the burst", "burst_stored_per_s"),
                       ("backlog max (messages)", "backlog_max"),
                       ("drained after burst (s)", "drained_after_burst_s"),
                       ("missing", "missing")):
        print(f"  {label:<34}{ref[key]:>14}{main[key]:>14}")
    for label, key in (("latency steady", "latency_steady"), ("latency burst", "latency_burst")):
        a, b = ref[key], main[key]
        print(f"  {label + ' p50/p95/max ms':<34}"
              f"{a.get('p50_ms', 0):>5.0f}/{a.get('p95_ms', 0):.0f}/{a.get('max_ms', 0):.0f}"
              f"{'':>4}{b.get('p50_ms', 0):>5.0f}/{b.get('p95_ms', 0):.0f}/"
              f"{b.get('max_ms', 0):.0f}")
    print(f"  check: {check}")
    print(f"  console: {console}")
    notes = (f"{details['boxes']} simulated boxes, simulated time ×{details['speed']} "
             f"(heartbeat 5 min, summary 1 h, alerts 2 % of 12 studies/h), burst "
             f"×{details['burst_factor']}; {n} `clinibox central serve` receivers (reference: "
             f"1 alone, same run) into one durable PostgreSQL {details.get('postgresql')}; "
             f"published through {details['gateways']} gateway identities with a bench-only "
             "ACL (clinibox/#), not one certificate a box: the broker's per-client cost is not "
             f"measured; broker logging without debug lines; {details['machine']['cores']} "
             f"cores ({details['machine']['cpu']}) shared by the broker, PostgreSQL, the "
             "receivers and the publisher")
    save("central_load", details, figures, notes=notes)


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run, record; 1 when a message was lost."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boxes", type=int, default=2000)
    parser.add_argument("--receivers", type=int, default=3)
    parser.add_argument("--burst-factor", type=float, default=10.0)
    parser.add_argument("--speed", type=float, default=4.0,
                        help="simulated seconds per real second")
    parser.add_argument("--gateways", type=int, default=4)
    parser.add_argument("--steady", type=float, default=90.0, help="real seconds, main run")
    parser.add_argument("--burst", type=float, default=30.0, help="real seconds, main run")
    parser.add_argument("--ref-steady", type=float, default=20.0)
    parser.add_argument("--ref-burst", type=float, default=15.0)
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--requests", type=int, default=50, help="per console page")
    parser.add_argument("--quick", action="store_true", help="a one-minute smoke run")
    parser.add_argument("--details-only", metavar="FILE",
                        help="write the details to FILE, no record (the smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steady, args.burst, args.ref_steady, args.ref_burst = 15.0, 8.0, 6.0, 5.0
        args.requests = min(args.requests, 10)
    root = Path(tempfile.mkdtemp(prefix="clinibox-bench-central-load-"))
    try:
        details = run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.details_only:
        Path(args.details_only).write_text(json.dumps(details, indent=2) + "\n")
    else:
        record(details)
    check = details["check"]
    lost = check["published"] - check["published_and_stored"]
    return 1 if lost or check["duplicates_seen_by_receivers"] else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
