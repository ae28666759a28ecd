"""Model rollouts from the hospital, end to end on real parts.

One site runs for the module: Mosquitto with TLS and the ACL (``tests/mqtt_broker.py``),
``clinibox central serve`` (receiver, downlink publisher) on SQLite, and three boxes —
``clinibox serve`` processes enrolled at the hospital, provisioned as a hospital's box is:
they trust only the hospital's model-signing key, so the bundled demo package is refused and
each comes up **waiting for a model**. The packages are copies of the demo package signed by a
maker's key, then by the hospital (``clinibox model sign``), in the one archive format.

1. The boxes wait: they answer C-ECHO, hold what they receive, say so and tell the hospital;
   a rollout of 1.1.0 gives each its first model, and box-1 analyses what it held.
2. A rollout of 1.2.0 to the three boxes, box-1 the canary: box-1 is killed (SIGKILL)
   mid-transfer and resumes; the broker goes down while the second wave downloads; every box
   ends on 1.2.0 and analyses what arrived during the install.
3. A rollback of that rollout returns the three boxes to 1.1.0.
4. A 1.3.0 whose golden cases fail on box-3's runtime (its only ONNX artifact is blind; box-1
   and box-2 run OpenVINO, which has the package's OpenVINO IR too): box-3, the canary, keeps
   1.1.0 and the rollout pauses; a person resumes it and the others take 1.3.0.
5. Hostile and broken updates, each refused and reported, nothing lost: a package below the
   floor, one signed by a key the boxes do not trust, a tampered chunk, a replayed offer, a
   forged one, and a box gone bad writing chunks or downlinks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from clinibox_common.contracts import downlink, signing
from clinibox_common.contracts.manifest import sha256_file
from tests.box_harness import clinibox, hospital_link, stop
from tests.canary import write_canary_studies
from tests.integration.conftest import REPO, Box, send_as_modality, to_toml, wait_for
from tests.model_packages import DEMO, make_package
from tests.mqtt_broker import (
    NOT_AUTHORIZED,
    Auditor,
    Broker,
    MqttPki,
    client,
    close,
    make_mqtt_pki,
    publish_and_wait,
    receiver_settings,
)

# A box loads a model (an install, a rollback, a trial's return) on the runtime's threads,
# which run at the analysis's lowest CPU weight once the first model is loaded
# (firmware_app/service/priority.py): behind any other load. In `make test` that load is the
# other test worker, which may keep both cores busy for minutes (the CI run of 2026-11-28
# took 40 min and this module's waits of 60 to 300 s ran out one after another). The waits
# on a model load are LOADED seconds, and a test may take TEST_LIMIT.
LOADED = 600
TEST_LIMIT = 1500
pytestmark = [pytest.mark.integration, pytest.mark.timeout(TEST_LIMIT)]

NAME = "clinibox-demo-lesion"
BOX_IDS = [("clinic-a", "box-1"), ("clinic-a", "box-2"), ("clinic-b", "box-1")]


@dataclass
class Site:
    """The hospital and its three boxes."""

    root: Path
    pki: MqttPki
    broker: Broker
    config: Path
    boxes: list[Box]
    auditor: Auditor
    receiver: subprocess.Popen
    archives: dict[str, Path] = field(default_factory=dict)

    def central(self, *args: str) -> subprocess.CompletedProcess:
        """``clinibox central …`` with the hospital's config."""
        return clinibox("central", *args, "--config", str(self.config))

    def rollout(self, archive: Path, *boxes: int, canary: int = 1) -> int:
        """Start a rollout of ``archive`` to the boxes numbered ``boxes`` (0, 1, 2); its id."""
        targets = [a for i in boxes for a in ("--to", "/".join(BOX_IDS[i]))]
        out = self.central("rollout", str(archive), *targets, "--canary", str(canary)).stdout
        return int(out.split()[1].rstrip(":"))

    def rollout_row(self, rollout_id: int) -> dict:
        """``clinibox central rollouts ID --json``: the rollout with its boxes."""
        return json.loads(self.central("rollouts", str(rollout_id), "--json").stdout)[0]

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Read the hospital's database."""
        import sqlite3

        conn = sqlite3.connect(self.root / "central.db", timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def said(self) -> str:
        """What the parts said, for a wait that timed out (a CI run cannot be repeated): the
        newest rollout as the hospital has it, the boxes' downlink watermarks and the tails of
        the receiver's and the boxes' logs."""
        lines = [clinibox("central", "rollouts", "--json", "--config", str(self.config),
                          check=False).stdout[:3000]]
        lines += [f"downlink: {row}" for row in self.rows(
            "SELECT clinic, device, seq, kind, created_at, sent_at, attempts, last_error"
            " FROM downlinks ORDER BY created_at DESC LIMIT 12")]
        for name, log in [("receiver", self.root / "serve.log")] + [
                (f"{box.root.name}", box.log) for box in self.boxes]:
            tail = log.read_text(errors="replace").splitlines()[-25:] if log.exists() else []
            lines += [f"--- {name}", *tail]
        return "\n".join(lines)

    def step(self, rollout_id: int, box: int) -> str:
        """Where box ``box`` stands in the rollout, as the hospital knows it."""
        clinic, device = BOX_IDS[box]
        return next(b["step"] for b in self.rollout_row(rollout_id)["boxes"]
                    if (b["clinic"], b["device"]) == (clinic, device))


def active(box: Box) -> str:
    """The version the box's model store runs ("" while nothing is installed)."""
    path = box.state / "models" / NAME / "state.json"
    return json.loads(path.read_text())["active"] if path.exists() else ""


def orders(box: Box) -> list[dict]:
    """The box's rollout offers and rollback orders."""
    return [dict(r) for r in box.db_rows(
        "SELECT seq, kind, rollout, version, step, reason, done FROM model_offers ORDER BY seq")]


def part_size(box: Box) -> int:
    """Bytes of the download in progress (0: none)."""
    parts = list((box.state / "updates").glob("*.part"))
    return parts[0].stat().st_size if parts else 0


def analysed(box: Box) -> int:
    """Instances the box has analysed."""
    return box.db_rows("SELECT COUNT(*) FROM instances WHERE status = 'processed'")[0][0]


def maker_package(folder: Path, version: str, maker: Path, **options) -> Path:
    """A copy of the demo package signed by the model maker's key."""
    return make_package(folder, version, key=maker, **options)


def blind_on_onnxruntime(folder: Path, version: str, maker: Path) -> Path:
    """A package whose only ONNX artifact answers the same for every image (its golden
    cases fail on ONNX Runtime) beside the demo's OpenVINO IR FP32 (they pass on OpenVINO)."""
    root = make_package(folder, version, key=None, blind_int8=True)
    manifest = json.loads((root / "manifest.json").read_text())
    demo = json.loads((DEMO / "manifest.json").read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["precision"] == "int8"]
    ir = next(a for a in demo["artifacts"] if a["path"] == "openvino/model.fp32.xml")
    for relative in ir["files"]:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(DEMO / relative, root / relative)
        assert ir["files"][relative] == sha256_file(root / relative)
    manifest["artifacts"].append(ir)
    (root / "model.fp32.onnx").unlink()
    signed = signing.sign_document(manifest, signing.load_private_key(maker))
    (root / "manifest.json").write_text(json.dumps(signed, indent=2))
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    """The broker, the hospital (keys, receiver) and three boxes waiting for a model."""
    root = tmp_path_factory.mktemp("rollouts-e2e")
    pki = make_mqtt_pki(root / "pki", BOX_IDS)
    broker = Broker(root / "broker", pki).start()
    clinibox("keys", "generate", "--kind", "hospital", "--out", str(root / "hospital"))
    clinibox("keys", "generate", "--kind", "hospital-signing", "--out",
             str(root / "hospital-signing"))
    for name in ("model-signing", "maker", "rogue"):
        signing.generate_key_pair(root / f"{name}.pem", root / f"{name}.pub")
    settings = receiver_settings(broker, pki, root / "central.db", root / "hospital.pem",
                                 "central-rollouts")
    settings["keys"]["hospital_signing_key"] = str(root / "hospital-signing.pem")
    # the rogue key is trusted by the hospital by mistake, never by the boxes
    settings["rollouts"] = {"trusted_keys": [str(root / "model-signing.pub"),
                                             str(root / "rogue.pub")], "chunk_kib": 64}
    config = root / "central.toml"
    config.write_text(to_toml(settings))
    boxes = []
    for index, (clinic, device) in enumerate(BOX_IDS):
        identity = pki.device(clinic, device)
        folder = root / f"{clinic}-{device}"
        folder.mkdir()
        box = Box(folder, {
            **hospital_link(broker.port, pki.ca_cert, identity.cert, identity.key, clinic,
                            device, root),
            # provisioned for the hospital: its model-signing key only, never the demo key
            "models": {"trusted_keys": [str(root / "model-signing.pub")],
                       "trust_demo_key": False},
            # box-3's runtime is ONNX Runtime; the others run OpenVINO
            "runtime": {"backend": "onnxruntime" if index == 2 else "openvino"},
            # a link slow enough to be cut in the middle of a 4 MB package
            "updates": {"max_kbps": 6000, "retry_seconds": 0.5, "chunk_timeout_seconds": 5,
                        "min_free_mb": 0},
        })
        public = folder / "device.pub"
        box.cli("identity", "--out", str(public))
        clinibox("central", "enrol", "--config", str(config), "--clinic", clinic, "--device",
                 device, "--key", str(public))
        boxes.append(box)
    auditor = Auditor(broker, pki)
    receiver = subprocess.Popen(
        [sys.executable, "-m", "clinibox", "central", "serve", "--config", str(config)],
        stdout=open(root / "serve.log", "ab"), stderr=subprocess.STDOUT, cwd=REPO)  # noqa: SIM115
    for box in boxes:
        box.start()
    made = root / "packages"
    archives = {}
    for version in ("1.1.0", "1.2.0", "1.2.5", "1.5.0"):
        folder = maker_package(made / "maker", version, root / "maker.pem")
        archives[version] = root / f"{NAME}-{version}.tar.gz"
        clinibox("model", "sign", str(folder), "--key", str(root / "model-signing.pem"),
                 "--trust", str(root / "maker.pub"), "--out", str(made / f"signed-{version}"),
                 "--archive", str(archives[version]))
    blind = blind_on_onnxruntime(made / "maker", "1.3.0", root / "maker.pem")
    archives["1.3.0"] = root / f"{NAME}-1.3.0.tar.gz"
    clinibox("model", "sign", str(blind), "--key", str(root / "model-signing.pem"), "--trust",
             str(root / "maker.pub"), "--out", str(made / "signed-1.3.0"), "--archive",
             str(archives["1.3.0"]))
    rogue = maker_package(made / "maker", "1.4.0", root / "maker.pem")
    archives["1.4.0"] = root / f"{NAME}-1.4.0.tar.gz"
    clinibox("model", "sign", str(rogue), "--key", str(root / "rogue.pem"), "--trust",
             str(root / "maker.pub"), "--out", str(made / "signed-1.4.0"), "--archive",
             str(archives["1.4.0"]))
    yield Site(root, pki, broker, config, boxes, auditor, receiver, archives)
    auditor.close()
    for box in boxes:
        box.stop()
    stop(receiver)
    broker.stop()


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Phantom studies (canary values in every identifying attribute) to send the boxes."""
    return write_canary_studies(tmp_path_factory.mktemp("studies"), 4, lesion=True)


def test_boxes_without_a_model_wait_hold_what_they_receive_until_the_rollout(site, studies):
    for box in site.boxes:
        status = box.cli_json("status")
        assert status["model_waiting"]["reason"] == "signature", status["model_waiting"]
        assert not (box.root / "serve.log").read_text().count("Traceback")
    sent, _ = send_as_modality(site.boxes[0].port, studies.files[:1])
    assert sent == 1
    wait_for(lambda: site.boxes[0].db_rows("SELECT status FROM instances")
             and site.boxes[0].db_rows("SELECT status FROM instances")[0][0] == "queued", 30,
             "the image to be held", site.said)
    time.sleep(2)
    assert [r[0] for r in site.boxes[0].db_rows("SELECT status FROM instances")] == ["queued"]
    # the hospital is told (a model_unavailable event, the refusal's code)
    wait_for(lambda: set(site.rows(
        "SELECT clinic, device FROM box_state WHERE last_event = 'model_unavailable' AND"
        " last_event_reason = 'signature' AND waiting_for_model = 'signature'")) == set(BOX_IDS),
        60, "the hospital to be told", site.said)
    # the first rollout gives each box its first model; box-1 analyses what it held
    rollout = site.rollout(site.archives["1.1.0"], 0, 1, 2)
    wait_for(lambda: all(active(box) == "1.1.0" for box in site.boxes), LOADED,
             "every box to install 1.1.0", site.said)
    site.boxes[0].wait_idle(1, timeout=LOADED)
    assert analysed(site.boxes[0]) == 1
    wait_for(lambda: site.rollout_row(rollout)["state"] == "done",
             LOADED, "the rollout to finish", site.said)
    wait_for(lambda: all(box.cli_json("status")["model_waiting"] is None for box in site.boxes),
             LOADED, "every box to run its model", site.said)
    wait_for(lambda: site.rows("SELECT COUNT(*) FROM box_state WHERE waiting_for_model IS NULL"
                               " AND model = ?", (f"{NAME}@1.1.0",))[0][0] == 3, 60,
             "the hospital to see every box run 1.1.0", site.said)


def test_a_rollout_survives_a_kill_and_a_broker_outage_and_every_box_takes_it(site, studies):
    box1, box2, box3 = site.boxes
    archive = site.archives["1.2.0"]
    rollout = site.rollout(archive, 0, 1, 2)
    assert site.step(rollout, 1) == "waiting"  # box-2 waits for the canary
    # box-1, the canary, is killed in the middle of the transfer and resumes
    wait_for(lambda: part_size(box1) > 3 * 65536, 60, "box-1's download to start", site.said)
    box1.kill9()  # 1.1.0 was on trial: it is kept (nothing verified came before it)
    cut = part_size(box1)
    assert 0 < cut < archive.stat().st_size
    box1.start()
    wait_for(lambda: active(box1) == "1.2.0", LOADED, "box-1 to install 1.2.0", site.said)
    assert json.loads((box1.state / "models" / NAME / "state.json").read_text())[
        "previous"] == "1.1.0"
    assert "resuming at chunk" in box1.log.read_text()
    # the second wave: the broker goes down while it downloads; an image arrives meanwhile
    wait_for(lambda: part_size(box2) > 65536 or part_size(box3) > 65536, 120,
             "the second wave's downloads to start", site.said)
    site.broker.stop()
    time.sleep(2)
    site.broker.start()
    sent, _ = send_as_modality(box2.port, studies.files[1:2])
    assert sent == 1
    wait_for(lambda: active(box2) == active(box3) == "1.2.0",
             LOADED, "boxes 2 and 3 to install", site.said)
    box2.wait_idle(1, timeout=LOADED)  # analysed by whichever model ran when it was taken
    assert analysed(box2) == 1
    wait_for(lambda: site.rollout_row(rollout)["state"] == "done",
             LOADED, "the rollout to finish", site.said)
    row = site.rollout_row(rollout)
    assert {b["step"] for b in row["boxes"]} == {"on_trial"}, row["boxes"]
    for box in site.boxes:
        assert [o["step"] for o in orders(box)] == ["on_trial", "on_trial"]


def test_a_rollback_returns_the_three_boxes_to_the_version_they_ran_before(site):
    rollout = json.loads(site.central("rollouts", "--json").stdout)[0]["id"]  # newest first
    out = site.central("rollback", "--rollout", str(rollout)).stdout
    assert "rollback sent to 3 boxes" in out
    wait_for(lambda: all(active(box) == "1.1.0" for box in site.boxes),
             LOADED, "the rollback", site.said)
    wait_for(lambda: {site.step(rollout, i) for i in range(3)} == {"rolled_back"}, 60,
             "the hospital to hear of it", site.said)
    assert site.rollout_row(rollout)["state"] == "rolled_back"


def test_a_package_failing_on_one_boxs_runtime_pauses_at_that_canary_then_goes_on(site,
                                                                                   studies):
    box1, box2, box3 = site.boxes
    rollout = site.rollout(site.archives["1.3.0"], 2, 0, 1)
    wait_for(lambda: site.step(rollout, 2) == "golden_failed", LOADED,
             "box-3's golden cases to fail", site.said)
    wait_for(lambda: site.rollout_row(rollout)["state"] == "paused", 30, "the pause", site.said)
    assert site.rollout_row(rollout)["state_reason"] == "canary_failed"
    assert site.step(rollout, 0) == site.step(rollout, 1) == "waiting"
    assert active(box3) == "1.1.0"
    sent, _ = send_as_modality(box3.port, studies.files[2:3])
    assert sent == 1
    box3.wait_idle(1, timeout=LOADED)  # box-3 keeps analysing with the model it had
    site.central("rollouts", "--resume", str(rollout))
    wait_for(lambda: active(box1) == active(box2) == "1.3.0",
             LOADED, "boxes 1 and 2 on 1.3.0", site.said)
    assert active(box3) == "1.1.0"


def test_hostile_and_broken_updates_are_refused_reported_and_lose_nothing(site):
    box1, box2, box3 = site.boxes
    # below the floor (box-1 runs 1.3.0): refused before a byte
    older = site.rollout(site.archives["1.2.5"], 0)
    wait_for(lambda: site.step(older, 0) == "refused", 60, "the floor's refusal", site.said)
    assert orders(box1)[-1]["reason"] == "older_version" and part_size(box1) == 0
    # signed by a key the boxes do not trust: fetched, then refused by the install's check
    rogue = site.rollout(site.archives["1.4.0"], 1)
    wait_for(lambda: site.step(rogue, 1) == "refused", 120, "the signature's refusal", site.said)
    assert orders(box2)[-1]["reason"] == "signature" and active(box2) == "1.3.0"
    # a tampered chunk: box-3 is away while the hospital offers 1.5.0; a forger overwrites
    # the first chunk on the broker; box-3 comes back, asks three times, refuses
    box3.stop()
    tampered = site.rollout(site.archives["1.5.0"], 2)
    sha = site.rollout_row(tampered)["archive_sha256"]
    wait_for(lambda: any(m.topic == downlink.chunk_topic(sha, 0)
                         for m in site.auditor.messages()),
             60, "the chunks on the broker", site.said)
    wait_for(lambda: any(m.topic == downlink.topic(*BOX_IDS[2]) for m in
                         site.auditor.messages()[-20:]), 60, "the offer to go out", site.said)
    forger = client(site.broker, site.pki.receiver.cert, site.pki.receiver.key)
    try:
        assert publish_and_wait(forger, downlink.chunk_topic(sha, 0), b"\x00" * 65536,
                                retain=True).value == 0
        box3.start()
        wait_for(lambda: site.step(tampered, 2) == "refused",
                 120, "the tampered refusal", site.said)
        assert orders(box3)[-1]["reason"] == "tampered" and active(box3) == "1.1.0"
        # a replayed offer (the first rollout's, to box-2) changes nothing
        first = next(m for m in site.auditor.messages()
                     if m.topic == downlink.topic(*BOX_IDS[1]))
        before = orders(box2)
        assert publish_and_wait(forger, first.topic, first.payload).value == 0
        # a forged offer: sealed to box-2, signed by another key than the hospital's
        ((key_text,),) = site.rows("SELECT downlink_key FROM box_state WHERE clinic = ? AND"
                                   " device = ?", BOX_IDS[1])
        ((offer,),) = site.rows("SELECT payload FROM downlinks WHERE kind = 'rollout' AND"
                                " clinic = ? AND device = ? ORDER BY seq DESC LIMIT 1",
                                BOX_IDS[1])
        forged = downlink.seal_downlink(
            *BOX_IDS[1], 999, json.loads(offer), downlink.parse_key_text(key_text),
            signing.load_private_key(site.root / "rogue.pem"), kind=downlink.KIND_ROLLOUT)
        assert publish_and_wait(forger, downlink.topic(*BOX_IDS[1]), forged).value == 0
        wait_for(lambda: box2.db_rows("SELECT COUNT(*) FROM events WHERE code = ?",
                                      ("downlink_bad-signature",))[0][0] == 1, 30,
                 "the forged offer's refusal", site.said)
        assert orders(box2) == before and active(box2) == "1.3.0"
    finally:
        close(forger)
    # a box gone bad may neither write chunks nor downlinks
    bad = site.pki.device(*BOX_IDS[1])
    rogue_box = client(site.broker, bad.cert, bad.key, client_id="gone-bad")
    try:
        assert publish_and_wait(rogue_box, downlink.chunk_topic(sha, 1), b"x").value == \
            NOT_AUTHORIZED
        assert publish_and_wait(rogue_box, downlink.topic(*BOX_IDS[0]), b"x").value == \
            NOT_AUTHORIZED
    finally:
        close(rogue_box)
    for box in site.boxes:  # nothing lost: every image received was analysed
        assert box.db_rows("SELECT COUNT(*) FROM instances WHERE status != 'processed'"
                           )[0][0] == 0
