"""Issue 43 with real parts: an enrolled box's poison messages cannot stop the hospital.

Mosquitto (TLS, client certificates, the clinibox ACL) and ``clinibox central
serve`` as a separate process. The box, on its own certificate and topic,
publishes an envelope whose signed header nests 5,000 levels, then one with a
5,000-digit sequence number, then a valid alert. The alert is stored; both
poison messages are refused as malformed, their bytes kept as dead letters,
and acknowledged: after a restart of the receiver the broker does not hand
them over again.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.store import Store
from firmware_app.contracts.envelope import generate_x25519_pair, load_x25519_public
from firmware_app.contracts.topics import topic
from tests.envelope_forge import deep_header, long_seq_header, seal_raw
from tests.integration.conftest import REPO, to_toml, wait_for
from tests.mqtt_broker import Broker, client, close, make_mqtt_pki, publish_and_wait
from tests.telemetry_payloads import Box, public_pem

pytestmark = pytest.mark.integration

CLINIC, DEVICE, RECEIVER_ID = "clinic-a", "box-1", "central-poison"


def _serve(config: Path, log: Path) -> subprocess.Popen:
    with log.open("a") as handle:
        return subprocess.Popen([sys.executable, "-m", "firmware_app.cli", "central", "serve",
                                 "--config", str(config)], stdout=handle,
                                stderr=subprocess.STDOUT, cwd=REPO)


def _stop(process: subprocess.Popen) -> int:
    process.terminate()
    return process.wait(timeout=30)


def _subscribed_since(broker: Broker, offset: int) -> bool:
    with broker.log_path.open("rb") as log:
        log.seek(offset)
        return f"Received SUBSCRIBE from {RECEIVER_ID}".encode() in log.read()


def test_poison_messages_are_refused_kept_and_acknowledged(tmp_path):
    pki = make_mqtt_pki(tmp_path / "pki", [(CLINIC, DEVICE)])
    database = tmp_path / "central.db"
    generate_x25519_pair(tmp_path / "hospital.pem", tmp_path / "hospital.pub")
    box = Box(CLINIC, DEVICE, load_x25519_public(tmp_path / "hospital.pub"),
              key=Ed25519PrivateKey.generate())
    store = Store(f"sqlite:///{database}")
    store.enrol(CLINIC, DEVICE, public_pem(box.key))
    store.close()
    with Broker(tmp_path / "broker", pki) as broker:
        config = tmp_path / "central.toml"
        config.write_text(to_toml({
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "ca_file": str(pki.ca_cert),
                     "cert_file": str(pki.receiver.cert), "key_file": str(pki.receiver.key),
                     "group": "central", "client_id": RECEIVER_ID},
            "database": {"url": f"sqlite:///{database}"},
            "keys": {"hospital_key": str(tmp_path / "hospital.pem")},
        }))
        log = tmp_path / "receiver.log"
        receiver = _serve(config, log)
        try:
            wait_for(lambda: _subscribed_since(broker, 0), 60, "the receiver to subscribe")
            poison = [seal_raw(deep_header(5000), b"{}", box.hospital, box.key),
                      seal_raw(long_seq_header(CLINIC, DEVICE, "alert", 5000), b"{}",
                               box.hospital, box.key)]
            identity = pki.device(CLINIC, DEVICE)
            sender = client(broker, identity.cert, identity.key, client_id=DEVICE)
            try:
                for data in poison:
                    assert not publish_and_wait(sender, topic(CLINIC, DEVICE, "alert"),
                                                data).is_failure
                assert not publish_and_wait(sender, *box.envelope("alert")).is_failure
            finally:
                close(sender)

            def rows(sql: str) -> list[tuple]:
                conn = sqlite3.connect(database, timeout=30)
                try:
                    return conn.execute(sql).fetchall()
                finally:
                    conn.close()

            wait_for(lambda: rows("SELECT seq FROM alerts") == [(1,)], 30,
                     "the valid alert to be stored")
            assert receiver.poll() is None, log.read_text()  # the receiver stayed up
            assert rows("SELECT reason, claimed_device FROM rejections ORDER BY id") == [
                ("malformed", DEVICE), ("malformed", DEVICE)]
            assert rows("SELECT reason, size, payload FROM dead_letters ORDER BY id") == [
                ("malformed", len(data), data) for data in poison]
            assert "Traceback" not in log.read_text()

            # acknowledged: a restarted receiver is not handed them again
            assert _stop(receiver) == 0
            offset = broker.log_path.stat().st_size
            receiver = _serve(config, log)
            wait_for(lambda: _subscribed_since(broker, offset), 60, "the receiver to return")
            sender = client(broker, identity.cert, identity.key, client_id=DEVICE)
            try:
                assert not publish_and_wait(sender, *box.envelope("alert")).is_failure
            finally:
                close(sender)
            wait_for(lambda: len(rows("SELECT seq FROM alerts")) == 2, 30, "the next alert")
            assert len(rows("SELECT id FROM rejections")) == 2
            assert receiver.poll() is None
        finally:
            if receiver.poll() is None:
                _stop(receiver)
