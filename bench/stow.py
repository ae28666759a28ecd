"""The box's results sent by STOW-RS against the same results sent by C-STORE, to one Orthanc.

Debian's Orthanc with its DICOMweb plugin (the tests' harness) is the PACS. The box's
sender (``DicomSender.send_due``: one pass, one link carrying the batch) delivers B
batches of D documents each (an SR, a SEG and a key image per study, as the tests build
them) by:

* C-STORE, one association per batch (the reference, the same run);
* STOW-RS over plain HTTP, one kept-alive connection per batch, a POST per document;
* STOW-RS over HTTPS with HTTP Basic, through nginx as the PACS's TLS front
  (``tests/tls_front.py``: Orthanc 1.10 cannot serve HTTPS), as a clinic would set it up.

Each batch is timed from the pass's start to its end (every document marked sent in the
box's database): documents a second, and ms per document.

    .venv/bin/python -m bench.stow [--batches 10] [--documents 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import figure, percentiles, save
from firmware_app.dicom_out.outbox import enqueue_documents
from firmware_app.dicom_out.sender import DicomSender
from firmware_app.settings import box as cfg
from firmware_app.settings.pacs import PacsDestination
from firmware_app.storage import db
from tests.orthanc_server import Orthanc
from tests.tls_certs import make_pki
from tests.tls_front import TlsFront
from tests.unit.firmware_app.test_dicom_outbox import document

USER, PASSWORD = "bench", "bench-stow-password"
KINDS = ("sr", "seg", "key_image")


def timed_batches(root: Path, destination: PacsDestination, batches: int,
                  documents: int) -> list[float]:
    """Seconds of each batch's pass through a fresh box of its own."""
    config = cfg.Config()
    config.storage.state_dir = str(root / "state")
    config.pacs.destinations = [destination]
    db.open_database(config.database_path).close()
    sender = DicomSender(config)
    seconds = []
    for _ in range(batches):
        made = [document(KINDS[n % len(KINDS)]) for n in range(documents)]
        conn = db.connect(config.database_path)
        try:
            enqueue_documents(conn, config.dicom_out_dir, made, config.pacs.destinations)
        finally:
            conn.close()
        started = time.perf_counter()
        done = sender.send_due()
        seconds.append(time.perf_counter() - started)
        sent = done[destination.name].sent
        if sent != documents:
            raise RuntimeError(f"{destination.name}: {sent} of {documents} sent: "
                               f"{done[destination.name].errors}")
    return seconds


def summary(seconds: list[float], documents: int) -> dict:
    """Per document ms (percentiles over batches) and documents a second (median)."""
    per_document = [s * 1000 / documents for s in seconds]
    ordered = sorted(seconds)
    return {"ms_per_document": percentiles(per_document),
            "documents_per_second": round(documents / ordered[len(ordered) // 2], 1)}


def main() -> int:
    """Run the benchmark and print (and save) its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--documents", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-stow-") as scratch:
        root = Path(scratch)
        pki = make_pki(root / "pki")
        secret = root / "password"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o600)
        with Orthanc(root / "orthanc", dicomweb=True) as pacs, \
                Orthanc(root / "archive", dicomweb=True, users={USER: PASSWORD}) as archive, \
                TlsFront(root / "nginx", archive.http_port, pki.server_cert,
                         pki.server_key) as front:
            ways = {
                "c_store": PacsDestination(name="dimse", ae_title=pacs.ae_title,
                                           host=pacs.host, port=pacs.dicom_port,
                                           send=list(KINDS)),
                "stow_http": PacsDestination(name="stow", protocol="stow-rs",
                                             url=pacs.dicomweb_url, send=list(KINDS)),
                "stow_https_basic": PacsDestination(
                    name="stow-tls", protocol="stow-rs",
                    url=f"https://localhost:{front.port}/dicom-web", username=USER,
                    password_file=str(secret), ca_file=str(pki.ca_cert), send=list(KINDS)),
            }
            details = {way: summary(timed_batches(root / way, destination, args.batches,
                                                  args.documents), args.documents)
                       for way, destination in ways.items()}
    reference = "C-STORE to the same Orthanc by the same sender, one association a batch, " \
                "same run"
    kept = {}
    for way, words in (("stow_http", "STOW-RS, plain HTTP"),
                       ("stow_https_basic", "STOW-RS, HTTPS + Basic via nginx")):
        kept[f"{words}: ms per document p50"] = figure(
            details[way]["ms_per_document"]["p50_ms"], "ms", reference)
        kept[f"{words} ÷ C-STORE"] = figure(
            round(details[way]["ms_per_document"]["p50_ms"]
                  / details["c_store"]["ms_per_document"]["p50_ms"], 2), "×", reference)
    kept["C-STORE: ms per document p50"] = figure(
        details["c_store"]["ms_per_document"]["p50_ms"], "ms")
    save("stow", details, kept,
         notes=f"{args.batches} batches of {args.documents} documents (SR, SEG, key image in "
               "turn, as the tests build them); Orthanc 1.10 with its DICOMweb plugin")
    for name, value in kept.items():
        print(f"{name}: {value['value']} {value['unit']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
