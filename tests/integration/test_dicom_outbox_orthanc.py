"""The DICOM outbox against a real PACS (Debian's Orthanc, started by the tests).

Documents (simple but valid SR, SEG and Secondary Capture objects built here) are
queued with ``enqueue_documents`` and delivered by the production sender
(``DicomSender``): in a thread of the test for most tests, and, for the ``kill -9``,
in a child process of its own on the same database and outbox folder
(``python -m firmware_app.dicom_out.sender``-like code through ``python -c``), so
that the kill takes down exactly the sender mid-association as a power cut would.
``clinibox serve`` would add model loading and golden cases on the shared CPUs and
has no study-completion writer yet to produce documents; the sender thread it
starts (``Appliance._start_dicom_sender``) runs this same ``DicomSender.run``.

What arrived is read from Orthanc's REST API; every C-STORE that reached Orthanc
is counted by its Lua filter, so "once" means sent once, not only stored once.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from firmware_app.dicom_out import scu
from firmware_app.dicom_out import sender as sender_module
from firmware_app.dicom_out.outbox import enqueue_documents
from firmware_app.dicom_out.sender import DicomSender
from firmware_app.settings import box as cfg
from firmware_app.settings.pacs import PacsDestination
from firmware_app.storage import db
from tests.orthanc_server import Orthanc, orthanc_fixture, wait_until
from tests.unit.firmware_app.test_dicom_outbox import document

pytestmark = pytest.mark.integration
orthanc = orthanc_fixture
REPO = Path(__file__).resolve().parents[2]


def box_config(root: Path, pacs: Orthanc, *, ae_title: str | None = None,
               retry_max: float = 1.0) -> cfg.Config:
    """A box whose one destination ``pacs`` is the test's Orthanc; quick retries."""
    config = cfg.Config()
    config.storage.state_dir = str(root / "state")
    config.pacs.retry_min_seconds = 0.2
    config.pacs.retry_max_seconds = retry_max
    config.pacs.connect_timeout = 10.0
    config.pacs.destinations = [PacsDestination(
        name="pacs", ae_title=ae_title or pacs.ae_title, host=pacs.host, port=pacs.dicom_port,
        send=["sr", "seg", "key_image"])]
    db.open_database(config.database_path).close()
    return config


def config_toml(config: cfg.Config) -> str:
    """``config`` as the TOML file a box would read (the keys these tests set)."""
    (d,) = config.pacs.destinations
    return (f'[storage]\nstate_dir = "{config.storage.state_dir}"\n'
            f"[pacs]\nretry_min_seconds = {config.pacs.retry_min_seconds}\n"
            f"retry_max_seconds = {config.pacs.retry_max_seconds}\n"
            f"connect_timeout = {config.pacs.connect_timeout}\n"
            f'[[pacs.destinations]]\nname = "{d.name}"\nae_title = "{d.ae_title}"\n'
            f'host = "{d.host}"\nport = {d.port}\nsend = ["sr", "seg", "key_image"]\n')


def queue(config: cfg.Config, documents) -> list[str]:
    """Enqueue ``documents`` for the configured destinations; their SOP Instance UIDs."""
    conn = db.connect(config.database_path)
    try:
        enqueue_documents(conn, config.dicom_out_dir, documents, config.pacs.destinations)
    finally:
        conn.close()
    return [d.sop_instance_uid for d in documents]


def outbox(config: cfg.Config, sql: str = "SELECT * FROM dicom_outbox ORDER BY id") -> list[dict]:
    """Rows of the box's database (a connection of the test's own)."""
    conn = db.connect(config.database_path)
    try:
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def figures(config: cfg.Config) -> dict:
    """``clinibox status``'s figures for destination ``pacs``."""
    from firmware_app.cli.commands import status_report

    (pacs,) = [d for d in status_report(config)["pacs"] if d["name"] == "pacs"]
    return pacs


def all_sent(config: cfg.Config, count: int) -> bool:
    """Whether ``count`` rows exist and every one is sent."""
    states = [r["state"] for r in outbox(config)]
    return len(states) == count and set(states) == {"sent"}


@contextlib.contextmanager
def running_sender(config: cfg.Config) -> Iterator[threading.Event]:
    """The sender's thread as the service runs it; yields its wake event, stops it after."""
    stop, wake = threading.Event(), threading.Event()
    thread = threading.Thread(target=DicomSender(config).run, args=(stop, wake),
                              name="dicom-sender", daemon=True)
    thread.start()
    try:
        yield wake
    finally:
        stop.set()
        wake.set()
        thread.join(30)
        assert not thread.is_alive(), "the sender did not stop"


def study_documents(study: str | None = None):
    """An SR, a SEG and a key image for one study."""
    study = study or generate_uid()
    return [document("sr", study), document("seg", study), document("key_image", study)]


def test_results_arrive_in_orthanc_once_over_one_association(tmp_path, orthanc, monkeypatch):
    config = box_config(tmp_path, orthanc)
    associations = []
    opened = scu.open_association

    def counting(*args, **kwargs):
        associations.append(args[0].name)
        return opened(*args, **kwargs)

    monkeypatch.setattr(sender_module.scu, "open_association", counting)
    docs = study_documents()
    uids = queue(config, docs)
    with running_sender(config):
        wait_until(lambda: all_sent(config, 3), 60, "three documents sent")
        time.sleep(1.0)  # passes go on: nothing is sent again
    assert associations == ["pacs"]  # one association carried all three

    assert sorted(orthanc.sop_instance_uids()) == sorted(uids)
    assert orthanc.receptions() == dict.fromkeys(uids, 1)
    by_uid = {}
    for instance in orthanc.instances():
        tags = orthanc.instance_tags(instance)
        by_uid[tags["SOPInstanceUID"]] = tags
    assert {by_uid[d.sop_instance_uid]["Modality"] for d in docs} == {"SR", "SEG", "OT"}
    assert {tags["StudyInstanceUID"] for tags in by_uid.values()} == {docs[0].study_key}
    assert by_uid[docs[0].sop_instance_uid]["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.88.34"
    status = figures(config)
    assert (status["waiting"], status["sent"], status["last_error"]) == (0, 3, None)
    assert status["last_sent_at"] is not None


def test_outage_backlog_grows_then_everything_arrives_once(tmp_path, orthanc):
    config = box_config(tmp_path, orthanc)
    orthanc.stop()  # the PACS is down
    with running_sender(config) as wake:
        first = queue(config, study_documents())
        wake.set()
        wait_until(lambda: min(r["attempts"] for r in outbox(config)) >= 2, 60,
                   "two failed tries of each document")
        down = figures(config)
        assert down["waiting"] == 3 and down["sent"] == 0
        assert "cannot connect to PACS@127.0.0.1" in down["last_error"]
        assert "refused" in down["last_error"].lower()
        second = queue(config, study_documents())  # the backlog grows during the outage
        wake.set()
        wait_until(lambda: figures(config)["waiting"] == 6, 30, "six waiting")
        events = outbox(config, "SELECT message FROM events WHERE component = 'pacs pacs'")
        assert 1 <= len(events) <= 2  # recorded when the failure began, not on every retry

        orthanc.start()  # the PACS is back (same ports, same storage)
        wait_until(lambda: all_sent(config, 6), 60, "the backlog delivered")
    uids = first + second
    assert sorted(orthanc.sop_instance_uids()) == sorted(uids)
    assert orthanc.receptions() == dict.fromkeys(uids, 1)  # each sent once
    up = figures(config)
    assert (up["waiting"], up["sent"]) == (0, 6) and up["last_sent_at"] > up["last_error_at"]


SENDER_CHILD = """
import logging, signal, sys, threading
from firmware_app.dicom_out.sender import DicomSender
from firmware_app.settings.box import load
logging.basicConfig(level=logging.INFO)
stop, wake = threading.Event(), threading.Event()
signal.signal(signal.SIGTERM, lambda *_: (stop.set(), wake.set()))
DicomSender(load(sys.argv[1])).run(stop, wake)
"""


def start_sender_process(config_path: Path, log_path: Path) -> subprocess.Popen:
    """The production sender in a child process of its own (the service's thread, alone)."""
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-c", SENDER_CHILD, str(config_path)],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def test_kill_9_of_the_sender_mid_backlog_loses_nothing(tmp_path):
    with Orthanc(tmp_path / "orthanc", store_delay=0.15) as slow_pacs:  # a slow PACS
        config = box_config(tmp_path, slow_pacs)
        config_path = tmp_path / "box.toml"
        config_path.write_text(config_toml(config))
        docs = [doc for _ in range(10) for doc in study_documents()]
        uids = queue(config, docs)
        log_path = tmp_path / "sender.log"
        child = start_sender_process(config_path, log_path)
        try:
            wait_until(lambda: sum(slow_pacs.receptions().values()) >= 8, 60,
                       "eight documents on their way")
            child.send_signal(signal.SIGKILL)  # power cut in the middle of the association
            child.wait(30)
        finally:
            child.kill()
        sent_before = sum(r["state"] == "sent" for r in outbox(config))
        assert 0 < sent_before < len(uids), "the kill must land mid-backlog"
        assert len(slow_pacs.sop_instance_uids()) < len(uids)

        child = start_sender_process(config_path, log_path)  # the box starts again
        try:
            wait_until(lambda: all_sent(config, len(uids)), 60, "everything delivered")
            child.send_signal(signal.SIGTERM)
            assert child.wait(30) == 0  # a graceful stop
        finally:
            child.kill()
        stored = slow_pacs.sop_instance_uids()
        assert sorted(stored) == sorted(uids)  # all arrived, each stored once
        received = slow_pacs.receptions()
        assert set(received) == set(uids)
        # only the one document in flight at the kill may have been sent twice
        assert sum(received.values()) <= len(uids) + 1, received.most_common(3)
        assert "Traceback" not in log_path.read_text()


def test_a_refused_association_is_retried_with_backoff_and_says_why(tmp_path):
    with Orthanc(tmp_path / "orthanc", check_called_aet=True) as strict_pacs:
        config = box_config(tmp_path, strict_pacs, ae_title="WRONG", retry_max=1.6)
        uids = queue(config, [document("sr")])
        with running_sender(config):
            wait_until(lambda: outbox(config)[0]["attempts"] >= 3, 60, "three refusals")
            time.sleep(2.0)
        (row,) = outbox(config)
        # 0.2, 0.4, 0.8, 1.6 s apart: a handful of tries, not one every pass (50 ms)
        assert 3 <= row["attempts"] <= 8, row["attempts"]
        assert row["state"] == "pending" and row["next_attempt_at"] > row["created_at"] + 1
        status = figures(config)
        assert status["waiting"] == 1
        recorded = outbox(config, "SELECT message, code FROM events WHERE component = 'pacs pacs'")
        events = [e["message"] for e in recorded]
        refusals = [m for m in events if m.startswith("association rejected by")]
        assert len(refusals) == 1  # one event for the refusal, however often it is retried
        assert {e["code"] for e in recorded if e["message"] in refusals} == {
            "pacs_failed:rejected:called_ae"}  # the code the pages say in words
        assert refusals[0].startswith("association rejected by WRONG@127.0.0.1")
        assert "called ae title not recognised" in refusals[0].lower()
        # Orthanc closes the connection as it refuses; once in a while the reset reaches the
        # box before the refusal is read, and that attempt (the last one too) is told as what
        # it was
        reset = "ended the association request without answering it"
        assert all(reset in m for m in events if m not in refusals), events
        assert status["last_error"] in refusals or reset in status["last_error"], status
        assert strict_pacs.receptions() == {}

        # the technician corrects the AE title: the waiting document goes out
        config.pacs.destinations[0].ae_title = strict_pacs.ae_title
        with running_sender(config):
            wait_until(lambda: all_sent(config, 1), 60, "delivered after the fix")
        assert strict_pacs.sop_instance_uids() == uids


def test_a_document_the_pacs_refuses_waits_while_the_rest_of_the_batch_arrives(tmp_path,
                                                                                orthanc):
    config = box_config(tmp_path, orthanc)
    study = generate_uid()
    odd = document("key_image", study)
    odd.dataset.SOPClassUID = odd.dataset.file_meta.MediaStorageSOPClassUID = "1.2.3.4.5.6.7"
    good = [document("sr", study), document("seg", study)]
    queue(config, [*good, odd])
    with running_sender(config):
        wait_until(lambda: sum(r["state"] == "sent" for r in outbox(config)) == 2, 60,
                   "the two documents Orthanc takes")
        wait_until(lambda: max(r["attempts"] for r in outbox(config)
                               if r["state"] == "pending") >= 1, 30, "the refused one tried")
    (waiting,) = [r for r in outbox(config) if r["state"] == "pending"]
    assert waiting["sop_instance_uid"] == odd.sop_instance_uid
    assert "1.2.3.4.5.6.7" in waiting["last_error"]
    assert sorted(orthanc.sop_instance_uids()) == sorted(d.sop_instance_uid for d in good)
    assert odd.sop_instance_uid in figures(config)["last_error"]
    # no accepted presentation context for the odd class: its code says so
    assert figures(config)["last_error_code"] == "pacs_failed:cannot_send"


def test_documents_go_over_tls_to_a_pacs_that_asks_for_it(tmp_path):
    """Orthanc with DICOM TLS (mutual: it asks for the box's client certificate)."""
    from tests.tls_certs import make_pki

    pki = make_pki(tmp_path / "pki")
    tls = {"DicomTlsEnabled": True, "DicomTlsCertificate": str(pki.server_cert),
           "DicomTlsPrivateKey": str(pki.server_key),
           "DicomTlsTrustedCertificates": str(pki.ca_cert),
           "DicomTlsRemoteCertificateRequired": True}
    with Orthanc(tmp_path / "orthanc", extra=tls) as pacs:
        plain = box_config(tmp_path / "plain", pacs)  # the same PACS without TLS: refused
        queue(plain, [document("sr")])
        with running_sender(plain):
            wait_until(lambda: bool(outbox(plain)[0]["last_error"]), 60,
                       "the plain association to fail")
        assert outbox(plain)[0]["state"] == "pending"
        config = box_config(tmp_path / "tls", pacs)
        (destination,) = config.pacs.destinations
        destination.host = "localhost"  # the name its certificate carries
        destination.tls, destination.ca_file = True, str(pki.ca_cert)
        destination.cert_file, destination.key_file = str(pki.client_cert), str(pki.client_key)
        uids = queue(config, study_documents())
        with running_sender(config):
            wait_until(lambda: all_sent(config, 3), 60, "three documents sent over TLS")
        assert sorted(pacs.sop_instance_uids()) == sorted(uids)
        assert set(pacs.receptions().values()) == {1}
