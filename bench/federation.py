"""A Flower federation on loopback, over TLS: the hospital's SuperLink and one SuperNode per
simulated box, each through a relay that counts its bytes (decision 0056).

Shared by ``bench/federated_clinics.py`` and ``tests/integration/test_federated_rounds.py``.
The processes are Flower's own commands (``flower-superlink``, ``flower-supernode``,
``flwr run``, ``flwr log``) with the Flower App of ``central/federated/flower_app``: the
ServerApp is ``central/federated/server_app.py``, the ClientApp
``firmware_app/learning/client_app.py``.
Each SuperNode is started with the box's own command and environment
(``firmware_app/learning/node.py``: ``supernode_command``; ``bundle_check.py``: its ClientApps
check the bundle) and reaches the SuperLink through a relay (``bench/relay.py``), so
the bytes a box sends and receives in a run are measured on the wire (TLS records included).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.relay import Relay
from central.federated.superlink import (
    FLOWER_APP,
    flower_environment,
    log_command,
    run_command,
    started_run,
    superlink_command,
    superlink_environment,
    write_flower_home,
)
from clinibox_common.contracts.federated import RUNS_ENV
from clinibox_common.contracts.run_claim import write_claim
from firmware_app.learning.bundle_check import supernode_environment
from firmware_app.learning.node import supernode_command
from tests.ports import free_port
from tests.tls_certs import CertificateAuthority

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Federation:
    """A running SuperLink, its SuperNodes and their relays."""

    folder: Path
    port: int
    ca_cert: Path
    relays: list[Relay] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)

    def traffic(self) -> list[dict[str, int]]:
        """Bytes each box sent (``up``) and received (``down``) so far, box by box."""
        return [relay.between(0.0, float("inf")) for relay in self.relays]

    @property
    def link_log(self) -> Path:
        """The SuperLink's log file."""
        return self.folder / "superlink.log"

    @property
    def link_database(self) -> Path:
        """The SuperLink's state database (where the messages it relays are kept)."""
        return self.folder / "superlink.db"

    def run(self, config: dict[str, object], timeout: float = 900,
            app: Path = FLOWER_APP, claim: bool = True) -> subprocess.CompletedProcess:
        """A run of the Flower App ``app`` (clinibox's own by default) with ``config`` (the
        run configuration), as ``clinibox central federated-run`` starts one: ``flwr run``,
        then its ``out`` folder made and claimed for the run's number (unless ``claim`` is
        False: a stranger at the SuperLink's port, who cannot write the hospital's files),
        then ``flwr log`` until the run ends. The log's process, its output the start's and
        the ServerApp's log."""
        env = self.environment()
        started = subprocess.run(run_command(app, config), env=env, capture_output=True,
                                 text=True, timeout=120)
        run_id = started_run(started.stdout)
        if run_id is None:
            return started
        if claim and "out" in config:
            out = Path(str(config["out"]))
            out.mkdir(mode=0o750, exist_ok=True)
            write_claim(out, run_id)
        followed = subprocess.run(log_command(run_id), env=env, capture_output=True,
                                  text=True, timeout=timeout)
        return subprocess.CompletedProcess(
            followed.args, followed.returncode, started.stdout + followed.stdout,
            started.stderr + followed.stderr)

    def environment(self) -> dict[str, str]:
        """The environment of Flower's commands: their own home under the folder."""
        return {**flower_environment(self.folder / "flwr-home"), "PYTHONPATH": str(REPO)}


def _wait_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not listen on port {port} within {timeout:.0f} s")


@contextlib.contextmanager
def federation(folder: Path, cases: list[Path], *,
               hospital_checks: bool = True) -> Iterator[Federation]:
    """A SuperLink over TLS and a SuperNode per case file (its box), each through a relay;
    everything stopped on leaving. The SuperLink runs as ``clinibox central superlink``
    starts it, checking each run's bundle (``hospital_checks``); without the check it stands
    for a hospital gone bad, which runs a ServerApp of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.create(folder / "pki", name="hospital federation CA")
    cert, key = ca.issue_server("localhost", folder / "pki", stem="superlink")
    port = free_port()
    write_flower_home(folder / "flwr-home", f"127.0.0.1:{port}", ca.cert_path)
    fed = Federation(folder, port, ca.cert_path)
    env = fed.environment()
    # the runs' files lie beside the federation's folder (the tests' and the bench's layout)
    link_env = superlink_environment(folder, folder.parent, env) if hospital_checks else \
        {**env, RUNS_ENV: str(folder.parent.resolve())}
    with contextlib.ExitStack() as logs:
        logs.callback(_stop, fed)
        link_log = logs.enter_context(open(fed.link_log, "w"))
        fed.processes.append(subprocess.Popen(
            superlink_command(cert, key, ca.cert_path, "127.0.0.1", port, fed.link_database),
            env=link_env, stdout=link_log, stderr=subprocess.STDOUT, cwd=folder))
        _wait_port(port, 60, "the SuperLink")
        for i, case_file in enumerate(cases):
            relay = Relay(port)
            fed.relays.append(relay)
            log = logs.enter_context(open(folder / f"supernode-{i}.log", "w"))
            fed.processes.append(subprocess.Popen(
                supernode_command(f"127.0.0.1:{relay.port}", ca.cert_path, case_file,
                                  free_port()),
                env=supernode_environment(folder / "box-bin", env), stdout=log,
                stderr=subprocess.STDOUT, cwd=folder))
        yield fed


def _stop(fed: Federation) -> None:
    """Stop the SuperNodes and the SuperLink (killed after 20 s), then the relays."""
    for process in reversed(fed.processes):
        with contextlib.suppress(OSError):
            process.terminate()
    for process in fed.processes:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
    for relay in fed.relays:
        relay.close()
