"""The image tier's hospital on the host, reached by the booted box at QEMU's 10.0.2.2: a real
Mosquitto (TLS, client certificates, the ACL), `clinibox central serve`, its console
(`clinibox central web`, over HTTPS, with an admin account), the box's bundle."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import urllib3
from cryptography.hazmat.primitives import serialization

from central.bundle import make_bundle
from clinibox_common.contracts.enrolment import write_bundle
from clinibox_common.contracts.signing import generate_key_pair
from tests.box_harness import REPO, clinibox, stop, wait_for
from tests.image.qemu_box import HOST_FROM_BOX
from tests.integration.conftest import to_toml
from tests.mqtt_broker import Broker, make_mqtt_pki, receiver_settings
from tests.ports import free_port
from tests.provisioned_box import CLINIC, DEVICE
from tests.web_client import csrf_token

#: the console's admin, added with ``clinibox central user add``
ADMIN = ("it1", "Battery-Staple-72")


@dataclasses.dataclass
class Hospital:
    """The hospital on the host: its broker, its receiver's config, the box's bundle."""

    folder: Path
    broker: Broker
    central: Path
    bundle: Path
    ca_cert: Path
    console: str
    _session: requests.Session | None = dataclasses.field(default=None, repr=False)

    def console_page(self, path: str) -> str:
        """A page of the hospital's console as its admin reads it, in English (logged in
        through the form once)."""
        if self._session is None:
            session = requests.Session()
            session.trust_env = False
            session.verify = False
            session.headers["Accept-Language"] = "en"
            login = session.get(f"{self.console}/login", timeout=30)
            done = session.post(f"{self.console}/login", timeout=30, allow_redirects=False,
                                headers={"Referer": f"{self.console}/login"},
                                data={"csrf_token": csrf_token(login.text),
                                      "name": ADMIN[0], "password": ADMIN[1]})
            assert done.status_code == 302, done.text[:2000]
            self._session = session
        page = self._session.get(f"{self.console}{path}", timeout=30)
        assert page.status_code == 200, page.text[:2000]
        return page.text

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
        port = free_port()
        settings["web"] = {"host": "127.0.0.1", "port": port,
                           "state_dir": str(folder / "console")}
        central = folder / "central.toml"
        central.write_text(to_toml(settings), encoding="utf-8")
        clinibox("central", "user", "add", ADMIN[0], "--role", "admin", "--password-stdin",
                 "--config", str(central), stdin=ADMIN[1] + "\n")
        processes = [_hospital_process(folder, "serve", central),
                     _hospital_process(folder, "web", central)]
        hospital = Hospital(folder, broker, central, bundle, pki.ca_cert,
                            f"https://127.0.0.1:{port}")
        try:
            _wait_for_console(hospital, processes[1])
            yield hospital
        finally:
            for process in processes:
                stop(process)


def _hospital_process(folder: Path, command: str, central: Path) -> subprocess.Popen[bytes]:
    """``clinibox central <command>`` on the hospital's config, its output in a log."""
    with open(folder / f"{command}.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "clinibox", "central", command,
                                 "--config", str(central)], stdout=log,
                                stderr=subprocess.STDOUT, cwd=REPO)


def _wait_for_console(hospital: Hospital, process: subprocess.Popen[bytes]) -> None:
    # the console's certificate is its own, self-signed (state_dir)
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    def answers() -> bool:
        assert process.poll() is None, (hospital.folder / "web.log").read_text()
        try:
            requests.get(f"{hospital.console}/login", verify=False, timeout=5)
        except requests.RequestException:
            return False
        return True

    wait_for(answers, 120, "the hospital's console",
             lambda: (hospital.folder / "web.log").read_text())
