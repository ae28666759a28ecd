"""A running `clinibox serve` under systemd's notify protocol while its model is changed.

A unix datagram socket stands in for systemd's notify socket (the protocol is
the real one; systemd itself is not PID 1 here). The service must say READY,
feed the watchdog, switch to a newly installed package without a restart,
roll back by itself after dying during the trial and after a package fails
its golden cases on the service's backend, and queue a device event for the
hospital each time. Images come in through dcmtk's storescu.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from firmware_app.models.store import Trial, store_for
from firmware_app.settings.box import load
from phantoms.dicom import ct_dataset, write_dicom
from phantoms.images import generate
from tests.integration.conftest import storescu, wait_for
from tests.model_packages import make_package

pytestmark = pytest.mark.integration


class NotifySocket:
    """What a service manager hears on its notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.heard: list[str] = []
        #: messages before this index were already looked at by wait_for
        self.seen = 0

    def drain(self) -> None:
        while True:
            try:
                self.heard.append(self.sock.recv(4096).decode())
            except TimeoutError:
                return

    def wait_for(self, text: str, timeout: float = 120) -> str:
        """The first message after the one the last call returned that contains ``text``.

        (Not "from now on": one drain can read several datagrams, and READY=1 may
        already be in when RELOADING=1 is looked for.)
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain()
            for index in range(self.seen, len(self.heard)):
                if text in self.heard[index]:
                    self.seen = index + 1
                    return self.heard[index]
        pytest.fail(f"no notification with {text!r}; heard {self.heard[-10:]}")

    def model_running(self) -> str:
        """READY=1 (the box receives), then the STATUS that names the model it runs."""
        self.wait_for("READY=1")
        return self.wait_for("STATUS=model ")

    def close(self) -> None:
        self.sock.close()


def ct_file(path: Path, seed: int) -> Path:
    phantom = generate("ct", np.random.default_rng(seed), lesion=True)
    write_dicom(ct_dataset(phantom, {"PatientName": "LIFECYCLE^TEST"}), path)
    return path


def model_of_results(box) -> list[str]:
    return [r[0] for r in box.db_rows("SELECT model_id FROM results ORDER BY instance_id")]


def device_events(box) -> list[dict]:
    rows = box.db_rows("SELECT payload FROM outbox WHERE kind='event' ORDER BY seq")
    return [json.loads(r[0]) for r in rows]


def test_notify_switch_and_automatic_rollbacks(box_factory, tmp_path):
    box = box_factory(start=False, runtime={"backend": "onnxruntime", "precision": "fp32"},
                      models={"trial_jobs": 50})
    notify = NotifySocket(tmp_path / "notify")
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"}
    try:
        box.start(env=env)
        assert "clinibox-demo-lesion@1.0.0" in notify.model_running()
        notify.wait_for("WATCHDOG=1", timeout=5)
        notify.wait_for("WATCHDOG=1", timeout=5)  # fed again and again while healthy

        # install while running: the service switches to it without a restart
        packages = tmp_path / "packages"
        box.cli("model", "install", str(make_package(packages, "1.1.0")))
        notify.wait_for("RELOADING=1", timeout=30)
        assert "clinibox-demo-lesion@1.1.0" in notify.model_running()
        assert box.process is not None and box.process.poll() is None
        assert storescu(box.port, [ct_file(tmp_path / "a.dcm", 1)]).returncode == 0
        box.wait_idle(1)
        assert model_of_results(box) == ["clinibox-demo-lesion@1.1.0"]
        # the worker counts a job for the trial after the job's result is committed (a
        # crash in between leaves the trial one job longer, never a job counted twice), so
        # "idle" in the database can come a moment before the count in the state file
        wait_for(lambda: store_for(load(box.config)).read().trial.jobs >= 1, 60,
                 "the trial to count the job")
        assert store_for(load(box.config)).read().trial.jobs == 1

        # the process dies during the trial: the next start goes back to 1.0.0 by itself
        box.kill9()
        box.start(env=env)
        assert "clinibox-demo-lesion@1.0.0" in notify.model_running()
        assert device_events(box)[-1] | {"created_at": 0} == {
            "schema": 1, "created_at": 0, "event": "model_rolled_back",
            "reason": "worker_crashed", "unit": "clinibox",
            "model": "clinibox-demo-lesion@1.0.0", "subject_model": "clinibox-demo-lesion@1.1.0"}
        assert storescu(box.port, [ct_file(tmp_path / "b.dcm", 2)]).returncode == 0
        box.wait_idle(2)
        assert model_of_results(box)[-1] == "clinibox-demo-lesion@1.0.0"

        # a package that passed elsewhere but fails its golden cases on this service's
        # backend is switched to (as `model install` would) and must not stay
        config = load(box.config)
        store = store_for(config)
        staged = make_package(tmp_path / "elsewhere", "1.3.0", failing_golden=True)
        store.place(staged, "1.3.0")

        def switch(state) -> None:
            state.previous, state.active, state.floor = state.active, "1.3.0", "1.3.0"
            state.trial = Trial(version="1.3.0", since=time.time())

        store.update(switch)
        notify.wait_for("RELOADING=1", timeout=30)
        assert "clinibox-demo-lesion@1.0.0" in notify.model_running()
        last = device_events(box)[-1]
        assert (last["event"], last["reason"], last["subject_model"]) == (
            "model_rolled_back", "golden_cases_failed", "clinibox-demo-lesion@1.3.0")
        assert store.read().active == "1.0.0"
        assert "golden cases within tolerance" in box.log.read_text()

        box.stop()
        notify.wait_for("STOPPING=1", timeout=10)
    finally:
        box.stop()
        notify.close()
