"""Issue 56, a rollout that believes only what it can see, with real parts: Mosquitto (TLS,
client certificates, the clinibox ACL), ``clinibox central serve`` (receiver and downlink
publisher, which advances rollouts every two seconds) and ``clinibox central rollout`` of a
real hospital-signed package archive to two enrolled boxes, box-1 the canary.

Each box's statuses are built by the service's own code (``telemetry.messages.build_status``)
and sealed with its enrolled key; its events are forged the way a box gone bad could send
them. box-1 sends a bare ``model_kept`` for the rollout while its status still reports the
old model: the step is ``kept`` but the next wave is not offered and the rollout's page says,
in Chinese, what it waits for. A status naming the package's version with another manifest
does not count either; the package's own name, version and manifest digest do: box-2 is
offered it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.store import Store
from clinibox_common.contracts import signing
from clinibox_common.contracts.envelope import load_x25519_public
from clinibox_common.contracts.package_archive import pack
from firmware_app.storage import db
from firmware_app.storage.outbox import Outbox
from firmware_app.telemetry.messages import ModelFacts, build_status
from tests.console_browser import SHOTS, admin_console, read_in_chinese, read_in_english
from tests.integration.conftest import REPO, to_toml, wait_for
from tests.model_packages import make_package
from tests.mqtt_broker import (
    Broker,
    MqttPki,
    client,
    close,
    make_mqtt_pki,
    publish_and_wait,
    receiver_settings,
)
from tests.telemetry_payloads import Box, public_pem

pytestmark = pytest.mark.integration

CLINIC, CANARY, SECOND, RECEIVER_ID = "clinic-a", "box-1", "box-2", "central-rollout-seen"
NAME = "clinibox-demo-lesion"
OLD, NEW = f"{NAME}@1.0.0", f"{NAME}@1.1.0"
#: how long to watch for a wave that must not come: three of the publisher's rounds
ROUNDS_S = 6.0


def _clinibox(*args: str, lang: str = "C.UTF-8") -> subprocess.CompletedProcess:
    env = {**os.environ, "LC_ALL": lang, "LANG": lang}
    done = subprocess.run([sys.executable, "-m", "clinibox", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@dataclass
class Hospital:
    """The broker, ``central serve``, the two boxes' keys and a box database to build
    statuses with."""

    root: Path
    pki: MqttPki
    broker: Broker
    config: Path
    database: Path
    boxes: dict[str, Box]
    box_db: sqlite3.Connection
    receiver: subprocess.Popen

    def publish(self, device: str, kind: str, payload: dict) -> None:
        """Publish a ``kind`` message as ``device``, on its own certificate, QoS 1."""
        identity = self.pki.device(CLINIC, device)
        sender = client(self.broker, identity.cert, identity.key, client_id=device)
        try:
            assert not publish_and_wait(sender, *self.boxes[device].envelope(
                kind, payload)).is_failure
        finally:
            close(sender)

    def status(self, device: str, model: str, digest: str) -> None:
        """A heartbeat as the service builds it, of a box running ``model`` whose manifest
        digest is ``digest``."""
        facts = ModelFacts(model, ("lesion",), 0.5, manifest_digest=digest)
        payload = build_status(self.box_db, Outbox(self.box_db, 100, {"lesion"}), facts,
                               "heartbeat", 60.0)
        self.publish(device, "status", payload)

    def kept(self, device: str, rollout_id: int) -> None:
        """A bare ``model_kept`` naming the rollout, as a box gone bad could send it."""
        self.publish(device, "event", {
            "schema": 1, "created_at": int(time.time()), "event": "model_kept",
            "reason": "trial_passed", "unit": "clinibox", "subject_model": NEW, "model": NEW,
            "rollout": rollout_id})

    def rollout(self, rollout_id: int) -> dict:
        """``clinibox central rollouts ID --json``: the rollout with its boxes by device."""
        row = json.loads(_clinibox("central", "rollouts", str(rollout_id), "--json",
                                   "--config", str(self.config)).stdout)[0]
        row["by_device"] = {b["device"]: b for b in row["boxes"]}
        return row

    def messages(self, device: str) -> int:
        conn = sqlite3.connect(self.database, timeout=30)
        try:
            return conn.execute("SELECT COUNT(*) FROM messages WHERE device = ?",
                                (device,)).fetchone()[0]
        finally:
            conn.close()


@pytest.fixture(scope="module")
def hospital(tmp_path_factory) -> Iterator[Hospital]:
    """Mosquitto and ``clinibox central serve``, box-1 and box-2 enrolled."""
    root = tmp_path_factory.mktemp("rollout-seen")
    pki = make_mqtt_pki(root / "pki", [(CLINIC, CANARY), (CLINIC, SECOND)])
    _clinibox("keys", "generate", "--kind", "hospital", "--out", str(root / "hospital"))
    _clinibox("keys", "generate", "--kind", "hospital-signing", "--out",
              str(root / "hospital-signing"))
    signing.generate_key_pair(root / "model-signing.pem", root / "model-signing.pub")
    database = root / "central.db"
    public = load_x25519_public(root / "hospital.pub")
    boxes = {d: Box(CLINIC, d, public, key=Ed25519PrivateKey.generate())
             for d in (CANARY, SECOND)}
    store = Store(f"sqlite:///{database}")
    for device, box in boxes.items():
        store.enrol(CLINIC, device, public_pem(box.key))
    store.close()
    box_db = db.connect(root / "box.db")
    db.initialise(box_db)
    with Broker(root / "broker", pki) as broker:
        settings = receiver_settings(broker, pki, database, root / "hospital.pem", RECEIVER_ID)
        settings["keys"]["hospital_signing_key"] = str(root / "hospital-signing.pem")
        settings["rollouts"] = {"trusted_keys": [str(root / "model-signing.pub")],
                                "chunk_kib": 256}
        config = root / "central.toml"
        config.write_text(to_toml(settings))
        with (root / "serve.log").open("a") as log:
            receiver = subprocess.Popen(
                [sys.executable, "-m", "clinibox", "central", "serve", "--config",
                 str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        place = Hospital(root, pki, broker, config, database, boxes, box_db, receiver)
        try:
            wait_for(lambda: f"Received SUBSCRIBE from {RECEIVER_ID}".encode()
                     in broker.log_path.read_bytes(), 60, "the receiver to subscribe")
            yield place
        finally:
            receiver.terminate()
            receiver.wait(timeout=30)
            box_db.close()


def _boxes_shot(driver) -> None:
    """A second screenshot, scrolled to the boxes' table."""
    from selenium.webdriver.common.by import By

    driver.execute_script("arguments[0].scrollIntoView()",
                          driver.find_element(By.ID, "rollout-boxes"))
    driver.save_screenshot(str(SHOTS / "zh-rollout-waits-to-see-the-package-boxes.png"))


def test_a_bare_kept_from_a_canary_running_the_old_model_does_not_move_the_rollout(
        hospital, tmp_path):
    package = make_package(tmp_path / "made", "1.1.0", key=hospital.root / "model-signing.pem")
    archive = pack(package, tmp_path / f"{NAME}-1.1.0.tar.gz").path
    digest = signing.manifest_digest(json.loads((package / "manifest.json").read_text()))
    out = _clinibox("central", "rollout", str(archive), "--to", f"{CLINIC}/{CANARY}", "--to",
                    f"{CLINIC}/{SECOND}", "--canary", "1", "--config",
                    str(hospital.config)).stdout
    rollout_id = int(out.split()[1].rstrip(":"))
    assert {d: b["step"] for d, b in hospital.rollout(rollout_id)["by_device"].items()} == {
        CANARY: "sent", SECOND: "waiting"}

    # the canary runs the old model, and says it kept the new one
    hospital.status(CANARY, OLD, "0" * 64)
    hospital.kept(CANARY, rollout_id)
    wait_for(lambda: hospital.rollout(rollout_id)["by_device"][CANARY]["step"] == "kept", 30,
             "the canary's kept to be stored")
    time.sleep(ROUNDS_S)
    row = hospital.rollout(rollout_id)
    canary = row["by_device"][CANARY]
    assert (canary["seen"], canary["running"], canary["package"]) == (False, OLD, NEW)
    assert row["by_device"][SECOND]["step"] == "waiting" and row["state"] == "active"
    with admin_console(hospital.database, tmp_path) as app:
        text, _ = read_in_chinese(app, tmp_path, f"/rollouts/{rollout_id}",
                                  "zh-rollout-waits-to-see-the-package", _boxes_shot)
        english = read_in_english(app, f"/rollouts/{rollout_id}")
    assert f"等待设备上报正在运行 {NEW}（设备上报的是 {OLD}）" in text, text
    assert f"waiting until the box reports it runs {NEW} (it reports {OLD})" in english
    assert english.count('class="unseen"') == 1  # the canary's; box-2 was offered nothing
    listed = ["central", "rollouts", str(rollout_id), "--config", str(hospital.config)]
    assert f"kept [not seen: status reports {OLD}]" in _clinibox(*listed).stdout
    assert f"等待设备上报正在运行 {NEW}（设备上报的是 {OLD}）" in _clinibox(
        *listed, lang="zh_CN.UTF-8").stdout

    # the package's name and version with another manifest: not the package either
    count = hospital.messages(CANARY)
    hospital.status(CANARY, NEW, "f" * 64)
    wait_for(lambda: hospital.messages(CANARY) > count, 30, "the status to be stored")
    time.sleep(ROUNDS_S)
    row = hospital.rollout(rollout_id)
    assert (row["by_device"][CANARY]["seen"], row["by_device"][SECOND]["step"]) == (
        False, "waiting")

    # what the box runs is the package: the next wave goes
    hospital.status(CANARY, NEW, digest)
    wait_for(lambda: hospital.rollout(rollout_id)["by_device"][SECOND]["step"] == "sent", 30,
             "box-2 to be offered the package")
    assert hospital.rollout(rollout_id)["by_device"][CANARY]["seen"] is True
    hospital.status(SECOND, NEW, digest)
    hospital.kept(SECOND, rollout_id)
    wait_for(lambda: hospital.rollout(rollout_id)["state"] == "done", 30, "the rollout's end")
