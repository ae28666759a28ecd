"""Telemetry benchmark: the box's outbox drain, the hospital's ingest, bytes on the wire.

1. Outbox drain (messages/s): N alerts waiting in a fresh box database are sent
   by the box's own ``Publisher.drain()`` (SQLite outbox, sealing, MQTT v5 QoS 1
   with ``WINDOW`` unacknowledged) to a local Mosquitto with TLS, client
   certificates and the clinibox ACL (``tests.mqtt_broker``). Reference in the
   same run: a bare paho-mqtt v5 TLS client with the same device certificate
   publishing the same N envelopes, sealed beforehand, at QoS 1 with the same
   window and waiting for every PUBACK (no SQLite, no sealing). A receiver-
   certificate client subscribed to ``clinibox/#`` runs in a separate process
   throughout (without one the broker answers "no matching subscribers" and
   the box keeps its messages). ``seal()`` alone is timed as a second reference.
2. Receiver ingest (messages/s): ``central.receiver.Receiver.handle()`` over N
   distinct sealed alerts from one enrolled device (verify, decrypt, schema
   check, store with de-duplication) on SQLite and on PostgreSQL, then the
   same N again (all duplicates). Reference in the same run: ``open_envelope``
   + ``check_message`` alone, nothing stored. PostgreSQL is the server of
   ``tests/postgres_server.py`` without its test-only fsync-off options (durable),
   measured with synchronous commit on, then off for a second database.
3. Bytes per message: canonical plaintext JSON vs sealed envelope, the
   envelope's overhead, the topic and the MQTT v5 PUBLISH packet.

    .venv/bin/python -m bench.telemetry [--messages 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import REPO, figure, save
from central.config import CentralConfig
from central.receiver import Receiver
from central.store import Store
from clinibox_common.contracts.egress import check_message
from clinibox_common.contracts.envelope import (
    Header,
    canonical_payload,
    generate_x25519_pair,
    load_x25519_private,
    load_x25519_public,
    open_envelope,
    seal,
)
from clinibox_common.contracts.topics import topic
from firmware_app.settings.box import Config, from_dict
from firmware_app.storage import db
from firmware_app.storage.outbox import Outbox
from firmware_app.telemetry.identity import load_identity
from firmware_app.telemetry.messages import ModelFacts
from firmware_app.telemetry.mqtt import NO_MATCHING_SUBSCRIBERS, WINDOW, Publisher
from tests.mqtt_broker import Broker, MqttPki, make_mqtt_pki
from tests.postgres_server import PostgresServer
from tests.telemetry_payloads import (
    MODEL,
    alert_payload,
    status_payload,
    summary_payload,
)

CLINIC, DEVICE = "clinic-a", "box-1"
LABELS = ("lesion",)
SUBSCRIPTION = "clinibox/#"


# -- payloads and keys ----------------------------------------------------------

def alerts(count: int) -> list[dict[str, Any]]:
    """``count`` distinct, valid alert payloads (one study reference each)."""
    now = int(time.time())
    return [alert_payload(created_at=now, study_ref=f"{i:032x}",
                          score=round(0.88 + 0.1 * (i % 100) / 100, 4), instances=1 + i % 7)
            for i in range(count)]


def sealed_alerts(payloads: list[dict[str, Any]], hospital: X25519PublicKey,
                  device_key: Ed25519PrivateKey, first_seq: int = 1) -> list[bytes]:
    """The payloads sealed as alerts numbered from ``first_seq``."""
    return [seal(Header(CLINIC, DEVICE, "alert", first_seq + i), payload, hospital, device_key)
            for i, payload in enumerate(payloads)]


def public_pem(key: Ed25519PrivateKey) -> str:
    """PEM of the public half of a device key (what the hospital enrols)."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def per_message_us(work: Callable[[], object], count: int) -> float:
    """Microseconds per call of ``work`` over ``count`` calls."""
    started = time.perf_counter()
    for _ in range(count):
        work()
    return (time.perf_counter() - started) / count * 1e6


# -- the subscriber (a child process) -----------------------------------------------

def run_subscriber(host: str, port: int, ca: str, cert: str, key: str) -> None:
    """Child process: subscribe to clinibox/# at QoS 1, count messages until stdin closes."""
    count = 0
    subscribed = threading.Event()

    def on_connect(client: mqtt.Client, *_: Any) -> None:
        client.subscribe(SUBSCRIPTION, qos=1)

    def on_message(*_: Any) -> None:
        nonlocal count
        count += 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-subscriber",
                         protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
    client.on_connect = on_connect
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = on_message
    client.connect(host, port, keepalive=60)
    client.loop_start()
    if not subscribed.wait(15):
        sys.exit("subscriber: no SUBACK")
    print("subscribed", flush=True)
    sys.stdin.read()  # the parent closes our stdin when it is done
    time.sleep(0.5)  # let the last forwarded messages arrive
    client.disconnect()
    client.loop_stop()
    print(count, flush=True)


def start_subscriber(broker: Broker, pki: MqttPki) -> subprocess.Popen[str]:
    """Start the subscriber child and wait for its SUBACK."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.telemetry", "--subscriber", broker.host, str(broker.port),
         str(pki.ca_cert), str(pki.receiver.cert), str(pki.receiver.key)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "subscribed":
        proc.kill()
        raise RuntimeError(f"subscriber did not subscribe (said {line!r})")
    return proc


def stop_subscriber(proc: subprocess.Popen[str]) -> int | None:
    """Close the child's stdin; return how many messages it received (None if it failed)."""
    try:
        out, _ = proc.communicate(input="", timeout=20)
        return int(out.split()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        proc.kill()
        proc.wait()
        return None


# -- 1. outbox drain ----------------------------------------------------------------

def box_config(root: Path, broker: Broker, pki: MqttPki, hospital_pub: Path) -> Config:
    """A box config for the local broker (its own state folder under ``root``)."""
    identity = pki.device(CLINIC, DEVICE)
    return from_dict({
        "storage": {"state_dir": str(root / "state")},
        "mqtt": {"host": broker.host, "port": broker.port, "ca_file": str(pki.ca_cert),
                 "cert_file": str(identity.cert), "key_file": str(identity.key)},
        "telemetry": {"clinic": CLINIC, "device": DEVICE, "hospital_key": str(hospital_pub)},
    })


def time_publisher(root: Path, broker: Broker, pki: MqttPki, hospital_pub: Path,
                   payloads: list[dict[str, Any]]) -> dict[str, float]:
    """Fill a fresh outbox, then time ``Publisher.drain()`` until it is empty."""
    config = box_config(root, broker, pki, hospital_pub)
    conn = db.connect(config.database_path)
    db.initialise(conn)
    outbox = Outbox(conn, config.telemetry.outbox_max_messages, set(LABELS))
    started = time.perf_counter()
    for payload in payloads:
        outbox.enqueue("alert", payload)
    enqueue_s = time.perf_counter() - started
    conn.close()
    model = ModelFacts(MODEL, LABELS, 0.88)
    publisher = Publisher(config, load_identity(config), load_x25519_public(hospital_pub),
                          model, started=time.time())
    try:
        publisher.connect()  # enqueues an "online" status: N + 1 messages wait
        waiting = publisher.outbox.pending_count()
        started = time.perf_counter()
        sent = publisher.drain()
        drain_s = time.perf_counter() - started
        left = publisher.outbox.pending_count()
    finally:
        publisher.close(send_offline=False)
        publisher.conn.close()
    if left or sent != waiting:
        raise RuntimeError(f"drain sent {sent} of {waiting}, {left} still waiting")
    # drain() writes set_envelope() and note_attempt() per message, each its own
    # autocommit transaction: time that kind of write alone on the same database
    conn = db.connect(config.database_path)
    try:
        outbox = Outbox(conn, config.telemetry.outbox_max_messages, set(LABELS))
        seqs = [int(r[0]) for r in conn.execute("SELECT seq FROM outbox WHERE kind='alert'")]
        started = time.perf_counter()
        for seq in seqs:
            outbox.note_attempt(seq)
        write_us = (time.perf_counter() - started) / len(seqs) * 1e6
    finally:
        conn.close()
    return {"messages": sent, "drain_s": round(drain_s, 3),
            "messages_per_s": round(sent / drain_s, 1),
            "enqueue_per_s": round(len(payloads) / enqueue_s, 1),
            "autocommit_write_us": round(write_us, 1)}


def time_raw_client(broker: Broker, pki: MqttPki, envelopes: list[bytes]) -> dict[str, float]:
    """The reference: a bare paho v5 TLS client, QoS 1, ``WINDOW`` in flight, all PUBACKs."""
    identity = pki.device(CLINIC, DEVICE)
    window = threading.Semaphore(WINDOW)
    connected, finished = threading.Event(), threading.Event()
    acks: Counter[str] = Counter()

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            connected.set()

    def on_publish(_c: mqtt.Client, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        ok = not reason.is_failure and reason.value != NO_MATCHING_SUBSCRIBERS
        acks["delivered" if ok else str(reason)] += 1
        window.release()
        if acks.total() == len(envelopes):
            finished.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw",
                         protocol=mqtt.MQTTv5, reconnect_on_failure=False)
    client.tls_set(ca_certs=str(pki.ca_cert), certfile=str(identity.cert),
                   keyfile=str(identity.key), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.max_inflight_messages_set(WINDOW)
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect(broker.host, broker.port, keepalive=60)
    client.loop_start()
    try:
        if not connected.wait(15):
            raise RuntimeError("reference client: no CONNACK")
        name = topic(CLINIC, DEVICE, "alert")
        started = time.perf_counter()
        for envelope in envelopes:
            window.acquire()
            info = client.publish(name, envelope, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"reference publish failed: {mqtt.error_string(info.rc)}")
        if not finished.wait(120):
            raise RuntimeError(f"reference client: only {acks.total()} PUBACKs")
        elapsed = time.perf_counter() - started
    finally:
        client.disconnect()
        client.loop_stop()
    if acks["delivered"] != len(envelopes):
        raise RuntimeError(f"reference client: PUBACKs {dict(acks)}")
    return {"messages": len(envelopes), "drain_s": round(elapsed, 3),
            "messages_per_s": round(len(envelopes) / elapsed, 1)}


def bench_drain(root: Path, count: int, repeat: int, hospital_pub: Path,
                hospital: X25519PublicKey) -> dict[str, Any]:
    """Section 1: publisher vs bare client (interleaved), and seal() alone."""
    pki = make_mqtt_pki(root / "pki", [(CLINIC, DEVICE)])
    broker = Broker(root / "broker", pki)
    subscriber: subprocess.Popen[str] | None = None
    device_key = Ed25519PrivateKey.generate()
    payloads = alerts(count)
    started = time.perf_counter()
    envelopes = sealed_alerts(payloads, hospital, device_key)
    seal_us = (time.perf_counter() - started) / count * 1e6
    gate_us = per_message_us(lambda: check_message("alert", payloads[0], set(LABELS)), count)
    raw_runs, box_runs = [], []
    try:
        broker.start()
        subscriber = start_subscriber(broker, pki)
        for run in range(repeat):
            raw_runs.append(time_raw_client(broker, pki, envelopes))
            box_runs.append(time_publisher(root / f"box-{run}", broker, pki, hospital_pub,
                                           payloads))
    finally:
        received = stop_subscriber(subscriber) if subscriber is not None else None
        broker.stop()
        broker.kill()
    raw = round(statistics.median(r["messages_per_s"] for r in raw_runs), 1)
    box = round(statistics.median(r["messages_per_s"] for r in box_runs), 1)
    expected = sum(r["messages"] for r in raw_runs + box_runs)
    return {
        "broker": "mosquitto 2.0.11, TLS + client certificates + ACL, log_type all",
        "window": WINDOW,
        "publisher_messages_per_s": box,
        "raw_client_messages_per_s": raw,
        "publisher_vs_raw": round(box / raw, 3),
        "publisher_us_per_message": round(1e6 / box, 1),
        "raw_client_us_per_message": round(1e6 / raw, 1),
        "outbox_enqueue_per_s": round(statistics.median(r["enqueue_per_s"] for r in box_runs), 1),
        "autocommit_write_us": round(statistics.median(r["autocommit_write_us"]
                                                       for r in box_runs), 1),
        "seal_us_per_message": round(seal_us, 1),
        "gate_us_per_message": round(gate_us, 1),
        "seal_ceiling_messages_per_s": round(1e6 / seal_us, 1),
        "subscriber_received": received,
        "subscriber_expected": expected,
        "runs": {"publisher": box_runs, "raw_client": raw_runs},
    }


# -- 2. receiver ingest ---------------------------------------------------------------

def pg_settings(url: str) -> dict[str, str]:
    """fsync and synchronous_commit as a session on ``url`` sees them."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return {name: str(conn.execute(f"SHOW {name}").fetchone()[0])
                for name in ("fsync", "synchronous_commit")}


def time_reference(envelopes: list[bytes], device_key: Ed25519PrivateKey,
                   hospital_private: X25519PrivateKey) -> float:
    """Messages/s of verify + decrypt + schema check alone (nothing stored)."""
    public = device_key.public_key()
    started = time.perf_counter()
    for envelope in envelopes:
        opened = open_envelope(envelope, public, hospital_private)
        check_message(opened.header.kind, opened.payload, None)
    return len(envelopes) / (time.perf_counter() - started)


def time_ingest(url: str, envelopes: list[bytes], device_key: Ed25519PrivateKey,
                hospital_private: X25519PrivateKey) -> dict[str, Any]:
    """``Receiver.handle()`` over the envelopes on a fresh database, then again (duplicates)."""
    store = Store(url)
    try:
        store.enrol(CLINIC, DEVICE, public_pem(device_key))
        receiver = Receiver(CentralConfig(), store, hospital_private)
        name = topic(CLINIC, DEVICE, "alert")
        figures: dict[str, Any] = {}
        for label, expected in (("new", "stored"), ("duplicates", "duplicate")):
            started = time.perf_counter()
            outcomes = Counter(receiver.handle(name, envelope) for envelope in envelopes)
            elapsed = time.perf_counter() - started
            if outcomes != {expected: len(envelopes)}:
                raise RuntimeError(f"{label}: unexpected outcomes {dict(outcomes)}")
            figures[f"{label}_messages_per_s"] = round(len(envelopes) / elapsed, 1)
            figures[f"{label}_ms_per_message"] = round(elapsed / len(envelopes) * 1e3, 3)
        counts = store.counts()
        if counts["messages"] != len(envelopes) or counts["alerts"] != len(envelopes):
            raise RuntimeError(f"store holds {counts}")
    finally:
        store.close()
    return figures


def bench_ingest(root: Path, count: int, hospital: X25519PublicKey,
                 hospital_private: X25519PrivateKey) -> dict[str, Any]:
    """Section 2: the receiver on SQLite and PostgreSQL against verify + decrypt alone."""
    device_key = Ed25519PrivateKey.generate()
    envelopes = sealed_alerts(alerts(count), hospital, device_key)
    time_reference(envelopes[:100], device_key, hospital_private)  # warm-up
    references = [time_reference(envelopes, device_key, hospital_private)]
    rows: dict[str, Any] = {}
    rows["sqlite (WAL, synchronous=FULL)"] = time_ingest(
        f"sqlite:///{root / 'central.db'}", envelopes, device_key, hospital_private)
    server = PostgresServer(root / "postgres", durable=True)
    try:
        server.start()
        for database, durable in (("durable", True), ("async_commit", False)):
            url = server.create_database(database)
            if not durable:
                import psycopg

                with psycopg.connect(server.url(), autocommit=True) as conn:
                    conn.execute(f"ALTER DATABASE {database} SET synchronous_commit = off")
            settings = pg_settings(url)
            label = (f"postgresql {server.bin_dir.parent.name} (fsync={settings['fsync']}, "
                     f"synchronous_commit={settings['synchronous_commit']})")
            rows[label] = time_ingest(url, envelopes, device_key, hospital_private)
    finally:
        server.stop()
    references.append(time_reference(envelopes, device_key, hospital_private))
    reference = statistics.median(references)
    for row in rows.values():
        row["vs_reference"] = round(row["new_messages_per_s"] / reference, 3)
        # device lookup, key parsing, the INSERTs and the commit
        row["extra_ms_per_message"] = round(row["new_ms_per_message"] - 1e3 / reference, 3)
    return {"reference_messages_per_s": round(reference, 1),
            "reference_ms_per_message": round(1e3 / reference, 3),
            "reference_runs": [round(r, 1) for r in references], "stores": rows}


# -- 3. bytes per message -------------------------------------------------------------

def _varint_len(value: int) -> int:
    length = 1
    while value >= 128:
        value //= 128
        length += 1
    return length


def bench_bytes(hospital: X25519PublicKey) -> dict[str, dict[str, int]]:
    """Plaintext vs envelope vs MQTT PUBLISH bytes of a typical message of each kind."""
    device_key = Ed25519PrivateKey.generate()
    now = int(time.time())
    typical = {"alert": alert_payload(created_at=now, study_ref="3f" * 16),
               "summary": summary_payload(created_at=now, period_start=now - 3600,
                                          period_end=now),
               "status": status_payload("heartbeat", created_at=now, uptime_s=86_400)}
    out = {}
    for kind, payload in typical.items():
        header = Header(CLINIC, DEVICE, kind, 12_345)
        envelope = seal(header, payload, hospital, device_key)
        plain = len(canonical_payload(payload))
        name = topic(CLINIC, DEVICE, kind)
        remaining = 2 + len(name) + 2 + 1 + len(envelope)  # topic, packet id, no properties
        out[kind] = {"plaintext": plain, "envelope": len(envelope),
                     "overhead": len(envelope) - plain, "header": len(header.to_bytes()),
                     "topic": len(name),
                     "mqtt_publish": 1 + _varint_len(remaining) + remaining}
    return out


# -- main ---------------------------------------------------------------------------

def print_tables(figures: dict[str, Any]) -> None:
    """The figures as readable tables."""
    drain, ingest, sizes = figures["drain"], figures["ingest"], figures["bytes"]
    n = figures["messages"]
    print(f"\n1. Outbox drain, {n} alerts, window {drain['window']} (medians of "
          f"{figures['repeat']})")
    print(f"  {'sender':<52}{'msgs/s':>10}{'vs raw':>9}")
    print(f"  {'bare paho v5 TLS client, pre-sealed (reference)':<52}"
          f"{drain['raw_client_messages_per_s']:>10.1f}{1.0:>9.2f}")
    print(f"  {'clinibox Publisher.drain() (SQLite outbox + seal)':<52}"
          f"{drain['publisher_messages_per_s']:>10.1f}{drain['publisher_vs_raw']:>9.2f}")
    print(f"  per message: publisher {drain['publisher_us_per_message']:.0f} µs, bare client "
          f"{drain['raw_client_us_per_message']:.0f} µs; seal() alone "
          f"{drain['seal_us_per_message']:.0f} µs (ceiling "
          f"{drain['seal_ceiling_messages_per_s']:.0f}/s), egress gate "
          f"{drain['gate_us_per_message']:.0f} µs,")
    print(f"  one autocommit outbox write (drain does 2 a message) "
          f"{drain['autocommit_write_us']:.0f} µs; Outbox.enqueue "
          f"{drain['outbox_enqueue_per_s']:.0f}/s")
    print(f"  subscriber received {drain['subscriber_received']} of "
          f"{drain['subscriber_expected']}")
    print(f"\n2. Receiver ingest, {n} distinct alerts from one device")
    print(f"  {'store':<58}{'msgs/s':>9}{'vs ref':>8}{'extra ms':>10}{'dups/s':>9}")
    print(f"  {'verify + decrypt + schema only (reference)':<58}"
          f"{ingest['reference_messages_per_s']:>9.1f}{1.0:>8.2f}{0:>10.3f}{'':>9}")
    for label, row in ingest["stores"].items():
        print(f"  {label:<58}{row['new_messages_per_s']:>9.1f}{row['vs_reference']:>8.2f}"
              f"{row['extra_ms_per_message']:>10.3f}{row['duplicates_messages_per_s']:>9.1f}")
    print("\n3. Bytes per message")
    print(f"  {'kind':<9}{'plaintext':>10}{'envelope':>10}{'overhead':>10}{'header':>8}"
          f"{'topic':>7}{'PUBLISH':>9}")
    for kind, row in sizes.items():
        print(f"  {kind:<9}{row['plaintext']:>10}{row['envelope']:>10}{row['overhead']:>10}"
              f"{row['header']:>8}{row['topic']:>7}{row['mqtt_publish']:>9}")
    print(f"\n  run time {figures['run_s']:.0f} s\n")


def main() -> None:
    """Measure the three sections, print tables and save bench/out/telemetry.json."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000, help="N messages per run")
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved drain runs (publisher and reference each)")
    parser.add_argument("--subscriber", nargs=5, metavar=("HOST", "PORT", "CA", "CERT", "KEY"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        host, port, ca, cert, key = args.subscriber
        run_subscriber(host, int(port), ca, cert, key)
        return
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="clinibox-bench-telemetry-"))
    try:
        generate_x25519_pair(root / "hospital.pem", root / "hospital.pub")
        hospital_private = load_x25519_private(root / "hospital.pem")
        hospital = hospital_private.public_key()
        figures: dict[str, Any] = {"messages": args.messages, "repeat": args.repeat,
                                   "cores": os.cpu_count()}
        figures["drain"] = bench_drain(root, args.messages, args.repeat, root / "hospital.pub",
                                       hospital)
        figures["ingest"] = bench_ingest(root, args.messages, hospital, hospital_private)
        figures["bytes"] = bench_bytes(hospital)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    figures["run_s"] = round(time.perf_counter() - started, 1)
    print_tables(figures)
    drain, ingest = figures["drain"], figures["ingest"]
    raw_ref = "a bare paho-mqtt v5 TLS client publishing the same sealed envelopes, same run"
    gate_ref = "open_envelope + check_message alone, nothing stored, same run"
    kept = {"outbox drain": figure(drain["publisher_messages_per_s"], "messages/s", raw_ref),
            "bare paho client": figure(drain["raw_client_messages_per_s"], "messages/s"),
            "outbox drain ÷ bare client": figure(drain["publisher_vs_raw"], "×", raw_ref),
            "seal() alone": figure(drain["seal_us_per_message"], "µs/message"),
            "receiver: verify, decrypt, schema only": figure(
                ingest["reference_messages_per_s"], "messages/s")}
    for label, row in ingest["stores"].items():
        kept[f"receiver on {label}"] = figure(row["new_messages_per_s"], "messages/s",
                                              gate_ref)
    for kind, row in figures["bytes"].items():
        kept[f"{kind}: envelope"] = figure(row["envelope"], "bytes")
        kept[f"{kind}: MQTT PUBLISH"] = figure(row["mqtt_publish"], "bytes")
    save("telemetry", figures, kept,
         notes=f"{args.messages} alerts, window {drain['window']}, medians of {args.repeat} "
               f"drain runs; {drain['broker']}")


if __name__ == "__main__":
    main()
