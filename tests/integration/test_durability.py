"""Nothing acknowledged is ever lost: `kill -9` in the middle of a C-STORE stream."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.integration.conftest import dcmtk, dcmtk_env, storescu, wait_for
from tests.integration.test_dicom_ingest import phantom_dicoms

pytestmark = pytest.mark.integration


def acknowledged_files(storescu_log: str) -> list[Path]:
    """Files for which storescu received a Success response (from its -v log)."""
    acked, current = [], None
    for line in storescu_log.splitlines():
        if "Sending file:" in line:
            current = Path(line.split("Sending file:", 1)[1].strip())
        elif "Received Store Response (Success)" in line and current is not None:
            acked.append(current)
            current = None
    return acked


def test_kill_9_mid_stream_loses_nothing_acknowledged(box, tmp_path):
    files = phantom_dicoms(tmp_path / "phantoms", 80, kind="ct", seed=11)
    uid_of = {f: str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    log_path = tmp_path / "storescu.log"
    with open(log_path, "w") as log:
        sender = subprocess.Popen(
            [dcmtk("storescu"), "-v", "-aet", "MODALITY", "-aec", "CLINIBOX", "--no-halt",
             "127.0.0.1", str(box.port), *map(str, files)],
            stdout=log, stderr=subprocess.STDOUT, env=dcmtk_env(),
        )
        wait_for(lambda: log_path.read_text().count("(Success)") >= 25, 120,
                 "25 acknowledged C-STOREs")
        box.kill9()  # power cut while objects are arriving and being processed
        sender.wait(timeout=120)
    acked = acknowledged_files(log_path.read_text())
    assert 25 <= len(acked) < len(files), "the kill must land mid-stream"

    box.start()
    acked_uids = {uid_of[f] for f in acked}
    wait_for(lambda: len(box.db_rows("SELECT 1 FROM instances")) >= len(acked_uids), 60,
             "recovered rows")
    box.wait_idle(len(acked_uids))
    rows = {r["sop_instance_uid"]: r for r in box.cli_json("results")}
    missing = acked_uids - set(rows)
    assert not missing, f"acknowledged but lost: {sorted(missing)[:5]}"
    for uid in acked_uids:
        assert rows[uid]["status"] == "processed", rows[uid]
    results = box.db_rows("SELECT instance_id, COUNT(*) AS n FROM results GROUP BY instance_id")
    assert all(r["n"] == 1 for r in results)

    # The modality retries everything it was not sure about: the rest arrives,
    # nothing is stored or processed twice.
    retry = storescu(box.port, files)
    assert retry.returncode == 0, retry.stdout[-2000:]
    box.wait_idle(len(files))
    rows = box.cli_json("results")
    assert sorted(r["sop_instance_uid"] for r in rows) == sorted(uid_of.values())
    assert all(r["status"] == "processed" for r in rows)
    assert len(box.db_rows("SELECT 1 FROM results")) == len(files)
    spooled = list((box.state / "spool").rglob("*.dcm"))
    assert len(spooled) == len(files)  # no stray copies of duplicates
    assert not list((box.state / "spool" / "tmp").iterdir())


def test_restart_while_processing_resumes_the_queue(box_factory, tmp_path):
    # The worker is off while objects arrive, then the box is killed and
    # restarted with the worker on: everything queued is processed once.
    box = box_factory(worker={"enabled": False})
    files = phantom_dicoms(tmp_path / "phantoms", 10, seed=5)
    assert storescu(box.port, files).returncode == 0
    assert box.cli_json("status")["queued"] == 10
    box.kill9()
    box.config.write_text(box.config.read_text().replace(
        "[worker]\nenabled = false", "[worker]\nenabled = true"))
    box.start()
    started = time.monotonic()
    box.wait_idle(10)
    status = box.cli_json("status")
    assert status["processed"] == 10, status
    assert time.monotonic() - started < 120
