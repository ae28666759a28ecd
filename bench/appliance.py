"""The whole appliance as a clinic runs it: start-up time and memory (PSS) of its process tree.

`clinibox serve` with its viewer, `[runtime] backend = "auto"` and the bundled demo
package (phantom-trained, not for clinical use), on a fresh state folder:

* start-up: seconds from launch to READY=1 on a notify socket (the box receives; it
  answers C-ECHO), and to the STATUS that names the running model (the worker
  analyses), for a first start (runtimes timed in a child process) and a later one
  (the timings kept in the state folder);
* memory, PSS summed over the process tree (service, viewer master and worker,
  decoder sandboxes), each process listed: idle after the first start; after 60
  mixed phantoms were received and analysed (the worker's decoder sandbox stays
  warm); after a clinician logged in and opened the worklist, a study page, its
  image and its PDF report; a minute later, when the idle decoder has stopped
  (the steady state of a box between patients); and after a later start, idle.

The reference in the same run is the receiver alone (`clinibox serve` with the worker
and the viewer off): what any Python DICOM receiver holds here. With ``--pacs`` the box
sends each study's SR, SEG and key image to a real Orthanc (two seconds of stability),
and "after work" waits until every result is in the PACS.

    .venv/bin/python -m bench.appliance [--files 60] [--pacs]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import BOX_DEFAULTS, REPO, figure, machine, phantom_files, save
from bench.process_memory import descendants, pss_mb
from engine.imaging.sandbox import IDLE_SECONDS
from tests.box_harness import Notify, echoscu, send, serve, stop, wait_for, write_config
from tests.hostile import Browser
from tests.orthanc_server import Orthanc
from tests.ports import free_port, free_ports


def tree(pid: int) -> dict:
    """PSS of every process under ``pid`` (by role) and their total, in MB."""
    processes = []
    for child in descendants(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [w.decode(errors="replace") for w in command if w]
        role = ("decoder sandbox" if "engine.imaging.sandbox" in words
                else "viewer" if "web" in words else "service" if "serve" in words
                else " ".join(words[:3]))
        processes.append({"pid": child, "role": role, "pss_mb": round(pss_mb(child), 1)})
    return {"total_mb": round(sum(p["pss_mb"] for p in processes), 1), "processes": processes}


def start(config: Path, work: Path, notify: Notify) -> tuple[subprocess.Popen, dict]:
    """Start the appliance; seconds to READY=1 and to the model's STATUS."""
    started = time.monotonic()
    proc = serve(config, work / "serve.log", notify=notify)
    ready = notify.wait_for("READY=1", started)
    model = notify.wait_for("STATUS=model ", started)
    return proc, {"seconds_to_ready": ready, "seconds_to_model": model}


def use_viewer(port: int, cert: Path, db: Path) -> list[int]:
    """A clinician's visit: log in, the worklist, a study, its image, its PDF; statuses."""
    browser = Browser(port, cert)
    statuses = [browser.login("nadia", "the-clinic-nurse-1")[0]]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        study = conn.execute("SELECT id FROM studies ORDER BY id LIMIT 1").fetchone()[0]
    finally:
        conn.close()
    status, _headers, page = browser.request("GET", f"/study/{study}")
    statuses.append(status)
    frame = re.search(r'/instance/\d+/frame/\d+\.png', page)
    for target in ("/", frame.group(0) if frame else "/instance/0/frame/0.png",
                   f"/study/{study}/report.pdf"):
        statuses.append(browser.request("GET", target)[0])
    return statuses


def results(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    finally:
        conn.close()


def receiver_alone(work: Path) -> dict:
    """The reference: the service with the worker and the viewer off, idle."""
    port = free_port()
    config = write_config(work / "receiver.toml", work / "receiver", port, BOX_DEFAULTS,
                          worker={"enabled": False}, web={"enabled": False})
    proc = serve(config, work / "receiver.log")
    try:
        wait_for(lambda: echoscu(port), 120, "the receiver")
        time.sleep(3)
        return tree(proc.pid)
    finally:
        stop(proc)


def studies_sent(db: Path) -> bool:
    """Every study completed and every DICOM result it queued sent."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        waiting = conn.execute("SELECT COUNT(*) FROM studies WHERE completed_at IS NULL"
                               " OR completed_at < updated_at").fetchone()[0]
        unsent = conn.execute("SELECT COUNT(*) FROM dicom_outbox WHERE state = 'pending'"
                              ).fetchone()[0]
        return waiting == 0 and unsent == 0
    finally:
        conn.close()


def run(files: list[Path], work: Path, pacs: Orthanc | None) -> dict:
    """Start, feed, browse and restart the appliance (sending its results to ``pacs``)."""
    port, web_port = free_ports(2)
    sections: dict = {"web": {"enabled": True, "port": web_port, "host": "127.0.0.1"}}
    if pacs is not None:
        sections["studies"] = {"stable_seconds": 2}
        sections["pacs"] = {"destinations": [{
            "name": "pacs", "ae_title": pacs.ae_title, "host": pacs.host,
            "port": pacs.dicom_port, "send": ["sr", "seg", "key_image"]}]}
    config = write_config(work / "box.toml", work / "state", port, BOX_DEFAULTS, **sections)
    db, cert = work / "state" / "clinibox.db", work / "state" / "keys" / "web-cert.pem"
    notify = Notify(work / "notify")
    figures: dict = {"machine": machine("onnxruntime", "openvino", "ai-edge-litert")}
    figures["reference_receiver_alone"] = receiver_alone(work)
    proc, figures["first_start"] = start(config, work, notify)
    try:
        wait_for(lambda: echoscu(port) and cert.exists(), 120, "clinibox")
        subprocess.run([sys.executable, "-m", "clinibox", "user", "add", "nadia",
                        "--role", "clinician", "--password-stdin", "--config", str(config)],
                       input="the-clinic-nurse-1\n", text=True, check=True, cwd=REPO,
                       capture_output=True)
        time.sleep(3)
        figures["idle_after_first_start"] = tree(proc.pid)
        send(port, files)
        wait_for(lambda: results(db) >= len(files), 600, "results")
        if pacs is not None:
            wait_for(lambda: studies_sent(db), 600, "every study's results in the PACS")
        time.sleep(3)
        figures["after_work"] = tree(proc.pid)
        figures["viewer_statuses"] = use_viewer(web_port, cert, db)
        time.sleep(2)
        figures["after_viewer_use"] = tree(proc.pid)
        time.sleep(IDLE_SECONDS + 5)  # the worker stops its idle decoder
        figures["steady_idle_after_work_and_viewer"] = tree(proc.pid)
    finally:
        stop(proc)
    proc, figures["later_start"] = start(config, work, notify)
    try:
        time.sleep(3)
        figures["idle_after_later_start"] = tree(proc.pid)
    finally:
        stop(proc)
    conn = sqlite3.connect(db)
    figures["backend"] = conn.execute("SELECT backend FROM results LIMIT 1").fetchone()[0]
    figures["documents_sent"] = conn.execute(
        "SELECT COUNT(*) FROM dicom_outbox WHERE state = 'sent'").fetchone()[0]
    conn.close()
    return figures


def main() -> None:
    """Start, feed, browse and restart the appliance; print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=60)
    parser.add_argument("--pacs", action="store_true",
                        help="send the SR, SEG and key images to a real Orthanc (Debian's)")
    args = parser.parse_args()
    files = phantom_files(Path(tempfile.gettempdir()) / f"clinibox-bench-mixed-{args.files}",
                          args.files, "mixed", seed=4)
    work = Path(tempfile.mkdtemp(prefix="clinibox-appliance-"))
    with contextlib.ExitStack() as stack:
        pacs = stack.enter_context(Orthanc(work / "orthanc")) if args.pacs else None
        figures = run(files, work, pacs)
    figures["pacs"] = pacs is not None
    figures["target_mb"] = 200
    reference = "the receiver alone (worker and viewer off), same run"
    kept = {"receiver alone, idle": figure(figures["reference_receiver_alone"]["total_mb"],
                                           "MB PSS")}
    kept.update({what.replace("_", " "): figure(figures[what]["total_mb"], "MB PSS", reference)
                 for what in ("idle_after_first_start", "after_work", "after_viewer_use",
                              "steady_idle_after_work_and_viewer", "idle_after_later_start")})
    for start_ in ("first_start", "later_start"):
        for step, key in (("READY=1", "seconds_to_ready"), ("model running", "seconds_to_model")):
            kept[f"{start_.replace('_', ' ')}: {step}"] = figure(figures[start_][key], "s")
    save("appliance-pacs" if args.pacs else "appliance", figures, kept,
         notes=f"clinibox serve with its viewer, backend auto ({figures['backend']}), "
               f"{args.files} mixed phantoms; PSS of the process tree; target 200 MB"
               + ("; results sent to a real Orthanc" if args.pacs else ""))


if __name__ == "__main__":
    main()
