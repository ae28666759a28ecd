"""The image tier's hospital on the host, reached by the booted box at QEMU's 10.0.2.2: a real
Mosquitto (TLS, client certificates, the ACL), `clinibox central serve`, the box's bundle."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from central.bundle import make_bundle
from clinibox_common.contracts.enrolment import write_bundle
from clinibox_common.contracts.signing import generate_key_pair
from tests.box_harness import REPO, clinibox
from tests.image.qemu_box import HOST_FROM_BOX
from tests.integration.conftest import to_toml
from tests.mqtt_broker import Broker, make_mqtt_pki, receiver_settings
from tests.provisioned_box import CLINIC, DEVICE


@dataclasses.dataclass
class Hospital:
    """The hospital on the host: its broker, its receiver's config, the box's bundle."""

    folder: Path
    broker: Broker
    central: Path
    bundle: Path
    ca_cert: Path

    def bundle_issued(self, now: dt.datetime, out: Path) -> Path:
        """Another bundle for the box, issued (its certificate and ``issued_at``) at ``now``:
        one the hospital made hours before the technician plugged it in."""
        write_bundle(make_bundle(
            ca_cert_path=self.ca_cert, ca_key_path=self.folder / "ca.key", clinic=CLINIC,
            device=DEVICE, broker_host=HOST_FROM_BOX, broker_port=self.broker.port,
            hospital_key_path=self.folder / "hospital.pub",
            signing_key_paths=[self.folder / "model-signing.pub"],
            hospital_signing_key_path=self.folder / "hospital-signing.pub", now=now), out)
        return out


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hospital]:
    folder = tmp_path_factory.mktemp("hospital")
    pki = make_mqtt_pki(folder / "pki", [])
    # the broker's certificate names the address the box dials (the host, as QEMU shows it)
    # and the receiver's (loopback)
    cert, key = pki.authority.issue_server("localhost", folder / "pki", stem="broker",
                                           more_ips=(HOST_FROM_BOX,))
    pki = dataclasses.replace(pki, server_cert=cert, server_key=key)
    (folder / "ca.key").write_bytes(pki.authority.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    for kind in ("hospital", "hospital-signing"):
        made = clinibox("keys", "generate", "--kind", kind, "--out", str(folder / kind),
                        check=False)
        assert made.returncode == 0, made.stderr
    generate_key_pair(folder / "model-signing.pem", folder / "model-signing.pub")
    with Broker(folder / "broker", pki) as broker:
        bundle = folder / f"{DEVICE}.bundle"
        write_bundle(make_bundle(
            ca_cert_path=pki.ca_cert, ca_key_path=folder / "ca.key", clinic=CLINIC,
            device=DEVICE, broker_host=HOST_FROM_BOX, broker_port=broker.port,
            hospital_key_path=folder / "hospital.pub",
            signing_key_paths=[folder / "model-signing.pub"],
            hospital_signing_key_path=folder / "hospital-signing.pub"), bundle)
        settings = receiver_settings(broker, pki, folder / "central.db",
                                     folder / "hospital.pem", "central-image")
        settings["keys"]["hospital_signing_key"] = str(folder / "hospital-signing.pem")
        settings["rollouts"] = {"trusted_keys": [str(folder / "model-signing.pub")]}
        central = folder / "central.toml"
        central.write_text(to_toml(settings), encoding="utf-8")
        with open(folder / "serve.log", "wb") as log:
            receiver = subprocess.Popen(
                [sys.executable, "-m", "clinibox", "central", "serve", "--config",
                 str(central)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            yield Hospital(folder, broker, central, bundle, pki.ca_cert)
        finally:
            receiver.terminate()
            receiver.wait(timeout=30)
