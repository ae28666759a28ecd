"""Issue 56 with real parts: one box floods the hospital, another clinic's alert still goes
through at once.

Mosquitto (TLS, client certificates, the clinibox ACL and the documented limits:
``message_size_limit``, ``max_inflight_messages``, ``max_queued_*``), ``clinibox central
serve`` as a separate process with the webhook on (the webhook sink of the webhook tests),
two enrolled boxes. Box ``clinic-a/box-1`` publishes
:data:`FLOOD` valid alerts at the broker's full rate (QoS 1, a thousand in flight); once the
broker has acknowledged them all, box ``clinic-b/box-2`` publishes one alert. Handled first in,
first out (4.4 ms a message), it would have waited behind the whole flood; now it is stored
within 2 s and delivered to the webhook within 5 s, the flood meanwhile held (the fleet page's
count) and then stored and delivered whole: nothing acknowledged is lost.

A message over the broker's limit never reaches the receiver; one under it but larger than
any envelope is refused by the receiver by its size (``too-big``), its first 4 KiB kept.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.store import Store
from clinibox_common.contracts.envelope import generate_x25519_pair, load_x25519_public
from clinibox_common.contracts.topics import topic
from tests.integration.conftest import REPO, to_toml, wait_for
from tests.mqtt_broker import (
    Broker,
    client,
    close,
    make_mqtt_pki,
    publish_and_wait,
    receiver_settings,
)
from tests.telemetry_payloads import Box, alert_payload, public_pem
from tests.webhook_sink import WebhookSink

pytestmark = pytest.mark.integration

FLOOD_BOX, QUIET_BOX = ("clinic-a", "box-1"), ("clinic-b", "box-2")
RECEIVER_ID = "central-fair"
#: The flood: enough that first in, first out would keep the quiet alert ~10 s.
FLOOD = 2000


def _documented_limits() -> str:
    """The limit lines of the documented mosquitto.conf (docs/hospital/broker.md)."""
    text = (REPO / "docs" / "hospital" / "broker.md").read_text(encoding="utf-8")
    conf = text.split("cat > /etc/mosquitto/conf.d/clinibox.conf <<'EOF'\n", 1)[1]
    lines = conf.split("\nEOF", 1)[0].splitlines()
    return "".join(f"{line}\n" for line in lines
                   if line.startswith(("message_size_limit ", "max_")))


LIMITS = _documented_limits()
#: The documented broker's message_size_limit: a rollout chunk's 8 MiB.
MESSAGE_SIZE_LIMIT = int(LIMITS.split("message_size_limit ", 1)[1].split()[0])


def _rows(database: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(database, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _peak_mib(pid: int) -> float:
    """A process's peak resident memory (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


def _subscribed(broker: Broker) -> bool:
    """Whether the receiver subscribed (the ``subscribe`` log line: client, QoS, filter)."""
    return f" {RECEIVER_ID} 1 $share/".encode() in broker.log_path.read_bytes()


def test_a_quiet_box_goes_through_while_another_floods(tmp_path: Path) -> None:
    pki = make_mqtt_pki(tmp_path / "pki", [FLOOD_BOX, QUIET_BOX])
    database = tmp_path / "central.db"
    generate_x25519_pair(tmp_path / "hospital.pem", tmp_path / "hospital.pub")
    hospital = load_x25519_public(tmp_path / "hospital.pub")
    flood_box = Box(*FLOOD_BOX, hospital, key=Ed25519PrivateKey.generate())
    quiet_box = Box(*QUIET_BOX, hospital, key=Ed25519PrivateKey.generate())
    store = Store(f"sqlite:///{database}")
    for box in (flood_box, quiet_box):
        store.enrol(box.clinic, box.device, public_pem(box.key))
    store.close()
    flood = [flood_box.envelope("alert", alert_payload()) for _ in range(FLOOD)]
    quiet = quiet_box.envelope("alert", alert_payload())
    sink = WebhookSink()
    (tmp_path / "webhook.secret").write_bytes(b"fair-secret")
    with Broker(tmp_path / "broker", pki, log_types=("error", "warning", "notice", "information",
                                                      "subscribe"),
                extra_conf=LIMITS) as broker:
        assert MESSAGE_SIZE_LIMIT == 8 * 2**20 and "max_inflight_messages" in LIMITS
        settings = receiver_settings(broker, pki, database, tmp_path / "hospital.pem",
                                     RECEIVER_ID)
        settings["notify"] = {"url": sink.url, "secret_file": str(tmp_path / "webhook.secret")}
        settings["receiver"] = {"flood_messages": 100}
        (tmp_path / "central.toml").write_text(to_toml(settings))
        log = tmp_path / "serve.log"
        with log.open("a") as out:
            serve = subprocess.Popen([sys.executable, "-m", "clinibox", "central",
                                      "serve", "--config", str(tmp_path / "central.toml")],
                                     stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            wait_for(lambda: _subscribed(broker), 60, "the receiver to subscribe")
            flooder_id = pki.device(*FLOOD_BOX)
            flooder = client(broker, flooder_id.cert, flooder_id.key, client_id="flood",
                             max_inflight=1000)
            started = time.monotonic()
            infos = [flooder.publish(name, data, qos=1) for name, data in flood]
            for info in infos:
                info.wait_for_publish(timeout=60)
            flood_seconds = time.monotonic() - started

            quiet_id = pki.device(*QUIET_BOX)
            quieter = client(broker, quiet_id.cert, quiet_id.key, client_id="quiet")
            assert not publish_and_wait(quieter, *quiet).is_failure
            sent = time.monotonic()
            wait_for(lambda: _rows(database, "SELECT COUNT(*) FROM alerts WHERE device ="
                                             " 'box-2'") == [(1,)], 10, "the quiet alert")
            stored_after = time.monotonic() - sent
            held = _rows(database, "SELECT COUNT(*) FROM intake WHERE device = 'box-1'")[0][0]
            flood_stored = _rows(database, "SELECT COUNT(*) FROM alerts WHERE device ="
                                           " 'box-1'")[0][0]

            def delivered() -> bool:
                return any(json.loads(r.body)["device"] == "box-2" for r in sink.requests)

            wait_for(delivered, 10, "the quiet alert at the webhook")
            delivered_after = time.monotonic() - sent
            posted_before = [json.loads(r.body)["device"] for r in sink.requests].index("box-2")
            print(f"flood of {FLOOD} published in {flood_seconds:.2f} s; quiet alert stored "
                  f"after {stored_after:.2f} s ({flood_stored} of the flood stored, {held} "
                  f"held), at the webhook after {delivered_after:.2f} s ({posted_before} of "
                  "the flood posted before it)")
            assert stored_after < 2.0
            assert delivered_after < 5.0
            assert held > 100  # the flood was still held when the quiet alert was stored

            # over the broker's limit: refused by the broker; over an envelope's: by the
            # receiver by its size, its first bytes kept
            too_big = topic(*QUIET_BOX, "alert")
            huge = client(broker, quiet_id.cert, quiet_id.key, client_id="quiet-huge")
            huge.publish(too_big, b"x" * (MESSAGE_SIZE_LIMIT + 1), qos=1)
            time.sleep(2)  # Mosquitto does not take it (its client gives up, reconnects)
            close(huge)
            sizes = [1 << 20] + [MESSAGE_SIZE_LIMIT] * 4  # the most the broker passes
            for size in sizes:
                assert not publish_and_wait(quieter, too_big, b"y" * size,
                                            timeout=60).is_failure
            close(quieter)
            wait_for(lambda: _rows(database, "SELECT reason, size_bytes FROM rejections") == [
                ("too-big", size) for size in sizes], 60, "the too-big refusals")
            assert _rows(database, "SELECT size FROM dead_letters") == [(4096,)] * len(sizes)
            peak = _peak_mib(serve.pid)
            print(f"central serve's peak resident memory: {peak:.0f} MiB")
            assert peak < 300  # was 871 MiB after 16, 64 and 200 MB messages

            # nothing of the flood lost: all stored once, and all posted
            wait_for(lambda: _rows(database, "SELECT COUNT(*) FROM alerts WHERE device ="
                                             " 'box-1'") == [(FLOOD,)], 120, "the flood")
            close(flooder)
            wait_for(lambda: len(sink.requests) == FLOOD + 1, 120, "every alert posted")
            assert _rows(database, "SELECT COUNT(*) FROM intake") == [(0,)]
            assert serve.poll() is None, log.read_text()
            assert _rows(database, "PRAGMA integrity_check") == [("ok",)]
            assert "Traceback" not in log.read_text()
        finally:
            serve.terminate()
            serve.wait(timeout=30)
            sink.close()
