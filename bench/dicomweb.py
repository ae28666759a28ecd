"""The box's DICOMweb service as a client sees it: a study search, a whole series retrieved,
one frame, with ``dicomweb-client``.

`clinibox serve` runs with its viewer (HTTPS, gunicorn) and ``[dicomweb]`` on; storescu sends
it one study of N CT phantom slices (the project's generator; the bundled demo model, trained
on phantoms, not for clinical use), and the box analyses it and keeps its SR, SEG and key
image. The client logs in with HTTP Basic as a viewer account.

Reference, same run: Debian's Orthanc with its DICOMweb plugin (``orthanc-dicomweb``) holding
the same slices (sent by the same storescu), read by the same client over plain HTTP, without
a login. The box adds TLS and an account; Orthanc serves from its own index.

    .venv/bin/python -m bench.dicomweb [--slices 50] [--repeats 20]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from requests.auth import HTTPBasicAuth

from bench.common import BOX_DEFAULTS, REPO, figure, machine, percentiles, phantom_files, save
from bench.pacs_results import study_files
from tests.box_harness import echoscu, send, serve, stop, wait_for, write_config
from tests.orthanc_server import Orthanc
from tests.ports import free_port

AE = "CLINIBOX"
ACCOUNT = ("bench-reader", "reads-the-bench-2026")


def timed(action: Callable[[], object], repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` runs of ``action``."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def measure(client: DICOMwebClient, study: str, repeats: int) -> dict:
    """The search, the series and the frame, timed on ``client``."""
    [series] = {s["0020000E"]["Value"][0] for s in client.search_for_series(study)
                if s["00080060"]["Value"][0] == "CT"}
    instances = client.search_for_instances(study, series)
    first = instances[0]["00080018"]["Value"][0]
    size = sum(len(i.PixelData) for i in client.retrieve_series(study, series))
    return {
        "search_studies": percentiles(timed(lambda: client.search_for_studies(
            search_filters={"StudyInstanceUID": study}), repeats)),
        "retrieve_series": percentiles(timed(lambda: client.retrieve_series(study, series),
                                             max(3, repeats // 4))),
        "one_frame": percentiles(timed(lambda: client.retrieve_instance_frames(
            study, series, first, [1], media_types=(("application/octet-stream", "*"),)),
            repeats)),
        "instances": len(instances), "pixel_bytes": size,
    }


def main() -> int:
    """Run the benchmark and print (and save) its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dicomweb-") as scratch:
        root = Path(scratch)
        sources = phantom_files(REPO / "bench" / "out" / "phantoms-ct", 40, "ct")
        files = study_files(sources, root / "studies", args.slices, 0)
        for path in files:  # one patient: Orthanc files a study under its patient
            ds = pydicom.dcmread(path)
            ds.PatientID, ds.PatientName = "BENCH-DICOMWEB", "BENCH^DICOMWEB"
            ds.save_as(path, enforce_file_format=True)
        study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        port, web_port = free_port(), free_port()
        config = write_config(root / "box.toml", root / "state", port, BOX_DEFAULTS,
                              studies={"stable_seconds": 1.0}, dicomweb={"enabled": True},
                              web={"enabled": True, "host": "127.0.0.1", "port": web_port})
        box = serve(config, root / "serve.log", wait_for_model=True)
        try:
            wait_for(lambda: echoscu(port, ae_title=AE), 120, "clinibox to answer C-ECHO")
            subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "clinibox", "user",
                            "add", ACCOUNT[0], "--role", "clinician", "--password-stdin",
                            "--config", str(config)], input=ACCOUNT[1] + "\n", text=True,
                           check=True, capture_output=True, cwd=REPO)
            send(port, files, ae_title=AE)
            database = root / "state" / "clinibox.db"
            wait_for(lambda: _kept(database), 600, "the study's documents to be kept")
            session = requests.Session()
            session.trust_env = False
            session.auth = HTTPBasicAuth(*ACCOUNT)
            session.verify = str(root / "state" / "keys" / "web-cert.pem")
            box_figures = measure(DICOMwebClient(f"https://127.0.0.1:{web_port}/dicomweb",
                                                 session=session), study, args.repeats)
        finally:
            stop(box)
        with Orthanc(root / "orthanc", dicomweb=True) as pacs:
            send(pacs.dicom_port, files, ae_title=pacs.ae_title)
            plain = requests.Session()
            plain.trust_env = False
            reference = measure(DICOMwebClient(
                pacs.dicomweb_url, session=plain), study,
                args.repeats)
    megabytes = box_figures["pixel_bytes"] / 2**20
    details = {"machine": machine("pydicom", "dicomweb-client"), "slices": args.slices,
               "repeats": args.repeats, "box": box_figures, "orthanc_dicomweb": reference,
               "series_pixel_mb_per_s": {
                   "box": round(megabytes / (box_figures["retrieve_series"]["p50_ms"] / 1000),
                                1),
                   "orthanc": round(megabytes / (reference["retrieve_series"]["p50_ms"]
                                                 / 1000), 1)}}
    words = "Orthanc 1.10 with its DICOMweb plugin, same slices, same client, same run"
    kept = {
        "study search p50": figure(box_figures["search_studies"]["p50_ms"], "ms", words),
        "study search p50, Orthanc": figure(reference["search_studies"]["p50_ms"], "ms"),
        f"series of {args.slices} slices p50": figure(
            box_figures["retrieve_series"]["p50_ms"], "ms", words),
        f"series of {args.slices} slices p50, Orthanc": figure(
            reference["retrieve_series"]["p50_ms"], "ms"),
        "one frame p50": figure(box_figures["one_frame"]["p50_ms"], "ms", words),
        "one frame p50, Orthanc": figure(reference["one_frame"]["p50_ms"], "ms"),
    }
    save("dicomweb", details, kept,
         notes=f"one study of {args.slices} CT phantom slices; the box over HTTPS with HTTP "
               "Basic (a login remembered after the first), Orthanc over plain HTTP")
    return 0


def _kept(database: Path) -> bool:
    import sqlite3

    conn = sqlite3.connect(database)
    try:
        return bool(conn.execute("SELECT COUNT(*) FROM kept_documents").fetchone()[0])
    except sqlite3.Error:
        return False
    finally:
        conn.close()


if __name__ == "__main__":
    raise SystemExit(main())
