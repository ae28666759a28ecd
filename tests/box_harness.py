"""The one harness for a real box: a `clinibox serve` process, its config, dcmtk's clients.

Shared by the integration tests (``tests/integration/conftest.py`` keeps only the fixtures)
and the benchmarks (``bench/``), so that both start, feed, wait for and stop the box alike.

dcmtk's storescu/echoscu are called by absolute path (/usr/bin): the virtual
environment also has pynetdicom's own apps of the same names, which are not
the independent client these tests want.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil
import pytest

from tests.ports import free_ports

DCMTK_BIN = Path("/usr/bin")
REPO = Path(__file__).resolve().parents[1]


def dcmtk(tool: str) -> str:
    """Absolute path of a dcmtk tool; a clear failure when dcmtk is not installed."""
    path = DCMTK_BIN / tool
    if not path.exists():
        pytest.fail(f"{path} not found: install dcmtk (apt-get install dcmtk), as .ci/run does")
    return str(path)


def dcmtk_env() -> dict[str, str]:
    """Environment for dcmtk tools: TCP_NODELAY avoids Nagle's 40 ms per C-STORE."""
    return {**os.environ, "TCP_NODELAY": "1"}


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             why: Callable[[], str] | None = None) -> None:
    """Poll ``predicate`` until true or fail after ``timeout`` seconds; ``why`` adds what
    the parts said (their state, their logs) to the failure, for a run that cannot be
    repeated (CI under load)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    said = f"\n{why()}" if why else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{said}")


def clinibox(*args: str, check: bool = True, stdin: str | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the ``clinibox`` command line of this checkout (the hospital's, the model
    maker's or a box's side); with ``check``, RuntimeError naming its error output when it
    fails."""
    result = subprocess.run([sys.executable, "-m", "clinibox", *args], input=stdin,
                            capture_output=True, text=True, cwd=REPO, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"clinibox {' '.join(args)} failed ({result.returncode}):\n"
                           f"{result.stderr[-3000:]}")
    return result


def hospital_link(port: int, ca_cert: Path, cert: Path, key: Path, clinic: str, device: str,
                  keys: Path, **telemetry: object) -> dict[str, dict]:
    """A box's ``[mqtt]`` and ``[telemetry]`` sections for a hospital on 127.0.0.1:``port``
    whose keys (``hospital.pub``, ``hospital-signing.pub``) are in ``keys``; quick heartbeats
    and retries, as the tests want, unless ``telemetry`` says otherwise."""
    return {
        "mqtt": {"host": "127.0.0.1", "port": port, "ca_file": str(ca_cert),
                 "cert_file": str(cert), "key_file": str(key)},
        "telemetry": {"clinic": clinic, "device": device,
                      "hospital_key": str(keys / "hospital.pub"),
                      "hospital_signing_key": str(keys / "hospital-signing.pub"),
                      "heartbeat_seconds": 2.0, "retry_min_seconds": 0.2,
                      "retry_max_seconds": 1.0, **telemetry},
    }


# -- dcmtk's clients ---------------------------------------------------------------------------

def storescu(port: int, files: list[Path], *, ae_title: str = "CLINIBOX",
             calling: str = "MODALITY", extra: list[str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess:
    """Send files with dcmtk's storescu; verbose output lists each response."""
    args = [dcmtk("storescu"), "-v", "-aet", calling, "-aec", ae_title,
            "--no-halt", "--required", *(extra or []), "127.0.0.1", str(port),
            *[str(f) for f in files]]
    return subprocess.run(args, capture_output=True, text=True, env=dcmtk_env(),
                          timeout=timeout)


def send(port: int, files: list[Path], *, ae_title: str = "CLINIBOX",
         associations: int = 1) -> float:
    """Send files with storescu as a modality does (no options), over ``associations``
    parallel associations; the seconds taken. RuntimeError when storescu fails."""
    chunks = [files[i::associations] for i in range(associations)]
    started = time.perf_counter()
    procs = [subprocess.Popen([dcmtk("storescu"), "-aec", ae_title, "127.0.0.1", str(port),
                               *map(str, chunk)], env=dcmtk_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for chunk in chunks]
    for proc in procs:
        output = proc.communicate()[0].decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed: {output[-2000:]}")
    return time.perf_counter() - started


#: storescu's flag to propose a file's own compressed transfer syntax (it proposes
#: only uncompressed ones otherwise, and converts what it can, fails what it cannot)
PROPOSE_FLAG = {
    "1.2.840.10008.1.2.4.50": "-xy",   # JPEG baseline
    "1.2.840.10008.1.2.4.51": "-xx",   # JPEG extended 12-bit
    "1.2.840.10008.1.2.4.57": "-xs",   # JPEG lossless
    "1.2.840.10008.1.2.4.70": "-xs",   # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "-xt",   # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "-xu",   # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "-xv",   # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "-xw",   # JPEG 2000
    "1.2.840.10008.1.2.5": "-xr",      # RLE
    "1.2.840.10008.1.2.1.99": "-xd",   # deflated
}


def send_as_modality(port: int, files: list[Path], **kwargs) -> tuple[int, str]:
    """Send files in their own transfer syntax, one storescu run per syntax.

    Returns (number of Success responses, combined output).
    """
    from pydicom.filereader import read_file_meta_info

    groups: dict[str, list[Path]] = {}
    for path in files:
        syntax = str(read_file_meta_info(path).get("TransferSyntaxUID", ""))
        groups.setdefault(PROPOSE_FLAG.get(syntax, ""), []).append(path)
    output = ""
    for flag, group in groups.items():
        result = storescu(port, group, extra=[flag] if flag else None, **kwargs)
        output += result.stdout + result.stderr
    return output.count("Received Store Response (Success)"), output


def assert_rejected_as_busy(tool: subprocess.CompletedProcess) -> None:
    """A dcmtk tool's association was rejected as a full box rejects it: rejected transient,
    local limit exceeded (the modality retries later), not a dropped connection."""
    output = tool.stdout + tool.stderr
    assert tool.returncode != 0
    assert "Association Rejected" in output, output
    assert "Rejected Transient" in output and "Local Limit Exceeded" in output, output


def echoscu(port: int, *, ae_title: str = "CLINIBOX", calling: str = "MODALITY") -> bool:
    """C-ECHO with dcmtk's echoscu; True on success."""
    result = subprocess.run(
        [dcmtk("echoscu"), "-aet", calling, "-aec", ae_title, "127.0.0.1", str(port)],
        capture_output=True, text=True, env=dcmtk_env(), timeout=30,
    )
    return result.returncode == 0


# -- the box's config and process ------------------------------------------------------------

def to_toml(sections: Mapping[str, Mapping]) -> str:
    """Write a two-level config as TOML (strings, numbers, booleans, lists); a list of
    dicts becomes an array of tables (``[[pacs.destinations]]``)."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        tables = {k: v for k, v in values.items()
                  if isinstance(v, list) and v and all(isinstance(t, dict) for t in v)}
        for key, value in values.items():
            if key not in tables:
                lines.append(f"{key} = {json.dumps(value)}")
        for key, items in tables.items():
            for item in items:
                lines.append(f"[[{section}.{key}]]")
                lines.extend(f"{k} = {json.dumps(v)}" for k, v in item.items())
    return "\n".join(lines) + "\n"


def write_config(path: Path, state: Path, port: int, *layers: Mapping[str, Mapping],
                 **sections: Mapping) -> Path:
    """Write a clinibox config to ``path``: its state folder, DICOM on 127.0.0.1:``port``,
    then each layer's sections and ``sections`` merged in, key by key, in that order."""
    merged: dict[str, dict] = {"storage": {"state_dir": str(state)},
                               "dicom": {"port": port, "host": "127.0.0.1"}}
    for layer in (*layers, sections):
        for name, values in layer.items():
            merged.setdefault(name, {}).update(values)
    path.write_text(to_toml(merged))
    return path


class Notify:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        """Bind ``path`` (it must not exist)."""
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)

    def heard(self, text: str, timeout: float = 300) -> float:
        """``time.monotonic()`` when a datagram containing ``text`` arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if text in self.sock.recv(4096).decode():
                    return time.monotonic()
            except TimeoutError:
                continue
        raise TimeoutError(f"no {text!r} on the notify socket")

    def wait_for(self, text: str, started: float, timeout: float = 300) -> float:
        """Seconds from ``started`` (time.monotonic) until a datagram containing ``text``."""
        return round(self.heard(text, timeout) - started, 2)

    def close(self) -> None:
        """Close and remove the socket."""
        self.sock.close()
        self.path.unlink(missing_ok=True)


def serve(config: Path, log: Path, *, notify: Notify | None = None,
          wait_for_model: bool = False, env: Mapping[str, str] | None = None,
          output: int | None = None) -> subprocess.Popen:
    """Start `clinibox serve` with a config, its output appended to ``log`` (or sent to
    ``output``, e.g. subprocess.DEVNULL), telling ``notify``, when given, what systemd would
    hear, with ``env`` added to the environment. The box receives before its model runs;
    ``wait_for_model`` returns only once the model runs (its STATUS), so that a measurement
    does not count the model's first-start timing; otherwise the caller waits for readiness."""
    own = notify is None and wait_for_model
    if own:
        notify = Notify(log.with_suffix(".notify"))
    environment = {**os.environ, **(env or {})}
    if notify is not None:
        environment["NOTIFY_SOCKET"] = str(notify.path)
    started = time.monotonic()
    command = [sys.executable, "-m", "clinibox", "serve", "--config", str(config)]
    if output is not None:
        proc = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=output,
                                env=environment)
    else:
        with open(log, "a") as handle:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(command, cwd=REPO, stdout=handle,
                                    stderr=subprocess.STDOUT, env=environment)
    if wait_for_model:
        assert notify is not None
        try:
            notify.wait_for("STATUS=model ", started)
        finally:
            if own:
                notify.close()
    return proc


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Clean stop with SIGTERM; SIGKILL after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def receiver_processes(service_pid: int) -> list[psutil.Process]:
    """The native receiver's listening processes that the service started (its association
    processes are their children); none where pynetdicom has the port."""
    found = []
    for child in psutil.Process(service_pid).children():
        try:
            if child.name().startswith("clinibox-receiver"[:15]):  # the kernel keeps 15 chars
                found.append(child)
        except psutil.NoSuchProcess:
            continue  # it ended between the listing and the look (a decoder, a killed one)
    return found


class Box:
    """A `clinibox serve` process with its own state folder and ports, as the tests run it."""

    def __init__(self, root: Path, overrides: dict[str, dict] | None = None) -> None:
        self.root = root
        self.state = root / "state"
        self.import_dir = root / "import"
        self.port, web_port = free_ports(2)
        self.web_port = web_port
        self.config = root / "box.toml"
        defaults: dict[str, dict] = {
            "usb": {"watch_dir": str(self.import_dir), "poll_seconds": 0.2,
                    "settle_seconds": 0.3},
            # the viewer runs only where a test asks for it (test_viewer_browser)
            "web": {"enabled": False, "host": "127.0.0.1", "port": web_port},
            # a study is complete (its alert and DICOM results go) a second after its last
            # instance, not the minute a clinic waits
            "studies": {"stable_seconds": 1.0},
        }
        write_config(self.config, self.state, self.port, defaults, overrides or {})
        self.log = root / "serve.log"
        self.process: subprocess.Popen | None = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a `clinibox` subcommand against this box's config."""
        result = subprocess.run(
            [sys.executable, "-m", "clinibox", args[0], "--config", str(self.config),
             *args[1:]],
            capture_output=True, text=True, cwd=REPO, timeout=300,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"clinibox {' '.join(args)} failed:\n{result.stderr}")
        return result

    def cli_json(self, *args: str):
        """Run a subcommand with --json and parse its output."""
        return json.loads(self.cli(*args, "--json").stdout)

    def start(self, wait: bool = True, env: dict[str, str] | None = None) -> None:
        """Start the service (with extra environment) and wait until it answers C-ECHO."""
        self.process = serve(self.config, self.log, env=env)
        if wait:
            wait_for(lambda: self._alive() and echoscu(self.port), 120, "clinibox to answer C-ECHO")

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"clinibox serve exited ({self.process.returncode}):\n"
                        f"{self.log.read_text()[-4000:]}")
        return True

    def kill9(self) -> None:
        """Power-cut stand-in: SIGKILL, no clean-up."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        """Clean stop with SIGTERM."""
        if self.process is not None:
            stop(self.process)
        self.process = None

    def db_rows(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        """Read the box's database (read-only, as the viewer would)."""
        conn = sqlite3.connect(f"file:{self.state / 'clinibox.db'}?mode=ro", uri=True, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def wait_idle(self, expected: int, timeout: float = 240) -> None:
        """Wait until ``expected`` instances are received and none is waiting."""

        def idle() -> bool:
            self._alive()
            if not (self.state / "clinibox.db").exists():
                return False
            rows = self.db_rows("SELECT status, COUNT(*) FROM instances GROUP BY status")
            counts = {r[0]: r[1] for r in rows}
            total = sum(counts.values())
            waiting = counts.get("queued", 0) + counts.get("processing", 0)
            return total >= expected and waiting == 0

        wait_for(idle, timeout, f"{expected} instances to be processed")


def add_viewer_account(box: Box, name: str, password: str, role: str) -> None:
    """``clinibox user add`` on a running box, as a technician would."""
    result = subprocess.run(
        [sys.executable, "-m", "clinibox", "user", "add", name, "--role", role,
         "--password-stdin", "--config", str(box.config)],
        input=password + "\n", capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
