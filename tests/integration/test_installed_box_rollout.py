"""A box installed and provisioned as the technician's pages say comes up without a model it
may run, holds what it receives, and analyses it once the hospital's rollout brings one.

The offline bundle is installed with scripts/install.sh into a staging root (shared with
``test_install_system.py``); root provisions it (``clinibox provision BUNDLE``) with a
hospital's enrolment bundle whose broker is a real Mosquitto (TLS, the ACL) and whose
model-signing key is the hospital's; the installed ``clinibox serve`` then runs as its unit
starts it. It trusts only the hospital's key, so the bundled demo package is refused: it
waits. The hospital (``clinibox central serve`` from this checkout) enrols it from the code
provisioning printed and rolls out a maker's package that the hospital signed again
(``clinibox model sign``).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys

import pytest
import tomllib
from cryptography.hazmat.primitives import serialization

from central.bundle import make_bundle
from clinibox_common.contracts.enrolment import write_bundle
from clinibox_common.contracts.signing import generate_key_pair
from tests.box_harness import clinibox, stop
from tests.canary import write_canary_studies
from tests.integration.conftest import REPO, echoscu, send_as_modality, to_toml, wait_for
from tests.integration.test_install_system import installed_root, read_unit, unit_values
from tests.model_packages import make_package
from tests.mqtt_broker import Broker, make_mqtt_pki, receiver_settings
from tests.ports import free_ports
from tests.provisioned_box import CLINIC, DEVICE, box_root

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def checkout(*args: str) -> str:
    """``clinibox …`` from this checkout (the hospital's and the model maker's side)."""
    return clinibox(*args).stdout


def box_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CLINIBOX_", "PIP_"))}


def test_a_provisioned_box_waits_for_its_model_and_the_rollout_brings_it(tmp_path_factory,
                                                                         tmp_path):
    root = installed_root(tmp_path_factory)
    hospital = tmp_path / "hospital"
    hospital.mkdir()
    pki = make_mqtt_pki(hospital / "pki", [])
    (hospital / "ca.key").write_bytes(pki.authority.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    checkout("keys", "generate", "--kind", "hospital", "--out", str(hospital / "hospital"))
    checkout("keys", "generate", "--kind", "hospital-signing", "--out",
             str(hospital / "hospital-signing"))
    generate_key_pair(hospital / "model-signing.pem", hospital / "model-signing.pub")
    generate_key_pair(hospital / "maker.pem", hospital / "maker.pub")
    with Broker(hospital / "broker", pki) as broker, box_root() as box:
        bundle = hospital / "box-1.bundle"
        write_bundle(make_bundle(
            ca_cert_path=pki.ca_cert, ca_key_path=hospital / "ca.key", clinic=CLINIC,
            device=DEVICE, broker_host="127.0.0.1", broker_port=broker.port,
            hospital_key_path=hospital / "hospital.pub",
            signing_key_paths=[hospital / "model-signing.pub"],
            hospital_signing_key_path=hospital / "hospital-signing.pub"), bundle)
        # the box as install.sh laid it out, provisioned by root
        for part in ("etc", "var/lib"):
            (box / part).mkdir(parents=True)
            subprocess.run(["cp", "-a", str(root / part / "clinibox"), str(box / part)],
                           check=True)
        config = box / "etc" / "clinibox" / "clinibox.toml"
        text = config.read_text().replace('state_dir = "/var/lib/clinibox"',
                                          f'state_dir = "{box}/var/lib/clinibox"')
        config.write_text(text)
        clinibox = str(root / "usr" / "local" / "bin" / "clinibox")
        done = subprocess.run([clinibox, "provision", str(bundle), "--config", str(config)],
                              env=box_env(), cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        code = re.search(r"CBX1:\S+", done.stdout)
        assert code, done.stdout
        # the installed unit's command, on this test's ports (no viewer)
        port, web_port = free_ports(2)
        values = tomllib.loads(config.read_text())
        values["dicom"] = {**values.get("dicom", {}), "port": port, "host": "127.0.0.1"}
        values["web"] = {**values.get("web", {}), "enabled": False, "port": web_port}
        values["usb"] = {**values.get("usb", {}), "watch_dir": str(tmp_path / "import")}
        values["telemetry"] = {**values["telemetry"], "heartbeat_seconds": 2.0,
                               "retry_min_seconds": 0.2, "retry_max_seconds": 1.0}
        # the clinic's link is the loopback here: no cap on the download's pace (at the
        # default 256 kbit/s the package took two minutes; the paced download runs in
        # test_rollouts_e2e.py and test_docs_run.py)
        values["updates"] = {"min_free_mb": 0, "retry_seconds": 0.5, "max_kbps": 0}
        # the bundled packages as installed (the staging root stands for /)
        values["models"]["dir"] = f"{root}{values['models']['dir']}"
        config.write_text(to_toml(values))
        assert values["models"]["trust_demo_key"] is False

        # the hospital: its receiver, the box enrolled from the printed code
        settings = receiver_settings(broker, pki, hospital / "central.db",
                                     hospital / "hospital.pem", "central-installed")
        settings["keys"]["hospital_signing_key"] = str(hospital / "hospital-signing.pem")
        settings["rollouts"] = {"trusted_keys": [str(hospital / "model-signing.pub")]}
        central = hospital / "central.toml"
        central.write_text(to_toml(settings))
        checkout("central", "enrol-code", code.group(0), "--config", str(central))
        receiver = subprocess.Popen(
            [sys.executable, "-m", "clinibox", "central", "serve", "--config",
             str(central)], stdout=open(hospital / "serve.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT, cwd=REPO)
        unit = read_unit(root / "usr/local/lib/systemd/system/clinibox.service")
        exec_start = unit_values(unit, "Service", "ExecStart")[0].split()
        log = tmp_path / "serve.log"
        with open(log, "wb") as output:
            service = subprocess.Popen(
                [str(root / exec_start[0].lstrip("/")), *exec_start[1:]],
                env={**box_env(), "CLINIBOX_CONFIG": str(config),
                     "CLINIBOX_RUNTIME_DIR": str(tmp_path)},
                stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path)
        state = box / "var" / "lib" / "clinibox" / "clinibox.db"

        def instances() -> list[str] | None:
            """The held instances' statuses; None until the box has made its database."""
            if service.poll() is not None:
                pytest.fail(f"clinibox serve exited {service.returncode}:\n"
                            f"{log.read_text()[-4000:]}")
            if not state.exists():
                return None
            conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=30)
            try:
                return [r[0] for r in conn.execute("SELECT status FROM instances")]
            except sqlite3.OperationalError:  # the file exists, its migrations still run
                return None
            finally:
                conn.close()

        try:
            wait_for(lambda: instances() == [] and echoscu(port), 120, "the box to answer")
            status = json.loads(subprocess.run(
                [clinibox, "status", "--json", "--config", str(config)], env=box_env(),
                capture_output=True, text=True, timeout=120).stdout)
            assert status["model_waiting"]["reason"] == "signature"
            studies = write_canary_studies(tmp_path / "studies", 1, lesion=True)
            assert send_as_modality(port, studies.files)[0] == 1
            wait_for(lambda: instances() == ["queued"], 30, "the image to be held")

            # the hospital signs a maker's package and rolls it out
            package = make_package(tmp_path / "maker", "1.1.0", key=hospital / "maker.pem")
            archive = tmp_path / "clinibox-demo-lesion-1.1.0.tar.gz"
            checkout("model", "sign", str(package), "--key",
                     str(hospital / "model-signing.pem"), "--trust",
                     str(hospital / "maker.pub"), "--out", str(tmp_path / "signed"),
                     "--archive", str(archive))
            started = checkout("central", "rollout", str(archive), "--to",
                               f"{CLINIC}/{DEVICE}", "--config", str(central))
            assert "offered now to 1" in started
            wait_for(lambda: instances() == ["processed"], 300,
                     "the held image to be analysed with the rolled-out model")
            status = json.loads(subprocess.run(
                [clinibox, "status", "--json", "--config", str(config)], env=box_env(),
                capture_output=True, text=True, timeout=120).stdout)
            assert status["model_waiting"] is None
            rollouts = json.loads(checkout("central", "rollouts", "1", "--json", "--config",
                                           str(central)))
            assert [b["step"] for b in rollouts[0]["boxes"]] == ["on_trial"]
        finally:
            stop(service)
            stop(receiver)
    assert "Traceback" not in log.read_text()
