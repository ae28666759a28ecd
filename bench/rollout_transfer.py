"""Rollout transfer over a capped rural link: how long a model package takes to reach a box and
be installed there, and how many bytes cross the box's link (issue 46).

All real parts: Mosquitto with TLS and the clinibox ACL (``tests/mqtt_broker.py``), ``clinibox
central serve`` on SQLite with ``[rollouts] trusted_keys``, and for each case a fresh box,
``clinibox serve`` (``tests/box_harness.Box``) enrolled at the hospital, whose ``[mqtt]``
host/port point at a byte-counting TCP relay on 127.0.0.1 in front of the broker (TLS passes
through it untouched; the broker's certificate names 127.0.0.1, which the box checks). The
package is the demo-derived one of the tests (``tests/model_packages.make_package``, packed by
``contracts/package_archive.pack``, signed by the demo key the boxes trust): about 4.2 MB.

Each case starts a rollout with ``clinibox central rollout`` and times, from that command:
the offer's arrival on the box (``model_offers.received_at``), its ``downloading`` and
``downloaded`` steps and ``model_installed`` (the box's event log), and the hospital's
``on_trial`` (``rollout_targets.updated_at``). The relay stamps every read, so the bytes on
the wire (both directions, TLS and MQTT included) are summed between those instants.

Cases: ``[updates] max_kbps`` 256, 1024, 4096 and 0 (no cap); and 1024 with the relay
closing both sockets once half the archive has passed (the resume's cost, against the plain
1024 case). References in the same run: the archive copied over a plain TLS socket through a
relay at no cap (the bare transfer), a bare paho client taking the same retained chunks one at
a time as the box does (subscribe, wait, unsubscribe) through a relay and straight to the
broker (on the chunks of a rollout to a box that never connects, rolled back before the
cases), and the theoretical time archive_bytes × 8 / cap.

    .venv/bin/python -m bench.rollout_transfer [--quick] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import BOX_DEFAULTS, REPO, figure, machine, save
from bench.relay import Relay
from clinibox_common.contracts import downlink, signing
from clinibox_common.contracts.package_archive import pack
from tests.box_harness import Box, clinibox, stop, to_toml
from tests.model_packages import make_package
from tests.mqtt_broker import Broker, MqttPki, make_mqtt_pki, receiver_settings

CLINIC = "clinic-a"
DEMO_PUBLIC_KEY = REPO / "models" / "keys" / "DEMO-ONLY-model-signing.pub"
VERSION = "1.1.0"
CHUNK_KIB = 64  # [rollouts] chunk_kib, its default
CAPS = (0, 4096, 1024, 256)
QUICK_CAPS = (0, 4096)
DROP_CAP = 1024


# -- the references ---------------------------------------------------------------------------

def bare_tls(pki: MqttPki, data: bytes, repeat: int = 3) -> dict[str, Any]:
    """The archive's bytes over a plain TLS socket (the broker's certificate) through a relay
    at no cap: seconds (median of ``repeat``) and bytes on the wire."""
    server = socket.create_server(("127.0.0.1", 0))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    client_ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    relay = Relay(server.getsockname()[1])

    def serve_once() -> None:
        conn, _ = server.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(data)
            with contextlib.suppress(OSError):  # the client hangs up without its own
                tls.unwrap()  # close_notify: the client reads to the end

    runs = []
    try:
        for _ in range(repeat):
            sender = threading.Thread(target=serve_once, daemon=True)
            sender.start()
            started = time.time()
            got = 0
            with client_ctx.wrap_socket(socket.create_connection(("127.0.0.1", relay.port)),
                                        server_hostname="127.0.0.1") as tls:
                while chunk := tls.recv(65536):
                    got += len(chunk)
            ended = time.time()
            sender.join(10)
            if got != len(data):
                raise RuntimeError(f"bare TLS: {got} of {len(data)} bytes")
            runs.append({"s": ended - started, "wire": relay.between(started, ended + 0.5)})
    finally:
        relay.close()
        server.close()
    seconds = statistics.median(r["s"] for r in runs)
    wire = runs[0]["wire"]["total"]
    return {"seconds": round(seconds, 4), "wire_bytes": wire,
            "overhead_pct": round(100 * (wire - len(data)) / len(data), 2),
            "mbit_per_s": round(len(data) * 8 / seconds / 1e6, 1), "runs": len(runs)}


def bare_chunks(broker: Broker, pki: MqttPki, sha: str, count: int, *,
                relay: bool = True) -> dict[str, Any]:
    """A bare paho v5 TLS client taking the retained chunks one at a time, as the box does
    (subscribe, wait for the chunk, unsubscribe), through a relay (or straight to the broker):
    seconds and wire bytes."""
    name = "bench-reference" + ("" if relay else "-direct")
    identity = pki.add_device(CLINIC, name)
    counter = Relay(broker.port) if relay else None
    got: dict[str, bytes] = {}
    arrived, connected = threading.Event(), threading.Event()

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        got[message.topic] = bytes(message.payload)
        arrived.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name,
                         protocol=mqtt.MQTTv5, reconnect_on_failure=False)
    client.tls_set(ca_certs=str(pki.ca_cert), certfile=str(identity.cert),
                   keyfile=str(identity.key), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.on_message = on_message
    client.on_connect = lambda *_: connected.set()
    client.connect("127.0.0.1", counter.port if counter else broker.port, keepalive=60)
    client.loop_start()
    try:
        if not connected.wait(15):
            raise RuntimeError("bare chunk client: no CONNACK")
        started = time.time()
        for index in range(count):
            topic = downlink.chunk_topic(sha, index)
            arrived.clear()
            client.subscribe(topic, qos=1)
            if not arrived.wait(30) or topic not in got:
                raise RuntimeError(f"bare chunk client: chunk {index} did not come")
            client.unsubscribe(topic)
        ended = time.time()
        time.sleep(0.3)  # the last UNSUBACK
        wire = counter.between(started, time.time()) if counter else None
    finally:
        client.disconnect()
        client.loop_stop()
        if counter:
            counter.close()
    size = sum(len(v) for v in got.values())
    found: dict[str, Any] = {"seconds": round(ended - started, 3), "payload_bytes": size,
                             "ms_per_chunk": round((ended - started) / count * 1000, 1)}
    if wire:
        found.update(wire_bytes=wire["total"], wire=wire,
                     overhead_pct=round(100 * (wire["total"] - size) / size, 2))
    return found


# -- the hospital -----------------------------------------------------------------------------

@dataclass
class Hospital:
    """The broker, ``clinibox central serve`` and its SQLite database."""

    root: Path
    pki: MqttPki
    broker: Broker
    config: Path
    database: Path
    process: subprocess.Popen[bytes] | None = None

    def central(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``clinibox central …`` with the hospital's config."""
        return clinibox("central", *args, "--config", str(self.config))

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Read the hospital's database."""
        conn = sqlite3.connect(self.database, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()


def start_hospital(root: Path) -> Hospital:
    """Mosquitto (TLS, ACL) and ``clinibox central serve`` with the demo key trusted for
    rollouts."""
    pki = make_mqtt_pki(root / "pki", [])
    broker = Broker(root / "broker", pki).start()
    clinibox("keys", "generate", "--kind", "hospital", "--out", str(root / "hospital"))
    clinibox("keys", "generate", "--kind", "hospital-signing", "--out",
             str(root / "hospital-signing"))
    database = root / "central.db"
    settings = receiver_settings(broker, pki, database, root / "hospital.pem", "central-bench")
    settings["keys"]["hospital_signing_key"] = str(root / "hospital-signing.pem")
    settings["rollouts"] = {"trusted_keys": [str(DEMO_PUBLIC_KEY)], "chunk_kib": CHUNK_KIB}
    config = root / "central.toml"
    config.write_text(to_toml(settings))
    hospital = Hospital(root, pki, broker, config, database)
    log = root / "central.log"
    with log.open("ab") as out:
        hospital.process = subprocess.Popen(
            [sys.executable, "-m", "clinibox", "central", "serve", "--config",
             str(config)], stdout=out, stderr=out, cwd=REPO)
    deadline = time.monotonic() + 60
    while "connected to" not in log.read_text(errors="replace"):
        if hospital.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"central serve did not connect:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return hospital


def stop_hospital(hospital: Hospital) -> None:
    """Stop ``central serve`` and the broker."""
    if hospital.process is not None:
        stop(hospital.process)
    hospital.broker.stop()
    hospital.broker.kill()


# -- one case ---------------------------------------------------------------------------------

def wait(predicate: Any, timeout: float, what: str, box: Box | None = None) -> None:
    """Poll ``predicate`` every 0.1 s; RuntimeError (with the box's log) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if box is not None and box.process is not None and box.process.poll() is not None:
            break
        time.sleep(0.1)
    tail = box.log.read_text(errors="replace")[-4000:] if box is not None else ""
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def start_box(hospital: Hospital, device: str, relay: Relay, cap: float) -> Box:
    """A fresh ``clinibox serve`` enrolled as ``clinic-a/<device>``, its broker link through
    ``relay``, ``[updates] max_kbps`` = ``cap``; returns once the hospital knows its
    downlink key (it can be offered a rollout)."""
    identity = hospital.pki.add_device(CLINIC, device)
    folder = hospital.root / device
    folder.mkdir()
    root = hospital.root
    box = Box(folder, {
        **BOX_DEFAULTS,
        "mqtt": {"host": "127.0.0.1", "port": relay.port, "ca_file": str(hospital.pki.ca_cert),
                 "cert_file": str(identity.cert), "key_file": str(identity.key)},
        "telemetry": {"clinic": CLINIC, "device": device,
                      "hospital_key": str(root / "hospital.pub"),
                      "hospital_signing_key": str(root / "hospital-signing.pub")},
        "updates": {"max_kbps": cap},
    })
    public = folder / "device.pub"
    box.cli("identity", "--out", str(public))
    hospital.central("enrol", "--clinic", CLINIC, "--device", device, "--key", str(public))
    box.start()
    wait(lambda: bool(hospital.rows(
        "SELECT 1 FROM box_state WHERE clinic = ? AND device = ? AND downlink_key IS NOT NULL",
        (CLINIC, device))), 90, f"{device}'s downlink key at the hospital", box)
    return box


def box_events(box: Box, rollout_id: int) -> dict[str, float]:
    """When the box's event log noted each step of the rollout (first time each)."""
    found: dict[str, float] = {}
    for at, message in box.db_rows("SELECT at, message FROM events ORDER BY id"):
        step = re.fullmatch(rf"rollout {rollout_id} of \S+: (\w+)( \(.*\))?", message)
        if step:
            found.setdefault(step.group(1), at)
        elif re.match(r"model \S+ installed ", message):
            found.setdefault("model_installed", at)
    return found


def chunk_subscribes(broker: Broker, client_id: str, sha: str) -> dict[str, int]:
    """The SUBSCRIBEs to the archive's chunk topics the broker logged from ``client_id``: how
    many, and how many distinct chunks (equal when nothing had to be asked again)."""
    count, chunks, current = 0, set(), ""
    wanted = re.compile(rf"\t{downlink.PACKAGE_ROOT}/{sha}/(\d+) \(QoS")
    for line in broker.log_text().splitlines():
        sender = re.search(r"Received (\w+) from (\S+)", line)
        if sender:
            current = sender.group(2) if sender.group(1) == "SUBSCRIBE" else ""
        elif current == client_id and (found := wanted.search(line)):
            count += 1
            chunks.add(int(found.group(1)))
    return {"subscribes": count, "distinct_chunks": len(chunks)}


def run_case(hospital: Hospital, archive: Path, label: str, cap: float,
             drop: bool = False) -> dict[str, Any]:
    """One rollout of ``archive`` to a fresh box at ``cap`` kbps: timings and wire bytes."""
    size = archive.stat().st_size
    device = f"box-{label}"
    relay = Relay(hospital.broker.port)
    box: Box | None = None
    try:
        box = start_box(hospital, device, relay, cap)
        if drop:
            relay.arm_drop(size // 2)
        started = time.time()
        out = hospital.central("rollout", str(archive), "--to", f"{CLINIC}/{device}").stdout
        command_done = time.time()
        rollout_id = int(out.split()[1].rstrip(":"))
        theory = size * 8 / (cap * 1000) if cap else 0.0
        limit = 180 + 3 * theory

        def finished() -> bool:
            rows = box.db_rows("SELECT done FROM model_offers WHERE rollout = ?", (rollout_id,))
            return bool(rows) and bool(rows[0][0])

        wait(finished, limit, f"rollout {rollout_id} to finish on {device}", box)
        offer = box.db_rows("SELECT received_at, step, reason, payload FROM model_offers"
                            " WHERE rollout = ?", (rollout_id,))[0]
        if offer["step"] != "on_trial":
            raise RuntimeError(f"{device}: rollout ended {offer['step']} ({offer['reason']})\n"
                               f"{box.log.read_text(errors='replace')[-4000:]}")
        wait(lambda: hospital.rows(
            "SELECT step FROM rollout_targets WHERE rollout_id = ? AND device = ?",
            (rollout_id, device))[0][0] in ("on_trial", "kept"), 60,
             "the hospital to hear of the install", box)
        listing = json.loads(hospital.central("rollouts", str(rollout_id), "--json").stdout)[0]
        target = next(b for b in listing["boxes"] if b["device"] == device)
        events = box_events(box, rollout_id)
        time.sleep(0.2)
        arrived, installed = float(offer["received_at"]), events["model_installed"]
        down_from, down_to = events["downloading"], events["downloaded"]
        wire = relay.between(arrived, installed)
        download_wire = relay.between(down_from, down_to)
        download_s = down_to - down_from
        payload = json.loads(offer["payload"])
        log_text = box.log.read_text(errors="replace")
        result: dict[str, Any] = {
            "cap_kbps": cap, "drop": drop, "rollout": rollout_id,
            "chunks": len(payload["chunk_sha256"]), "chunk_bytes": payload["chunk_bytes"],
            "command_s": round(command_done - started, 2),
            "offer_arrived_s": round(arrived - started, 2),
            "download_started_s": round(down_from - started, 2),
            "download_s": round(download_s, 2),
            "installed_s": round(installed - started, 2),
            "install_after_download_s": round(installed - down_to, 2),
            "hospital_on_trial_s": round(float(target["updated_at"]) - started, 2),
            "hospital_step": target["step"],
            "theoretical_s": round(theory, 2) if cap else None,
            "download_vs_theory": round(download_s / theory, 3) if cap else None,
            "effective_kbps": round(size * 8 / download_s / 1000, 1),
            "wire_offer_to_install": wire,
            "wire_download": download_wire,
            "overhead_pct": round(100 * (download_wire["total"] - size) / size, 2),
            "relay_connections": relay.connections,
            "chunk_subscribes": chunk_subscribes(hospital.broker,
                                                 f"clinibox-{CLINIC}-{device}",
                                                 payload["archive_sha256"]),
            "steps": {k: round(v - started, 2) for k, v in sorted(events.items(),
                                                                   key=lambda kv: kv[1])},
        }
        if cap:
            result["effective_vs_cap"] = round(result["effective_kbps"] / cap, 3)
        if drop:
            result["dropped_at_s"] = (round(relay.dropped_at - started, 2)
                                      if relay.dropped_at else None)
            result["box_log"] = [line for line in log_text.splitlines()
                                 if re.search(r"did not come|resuming|broker link|retrying in"
                                              r"|connected to broker", line)][-12:]
        return result
    finally:
        if box is not None:
            box.stop()
        relay.close()


def chunk_references(hospital: Hospital, archive: Path) -> dict[str, Any]:
    """The bare chunk client through a relay and straight to the broker, on the chunks of a
    rollout to an enrolled box that never connects (so they stay retained), rolled back
    afterwards (so the cases start, as a real rollout does, with nothing retained)."""
    device = "box-offline"
    public = hospital.root / f"{device}.pub"
    signing.generate_key_pair(hospital.root / f"{device}.pem", public)
    hospital.central("enrol", "--clinic", CLINIC, "--device", device, "--key", str(public))
    log = hospital.root / "central.log"
    offset = len(log.read_bytes())
    out = hospital.central("rollout", str(archive), "--to", f"{CLINIC}/{device}").stdout
    rollout_id = int(out.split()[1].rstrip(":"))
    row = json.loads(hospital.central("rollouts", str(rollout_id), "--json").stdout)[0]
    sha, count = row["archive_sha256"], len(row["chunk_sha256"])
    wait(lambda: f"rollout package {sha[:12]}: {count} chunks published".encode()
         in log.read_bytes()[offset:], 60, "the chunks to be retained")
    try:
        return {"bare_chunks": bare_chunks(hospital.broker, hospital.pki, sha, count),
                "bare_chunks_direct": bare_chunks(hospital.broker, hospital.pki, sha, count,
                                                  relay=False)}
    finally:
        hospital.central("rollback", "--rollout", str(rollout_id))
        with contextlib.suppress(RuntimeError):  # a publisher that keeps them retained
            wait(lambda: f"rollout package {sha[:12]}: {count} chunks cleared".encode()
                 in log.read_bytes()[offset:], 20, "the chunks to be cleared")


# -- the run ----------------------------------------------------------------------------------

def make_archive(root: Path) -> Path:
    """The demo-derived package ``clinibox-demo-lesion@1.1.0``, signed by the demo key, packed."""
    package = make_package(root / "packages", VERSION)
    return pack(package, root / f"clinibox-demo-lesion-{VERSION}.tar.gz").path


def run(root: Path, caps: tuple[int, ...], with_drop: bool) -> dict[str, Any]:
    """Every case and the references, in one run."""
    archive = make_archive(root)
    data = archive.read_bytes()
    details: dict[str, Any] = {"archive_bytes": len(data), "chunk_kib": CHUNK_KIB,
                               "machine": machine()}
    hospital = start_hospital(root)
    try:
        details["bare_tls"] = bare_tls(hospital.pki, data)
        details.update(chunk_references(hospital, archive))
        cases: dict[str, Any] = {}
        for cap in caps:
            label = str(cap) if cap else "uncapped"
            print(f"== max_kbps {cap or 'no cap'}", flush=True)
            cases[label] = run_case(hospital, archive, label, cap)
        if with_drop:
            print(f"== max_kbps {DROP_CAP}, the link dropped halfway", flush=True)
            cases[f"{DROP_CAP}-drop"] = run_case(hospital, archive, f"{DROP_CAP}-drop",
                                                 DROP_CAP, drop=True)
        details["cases"] = cases
    finally:
        stop_hospital(hospital)
    drop, plain = details["cases"].get(f"{DROP_CAP}-drop"), details["cases"].get(str(DROP_CAP))
    if drop and plain:
        details["resume_cost"] = {
            "extra_download_s": round(drop["download_s"] - plain["download_s"], 2),
            "extra_installed_s": round(drop["installed_s"] - plain["installed_s"], 2),
            "extra_wire_bytes": (drop["wire_download"]["total"]
                                 - plain["wire_download"]["total"]),
            "extra_chunk_subscribes": (drop["chunk_subscribes"]["subscribes"]
                                       - plain["chunk_subscribes"]["subscribes"])}
    return details


def print_table(details: dict[str, Any]) -> None:
    """The figures as a readable table."""
    size, bare = details["archive_bytes"], details["bare_tls"]
    print(f"\narchive {size} bytes; bare TLS copy {bare['seconds']} s, "
          f"{bare['wire_bytes']} bytes on the wire (+{bare['overhead_pct']} %)")
    for key, how in (("bare_chunks", "through a relay"), ("bare_chunks_direct", "direct")):
        if key in details:
            found = details[key]
            print(f"bare chunk client ({how}): {found['seconds']} s, {found['ms_per_chunk']} "
                  f"ms a chunk" + (f", +{found['overhead_pct']} % on the wire"
                                   if "overhead_pct" in found else ""))
    print(f"  {'case':<14}{'theory s':>9}{'download s':>11}{'kbps':>9}{'×cap':>7}"
          f"{'installed s':>12}{'hospital s':>11}{'wire bytes':>12}{'overhead':>9}")
    for label, case in details["cases"].items():
        theory = case["theoretical_s"] if case["theoretical_s"] is not None else "-"
        ratio = case.get("effective_vs_cap", "-")
        print(f"  {label:<14}{theory:>9}{case['download_s']:>11}{case['effective_kbps']:>9}"
              f"{ratio:>7}{case['installed_s']:>12}{case['hospital_on_trial_s']:>11}"
              f"{case['wire_download']['total']:>12}{case['overhead_pct']:>8}%")
    if "resume_cost" in details:
        print(f"  resume after a drop at {DROP_CAP} kbps: {details['resume_cost']}")


def record(details: dict[str, Any]) -> None:
    """Print the table and save the record."""
    print_table(details)
    size, bare = details["archive_bytes"], details["bare_tls"]
    bare_ref = "the archive over a plain TLS socket through the same relay, no cap, same run"
    figures: dict[str, Any] = {
        "archive": figure(size, "bytes"),
        "bare TLS copy": figure(bare["seconds"], "s"),
        "bare TLS copy: wire overhead": figure(bare["overhead_pct"], "%"),
        "bare chunk client (subscribe/unsubscribe per chunk)": figure(
            details["bare_chunks"]["seconds"], "s", bare_ref),
        "bare chunk client: wire overhead": figure(details["bare_chunks"]["overhead_pct"], "%",
                                                   bare_ref),
        "bare chunk client straight to the broker": figure(
            details["bare_chunks_direct"]["seconds"], "s", "the same client through the relay"),
    }
    for label, case in details["cases"].items():
        name = f"{label} kbps" if case["cap_kbps"] else "no cap"
        if case["drop"]:
            name = f"{case['cap_kbps']:g} kbps, dropped halfway"
        theory = (f"theoretical {case['theoretical_s']} s (archive bytes × 8 / cap), same run"
                  if case["cap_kbps"] else bare_ref)
        figures[f"{name}: download"] = figure(case["download_s"], "s", theory)
        figures[f"{name}: rollout command → installed"] = figure(case["installed_s"], "s")
        figures[f"{name}: effective rate"] = figure(case["effective_kbps"], "kbps",
                                                    f"cap {case['cap_kbps']:g} kbps"
                                                    if case["cap_kbps"] else None)
        figures[f"{name}: wire bytes, download"] = figure(case["wire_download"]["total"],
                                                          "bytes", f"archive {size} bytes")
        figures[f"{name}: wire overhead"] = figure(case["overhead_pct"], "%",
                                                   f"bare TLS {bare['overhead_pct']} %")
    if "resume_cost" in details:
        cost, ref = details["resume_cost"], f"{DROP_CAP} kbps without a drop, same run"
        figures["resume: extra download time"] = figure(cost["extra_download_s"], "s", ref)
        figures["resume: extra wire bytes"] = figure(cost["extra_wire_bytes"], "bytes", ref)
    notes = (f"demo-derived package {size} bytes in {CHUNK_KIB} KiB chunks; Mosquitto TLS + "
             "ACL, `clinibox central serve` on SQLite, one fresh `clinibox serve` per case "
             "(defaults but [updates] max_kbps), its link through a byte-counting relay; "
             "[updates] retry_seconds at its default (30 s) in the drop case; "
             f"{details['machine']['cores']} cores shared by all")
    save("rollout_transfer", details, figures, notes=notes)


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run, record."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="only no cap and 4096 kbps, no drop (a minute or two)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="clinibox-bench-rollout-"))
    started = time.monotonic()
    try:
        details = run(root, QUICK_CAPS if args.quick else CAPS, with_drop=not args.quick)
    finally:
        if args.keep:
            print(f"scratch kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    details["run_s"] = round(time.monotonic() - started, 1)
    record(details)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
