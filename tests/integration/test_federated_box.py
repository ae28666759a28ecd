"""A box's labelled images reach a federated round end to end (issue 60): the box receives and
analyses phantoms, a clinician reviews each finding, and ``clinibox learning node`` (the box's
learning service, its real process) writes the case file from the box's database within its
hours and joins the hospital's SuperLink (``clinibox central superlink``) with its SuperNode;
``clinibox central federated-run`` trains the package's head on three of the four boxes
connected (each round samples as many as the run asks: SecAgg+ is set up for that many).

One box runs the real service; three others are SuperNodes over case files the test writes
(random maps of the model's shape), started as the service starts them: Flower's SuperNode
listens on a fixed local port, so two real boxes cannot share one machine.

The run's record counts three boxes in each round; the box's case
file holds what its reviews said; the SuperLink's state holds no identifier of the box's
images (the phantoms' patient names and UIDs).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.federated.superlink import superlink_problem
from clinibox_common.contracts.federated import FederatedRun
from firmware_app.learning.bundle_check import supernode_environment
from firmware_app.learning.cases import read_cases, write_cases
from firmware_app.learning.node import supernode_command
from tests.box_harness import wait_for
from tests.integration.test_docs_run_federated import _box_cases
from tests.model_packages import DEMO_PRIVATE_KEY
from tests.ports import free_port
from tests.tls_certs import CertificateAuthority
from tests.unit.firmware_app.test_learning_case_file import _analyse, _box, _review

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLINIBOX = str(Path(sys.executable).with_name("clinibox"))
IMAGES = 8
OTHER_BOXES = 3  # four boxes connected; each round trains on three of them
OTHER_CASES = 12  # the cases each simulated box holds (_box_cases)


@contextlib.contextmanager
def _processes() -> Iterator[list[subprocess.Popen]]:
    running: list[subprocess.Popen] = []
    try:
        yield running
    finally:
        for process in reversed(running):
            process.terminate()
        for process in running:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def _learning_status(box_toml: Path) -> str:
    """``clinibox learning status --json`` of the box, as its technician runs it."""
    return subprocess.run([CLINIBOX, "learning", "status", "--json", "--config", str(box_toml)],
                          capture_output=True, text=True, timeout=60).stdout


def _hours_now() -> str:
    """``[learning] hours`` that hold the next two hours."""
    hour = dt.datetime.now().hour
    return f"{hour}-{(hour + 2) % 24}"


def test_a_boxs_reviews_reach_a_round_through_its_learning_service(tmp_path):
    config = _box(tmp_path, trainable=True)
    landed = _analyse(config, IMAGES)
    _review(config, landed)
    ca = CertificateAuthority.create(tmp_path / "pki", name="hospital federation CA")
    cert, key = ca.issue_server("localhost", tmp_path / "pki", stem="superlink")
    port = free_port()
    address = f"localhost:{port}"
    box_toml = tmp_path / "clinibox.toml"
    box_toml.write_text(
        f'[storage]\nstate_dir = "{tmp_path / "state"}"\n[runtime]\nbackend = "onnxruntime"\n'
        f'precision = "fp32"\n[models]\ndir = "{tmp_path / "packages"}"\nversion = "1.2.0"\n'
        f'trusted_keys = ["{DEMO_PRIVATE_KEY.with_suffix(".pub")}"]\n'
        f'[learning]\nenabled = true\nsuperlink = "{address}"\n'
        f'root_certificates = "{ca.cert_path}"\nhours = "{_hours_now()}"\n')
    out = tmp_path / "runs" / "first"
    with _processes() as running, open(tmp_path / "superlink.log", "w") as link_log, \
            open(tmp_path / "node.log", "w") as node_log:
        running.append(subprocess.Popen(
            [CLINIBOX, "central", "superlink", "--certificate", str(cert), "--key", str(key),
             "--ca", str(ca.cert_path), "--host", "127.0.0.1", "--port", str(port),
             "--database", str(tmp_path / "link" / "superlink.db"), "--runs",
             str(tmp_path / "runs")], stdout=link_log, stderr=subprocess.STDOUT))
        running.append(subprocess.Popen(
            [CLINIBOX, "learning", "node", "--config", str(box_toml)],
            stdout=node_log, stderr=subprocess.STDOUT))
        for i in range(OTHER_BOXES):
            cases = write_cases(tmp_path / f"other-{i}" / "cases.npz", _box_cases(i))
            running.append(subprocess.Popen(
                supernode_command(address, ca.cert_path, cases, free_port()),
                env=supernode_environment(tmp_path / f"other-{i}" / "bin"),
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        case_file = tmp_path / "state" / "learning" / "cases.npz"
        wait_for(case_file.is_file, 180, "the box's case file, written by its learning service")
        # what a technician at the box reads: the service runs, on the box's reviewed cases
        wait_for(lambda: '"running": true' in _learning_status(box_toml), 60,
                 "clinibox learning status to say the SuperNode runs")
        status = json.loads(_learning_status(box_toml))
        assert status["state"] == "running" and status["lesions"] + status["clear"] == IMAGES
        wait_for(lambda: superlink_problem(address, ca.cert_path) is None, 120,
                 "the SuperLink answering")
        done = subprocess.run(
            [CLINIBOX, "central", "federated-run", "--package",
             str(tmp_path / "packages" / "clinibox-demo-lesion" / "1.2.0"), "--superlink",
             address, "--ca", str(ca.cert_path), "--runs", str(tmp_path / "runs"), "--out",
             str(out), "--boxes", "3", "--rounds", "2", "--local-steps", "10"],
            capture_output=True, text=True, timeout=900)
    node_said = (tmp_path / "node.log").read_text(errors="replace")
    server_log = (out / "server.log").read_text() if (out / "server.log").exists() else ""
    assert done.returncode == 0, (done, server_log[-3000:], node_said[-3000:])
    # the box's case file: each reviewed image with what its review said of the truth
    cases = read_cases(case_file, 24)
    lesions = sum(truth for _i, truth in landed)
    assert len(cases.labels) == IMAGES and int(cases.labels.sum()) == lesions
    assert f"case file with {lesions} lesion(s) and {IMAGES - lesions} clear" in node_said
    record = FederatedRun.read(out / "run.json")
    assert record.package == "clinibox-demo-lesion 1.2.0"
    assert record.boxes_per_round == [3, 3]  # three of the four connected, as asked
    assert len(record.cases_per_round) == 2
    assert set(record.cases_per_round) <= {IMAGES + 2 * OTHER_CASES, 3 * OTHER_CASES}
    # nothing of the box's images at the hospital: its DICOM identifiers are nowhere there
    held = (tmp_path / "link" / "superlink.db").read_bytes() + server_log.encode() + \
        (tmp_path / "superlink.log").read_bytes()
    assert b"1.2.40." not in held  # the images' SOP instance UIDs
    assert str(tmp_path / "state").encode() not in held  # nor where the box keeps them
