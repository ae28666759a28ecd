"""The hospital's verdict reaches the box over the real broker, is kept, and is shown.

A box (the populated viewer state of ``tests/viewer_state.py``) runs its real
``Publisher`` against a real Mosquitto (TLS, client certificates, the ACL of
``tests/mqtt_broker.py``); a client with the ``central-receiver`` certificate plays the
hospital and publishes sealed reviews (``contracts.downlink.seal_downlink``) at QoS 1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clinibox_common.contracts import downlink
from clinibox_common.contracts.egress import check_message
from firmware_app.service.appliance import model_facts
from firmware_app.storage import db, hospital_reviews
from firmware_app.telemetry.downlink import (
    LATE,
    UNKNOWN_STUDY,
    downlink_receiver,
    refusal_code,
)
from firmware_app.telemetry.identity import DeviceIdentity, load_identity
from firmware_app.telemetry.mqtt import Publisher
from tests.integration.conftest import wait_for
from tests.mqtt_broker import (
    NOT_AUTHORIZED,
    Broker,
    MessageLog,
    MqttPki,
    broker_fixture,  # noqa: F401 - a fixture
    client,
    close,
    mqtt_pki_fixture,  # noqa: F401 - a fixture
    publish_and_wait,
    subscribe_and_wait,
)
from tests.telemetry_payloads import hospital_keys, public_pem
from tests.unit.conftest import demo_runner, viewer, viewer_template  # noqa: F401 - fixtures
from tests.viewer_state import CLINICIAN
from tests.web_client import ViewerClient

pytestmark = pytest.mark.integration

CLINIC, DEVICE = "clinic-a", "box-1"
TOPIC = downlink.topic(CLINIC, DEVICE)


@dataclass
class Setup:
    """The box's publisher, its identity, the hospital's signing key and client, the viewer."""

    publisher: Publisher
    identity: DeviceIdentity
    hospital_key: Ed25519PrivateKey
    hospital: object
    viewer: ViewerClient
    database: Path
    study_id: int
    study_key: str

    def seal(self, seq: int, verdict: str = "refer", note: str = "", *,
             signer: Ed25519PrivateKey | None = None, device: str = DEVICE,
             created_at: float | None = None, study_key: str | None = None,
             months: int | None = None) -> bytes:
        """A review of this box's alert study, sealed to the box as the hospital would."""
        payload = downlink.review_payload(
            study_ref=self.identity.study_ref(study_key or self.study_key), alert_seq=1,
            verdict=verdict, note=note, reviewed_at=time.time(), follow_up_months=months,
            created_at=created_at)
        return downlink.seal_downlink(CLINIC, device, seq, payload,
                                      self.identity.downlink_key.public_key(),
                                      signer or self.hospital_key)

    def rows(self, sql: str) -> list[tuple]:
        """Query the box's database."""
        conn = db.connect(self.database)
        try:
            return [tuple(r) for r in conn.execute(sql)]
        finally:
            conn.close()

    def kept(self) -> list[int]:
        """The review sequence numbers the box keeps."""
        return [r[0] for r in self.rows("SELECT seq FROM hospital_reviews ORDER BY seq")]


@pytest.fixture
def setup(tmp_path, broker: Broker, mqtt_pki: MqttPki, viewer, demo_runner  # noqa: F811
          ) -> Iterator[Setup]:
    """The viewer box connected to the broker, with the hospital's downlink configured."""
    state, app = viewer
    config = state.config
    device = mqtt_pki.device(CLINIC, DEVICE)
    hospital_private, hospital_public = hospital_keys()
    signing = Ed25519PrivateKey.generate()
    (tmp_path / "hospital.pub").write_text(public_pem(hospital_private))
    (tmp_path / "hospital-signing.pub").write_text(public_pem(signing))
    config.mqtt.host, config.mqtt.port = broker.host, broker.port
    config.mqtt.ca_file = str(mqtt_pki.ca_cert)
    config.mqtt.cert_file, config.mqtt.key_file = str(device.cert), str(device.key)
    config.telemetry.clinic, config.telemetry.device = CLINIC, DEVICE
    config.telemetry.hospital_key = str(tmp_path / "hospital.pub")
    config.telemetry.hospital_signing_key = str(tmp_path / "hospital-signing.pub")
    identity = load_identity(config)
    publisher = Publisher(config, identity, hospital_public,
                          model_facts(demo_runner.package), time.time(),
                          downlink_receiver(config, identity))
    publisher.connect()
    hospital = client(broker, mqtt_pki.receiver.cert, mqtt_pki.receiver.key)
    web = ViewerClient(app)
    assert web.login(*CLINICIAN).status_code == 302
    study_id = state.studies["alert"]
    conn = db.connect(config.database_path)
    study_key = conn.execute("SELECT study_key FROM studies WHERE id = ?",
                             (study_id,)).fetchone()[0]
    conn.close()
    yield Setup(publisher, identity, signing, hospital, web, config.database_path, study_id,
                study_key)
    close(hospital)
    publisher.close(send_offline=False)
    publisher.conn.close()


def _publish(setup: Setup, envelope: bytes) -> None:
    code = publish_and_wait(setup.hospital, TOPIC, envelope)
    assert code.value == 0, f"the broker did not pass the review on: {code}"


def test_a_review_arrives_is_kept_and_shows_on_the_study_page(setup: Setup):
    status = setup.publisher.status("online")
    check_message("status", status, None)
    assert status["downlink_key"] == setup.identity.downlink_key_text
    assert status["downlink_seq"] == 0
    _publish(setup, setup.seal(1, "refer", "Bring her in this week"))
    wait_for(lambda: setup.kept() == [1], 10, "the review to be kept")
    page = setup.viewer.get(f"/study/{setup.study_id}").get_data(as_text=True)
    assert "Hospital reviewed: refer the patient" in page
    assert "Bring her in this week" in page and "arrived late" not in page
    rows = setup.viewer.get("/worklist/rows").get_data(as_text=True)
    assert "Hospital reviewed: refer the patient" in rows
    assert setup.rows("SELECT target, detail FROM audit WHERE action ="
                      " 'hospital_review_received'") == [(f"study:{setup.study_key}", "refer")]
    assert setup.publisher.status("heartbeat")["downlink_seq"] == 1


def test_results_json_carries_the_hospital_review(setup: Setup, tmp_path, capsys):
    from clinibox.table import main

    _publish(setup, setup.seal(1, "send_case", "second read please"))
    wait_for(lambda: setup.kept() == [1], 10, "the review to be kept")
    config = tmp_path / "box.toml"
    config.write_text(f'[storage]\nstate_dir = "{setup.database.parent}"\n')
    capsys.readouterr()
    assert main(["results", "--studies", "--json", "--config", str(config)]) == 0
    studies = {s["id"]: s for s in json.loads(capsys.readouterr().out)}
    review = studies[setup.study_id]["hospital_review"]
    assert {k: review[k] for k in ("verdict", "note", "follow_up_months")} == {
        "verdict": "send_case", "note": "second read please", "follow_up_months": None}
    assert isinstance(review["reviewed_at"], float)
    assert all(s["hospital_review"] is None for i, s in studies.items() if i != setup.study_id)


def test_a_note_is_text_on_the_page_never_markup(setup: Setup):
    _publish(setup, setup.seal(1, "follow_up", "<b>soon</b>", months=3))
    wait_for(lambda: setup.kept() == [1], 10, "the review to be kept")
    page = setup.viewer.get(f"/study/{setup.study_id}").get_data(as_text=True)
    assert "Hospital reviewed: follow up in 3 months" in page
    assert "&lt;b&gt;soon&lt;/b&gt;" in page and "<b>soon</b>" not in page


def test_a_review_sent_while_the_box_is_away_arrives_when_it_comes_back(setup: Setup):
    _publish(setup, setup.seal(1))
    wait_for(lambda: setup.kept() == [1], 10, "the first review")
    setup.publisher.close(send_offline=False)
    # the box's session (and its subscription) stays on the broker: the publish is taken
    _publish(setup, setup.seal(2, "no_action"))
    time.sleep(0.5)
    assert setup.kept() == [1]
    setup.publisher.connect()
    wait_for(lambda: setup.kept() == [1, 2], 10, "the review kept for the box while away")
    page = setup.viewer.get(f"/study/{setup.study_id}").get_data(as_text=True)
    assert "Hospital reviewed: no action needed" in page  # the later review amends


def test_forged_and_foreign_reviews_are_refused_a_stale_one_kept_late_a_replay_once(
        setup: Setup):
    first = setup.seal(1)
    _publish(setup, first)
    _publish(setup, setup.seal(2, signer=Ed25519PrivateKey.generate()))
    _publish(setup, setup.seal(3, device="box-2"))
    _publish(setup, setup.seal(4, created_at=time.time() - 40 * 86_400))
    _publish(setup, first)  # a replay
    _publish(setup, setup.seal(5, study_key="9.9.9.9"))  # no such study on the box
    expected = [refusal_code("bad-signature"), refusal_code("not-for-this-box"), LATE,
                UNKNOWN_STUDY]

    def codes() -> list[str]:
        return [r[0] for r in setup.rows("SELECT code FROM events WHERE component ="
                                         " 'downlink' ORDER BY id")]
    wait_for(lambda: codes() == expected, 10, "the refusals and the unknown study noted")
    assert setup.kept() == [1, 4, 5]  # the stale one is authentic: kept, marked late
    assert setup.rows("SELECT seq, late FROM hospital_reviews ORDER BY seq") == [
        (1, 0), (4, 1), (5, 0)]
    conn = db.connect(setup.database)
    try:
        assert hospital_reviews.watermark(conn) == 1  # 2 and 3 were refused: a gap
        assert hospital_reviews.unresolved(conn) == 1
    finally:
        conn.close()
    page = setup.viewer.get(f"/study/{setup.study_id}").get_data(as_text=True)
    assert "Hospital reviewed: refer the patient" in page and "(arrived late, given " in page
    rows = setup.viewer.get("/worklist/rows").get_data(as_text=True)
    assert "(arrived late, given " in rows


def test_another_box_cannot_read_or_write_this_boxs_downlink(setup: Setup, broker: Broker,
                                                             mqtt_pki: MqttPki):
    other = mqtt_pki.device(CLINIC, "box-2")
    seen = MessageLog()
    spy = client(broker, other.cert, other.key, messages=seen)
    try:
        subscribe_and_wait(spy, TOPIC)
        assert publish_and_wait(spy, TOPIC, setup.seal(9)).value == NOT_AUTHORIZED
        _publish(setup, setup.seal(1))
        wait_for(lambda: setup.kept() == [1], 10, "the review to reach its own box")
        time.sleep(0.5)
        assert seen.messages() == []
    finally:
        close(spy)
