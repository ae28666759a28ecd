"""The self-test's DICOM echo names whose service answered on ``[dicom] port``.

A technician whose box shares its port with another DICOM program (Orthanc, another
vendor's receiver; here dcmtk's storescp) must not read "OK": the echo line names that
program and fails. A running clinibox is named with its receiver and process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_app.ops.selftest import check_dicom_echo
from firmware_app.settings.box import load
from tests.integration.conftest import (
    REPO,
    dcmtk,
    dcmtk_env,
    echoscu,
    receiver_processes,
    to_toml,
    wait_for,
)
from tests.ports import free_ports

pytestmark = pytest.mark.integration


def test_another_program_on_the_port_is_named_and_fails(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    config = tmp_path / "box.toml"
    (tmp_path / "no-models").mkdir()
    config.write_text(to_toml({"storage": {"state_dir": str(tmp_path / "state")},
                               "dicom": {"host": "127.0.0.1", "port": port},
                               "models": {"dir": str(tmp_path / "no-models")}}))
    foreign = subprocess.Popen([dcmtk("storescp"), "--output-directory", str(tmp_path), str(port)],
                               env=dcmtk_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: echoscu(port), 60, "storescp to answer C-ECHO")
        check = check_dicom_echo(load(config), 3)
        assert check.status == "FAIL", check
        assert check.detail.startswith(
            f"port {port} answered by another program (storescp, pid {foreign.pid}, "
            "implementation OFFIS_DCMTK_"), check.detail
        assert " 1.2.276.0.7230010.3." in check.detail  # dcmtk's implementation class UID
        assert check.detail.endswith("): clinibox is not receiving there; stop that program "
                                     "or change [dicom] port")

        # the technician's table says the same, and that the box waits for a model
        done = subprocess.run([sys.executable, "-m", "clinibox", "selftest", "--config",
                               str(config), "--json", "--timeout", "3"], capture_output=True,
                              text=True, cwd=REPO, timeout=300)
        assert done.returncode == 1, done.stderr
        checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
        assert checks["DICOM echo"]["status"] == "FAIL"
        assert f"(storescp, pid {foreign.pid}, " in checks["DICOM echo"]["detail"]
        package = checks["model package"]
        assert package["status"] == "FAIL"
        assert package["detail"].startswith("waiting for a model: ")
        assert package["detail"].endswith(
            "; images are received and held until the hospital's rollout or "
            "`clinibox model install` gives one")
    finally:
        foreign.kill()
        foreign.wait()


def test_clinibox_is_named_with_its_receiver_and_process(box_factory, receiver: str) -> None:
    box = box_factory(dicom={"receiver": receiver})
    assert box.process is not None
    check = check_dicom_echo(load(box.config), 3)
    assert check.status == "PASS", check
    if receiver == "native":
        (listener,) = receiver_processes(box.process.pid)
        who = f"native receiver, pid {listener.pid}"
    else:
        who = f"Python receiver, pid {box.process.pid}"
    assert check.detail.startswith(f"answered by clinibox ({who}) on CLINIBOX@127.0.0.1:"
                                   f"{box.port}: C-ECHO from SELFTEST in "), check.detail
    assert check.detail.endswith(" ms")
