"""From a study's last instance to its SR in the PACS, and to its alert in the outbox.

A real Orthanc (Debian's, started here like the tests do) is the clinic's PACS;
`clinibox serve` runs with it as its one destination and ``[studies]
stable_seconds`` = S. For each of K studies of N CT phantom slices (the
project's generator; the bundled demo model, trained on phantoms, not for
clinical use), storescu sends the slices in one association; then:

* SR latency: when Orthanc first holds the study's SR, less when the last slice
  was answered, less S (what the box adds beyond the stable period: the
  completion tick, making the SR, SEG and key image, writing them durably, the
  association and the C-STORE);
* alert latency: the alert's ``created_at`` in the box's outbox less the last
  slice's ``received_at`` (both the box's clock), less S.

Reference, same run: the box's own documents of one study sent straight to
Orthanc by dcmtk's dcmsend (one association): the floor of the delivery step.

    .venv/bin/python -m bench.pacs_results [--studies 8] [--slices 10] [--stable 2]
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from bench.common import BOX_DEFAULTS, REPO, figure, machine, percentiles, phantom_files, save
from tests.box_harness import dcmtk_env, echoscu, send, serve, stop, wait_for, write_config
from tests.orthanc_server import Orthanc  # the tests' Orthanc, not written twice
from tests.ports import free_port

AE = "CLINIBOX"
#: dcmtk's dcmsend proposes each file's own SOP class (storescu's default list lacks the 3D SR)
DCMSEND = "/usr/bin/dcmsend"


def study_files(sources: list[Path], folder: Path, slices: int, index: int) -> list[Path]:
    """``slices`` phantom files rewritten as one new study (positions along z)."""
    study = generate_uid()
    series = generate_uid(entropy_srcs=[study, "series"])
    out = folder / f"study{index}"
    out.mkdir(parents=True)
    paths = []
    for n in range(slices):
        ds = pydicom.dcmread(sources[(index * slices + n) % len(sources)])
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study, "frame"])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = n + 1
        x, y, _ = ds.ImagePositionPatient
        ds.ImagePositionPatient = [x, y, n * 2.5]
        path = out / f"{n}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def sr_in_pacs(pacs: Orthanc, study_uid: str) -> bool:
    """Whether Orthanc holds an SR of the study."""
    found = pacs.post("/tools/find", {"Level": "Instance", "Expand": True,
                                      "Query": {"StudyInstanceUID": study_uid,
                                                "Modality": "SR"}})
    return bool(found)


def main() -> int:
    """Run the benchmark and print (and save) its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--stable", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pacs-") as scratch:
        root = Path(scratch)
        sources = phantom_files(REPO / "bench" / "out" / "phantoms-ct", 40, "ct")
        with Orthanc(root / "orthanc") as pacs:
            port = free_port()
            config = write_config(
                root / "box.toml", root / "state", port, BOX_DEFAULTS,
                studies={"stable_seconds": args.stable},
                pacs={"retry_min_seconds": 0.5, "retry_max_seconds": 2.0, "destinations": [{
                    "name": "pacs", "ae_title": pacs.ae_title, "host": pacs.host,
                    "port": pacs.dicom_port, "send": ["sr", "seg", "key_image"]}]})
            box = serve(config, root / "serve.log", wait_for_model=True)
            try:
                wait_for(lambda: echoscu(port, ae_title=AE), 120, "clinibox to answer C-ECHO")
                sr_ms, studies = [], []
                for index in range(args.studies):
                    files = study_files(sources, root / "studies", args.slices, index)
                    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True)
                              .StudyInstanceUID)
                    send(port, files, ae_title=AE)
                    answered = time.monotonic()
                    wait_for(lambda u=uid: sr_in_pacs(pacs, u), 120, "the SR in the PACS")
                    sr_ms.append((time.monotonic() - answered - args.stable) * 1000)
                    studies.append(uid)
                db = sqlite3.connect(root / "state" / "clinibox.db")
                alert_ms = [row[0] * 1000 - args.stable * 1000 for row in db.execute(
                    "SELECT o.created_at - MAX(i.received_at) FROM instances i"
                    " JOIN outbox o ON o.kind = 'alert'"
                    " AND json_extract(o.payload, '$.instances') IS NOT NULL"
                    " JOIN alerted_studies a ON a.seq = o.seq"
                    " AND a.study_key = i.study_instance_uid GROUP BY i.study_instance_uid")]
                documents = sorted((root / "state" / "dicom_out").glob("*.dcm"))[:3]
                db.close()
            finally:
                stop(box)
            reference = []
            for _ in range(5):
                started = time.perf_counter()
                done = subprocess.run([DCMSEND, "-aec", pacs.ae_title, pacs.host,
                                       str(pacs.dicom_port), *map(str, documents)],
                                      env=dcmtk_env(), capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"dcmsend failed: {done.stdout[-1500:]}"
                                       f"{done.stderr[-1500:]}")
                reference.append((time.perf_counter() - started) * 1000)
    details = {
        "machine": machine("pynetdicom", "highdicom"),
        "studies": args.studies, "slices_per_study": args.slices,
        "stable_seconds": args.stable,
        "sr_in_pacs_beyond_stable": percentiles(sr_ms),
        "alert_in_outbox_beyond_stable": percentiles(alert_ms) if alert_ms else None,
        "alerts": len(alert_ms),
        "reference_dcmsend_of_the_documents": percentiles(reference),
        "documents_per_study": len(documents),
    }
    reference = "dcmtk's dcmsend of the box's own documents of one study, same run"
    sr, alert, floor = (details["sr_in_pacs_beyond_stable"],
                        details["alert_in_outbox_beyond_stable"],
                        details["reference_dcmsend_of_the_documents"])
    kept = {"SR in the PACS beyond the stable period p50": figure(sr["p50_ms"], "ms", reference),
            "SR in the PACS beyond the stable period p95": figure(sr["p95_ms"], "ms", reference),
            "dcmsend of the documents p50": figure(floor["p50_ms"], "ms"),
            "alert in the outbox beyond the stable period p50": figure(
                alert["p50_ms"] if alert else None, "ms")}
    save("pacs_results", details, kept,
         notes=f"{args.studies} studies of {args.slices} CT phantom slices, [studies] "
               f"stable_seconds = {args.stable:g}, a real Orthanc as the PACS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
