"""Real parts for integration tests: a `clinibox serve` process and dcmtk's clients.

dcmtk's storescu/echoscu are called by absolute path (/usr/bin): the virtual
environment also has pynetdicom's own apps of the same names, which are not
the independent client these tests want.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.ports import free_ports

DCMTK_BIN = Path("/usr/bin")
REPO = Path(__file__).resolve().parents[2]


def dcmtk(tool: str) -> str:
    """Absolute path of a dcmtk tool; a clear failure when dcmtk is not installed."""
    path = DCMTK_BIN / tool
    if not path.exists():
        pytest.fail(f"{path} not found: install dcmtk (apt-get install dcmtk), as .ci/run does")
    return str(path)


def dcmtk_env() -> dict[str, str]:
    """Environment for dcmtk tools: TCP_NODELAY avoids Nagle's 40 ms per C-STORE."""
    return {**os.environ, "TCP_NODELAY": "1"}


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def storescu(port: int, files: list[Path], *, ae_title: str = "CLINIBOX",
             calling: str = "MODALITY", extra: list[str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess:
    """Send files with dcmtk's storescu; verbose output lists each response."""
    args = [dcmtk("storescu"), "-v", "-aet", calling, "-aec", ae_title,
            "--no-halt", "--required", *(extra or []), "127.0.0.1", str(port),
            *[str(f) for f in files]]
    return subprocess.run(args, capture_output=True, text=True, env=dcmtk_env(),
                          timeout=timeout)


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


def add_viewer_account(box: Box, name: str, password: str, role: str) -> None:
    """``clinibox user add`` on a running box, as a technician would."""
    result = subprocess.run(
        [sys.executable, "-m", "firmware_app.cli", "user", "add", name, "--role", role,
         "--password-stdin", "--config", str(box.config)],
        input=password + "\n", capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr


def to_toml(sections: dict[str, dict]) -> str:
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


class Box:
    """A `clinibox serve` process with its own state folder and ports."""

    def __init__(self, root: Path, overrides: dict[str, dict] | None = None) -> None:
        self.root = root
        self.state = root / "state"
        self.import_dir = root / "import"
        self.port, web_port = free_ports(2)
        self.config = root / "box.toml"
        sections: dict[str, dict] = {
            "storage": {"state_dir": str(self.state)},
            "dicom": {"port": self.port, "host": "127.0.0.1"},
            "usb": {"watch_dir": str(self.import_dir), "poll_seconds": 0.2,
                    "settle_seconds": 0.3},
            # the viewer runs only where a test asks for it (test_viewer_browser)
            "web": {"enabled": False, "host": "127.0.0.1", "port": web_port},
            # a study is complete (its alert and DICOM results go) a second after its last
            # instance, not the minute a clinic waits
            "studies": {"stable_seconds": 1.0},
        }
        for section, values in (overrides or {}).items():
            sections.setdefault(section, {}).update(values)
        self.config.write_text(to_toml(sections))
        self.log = root / "serve.log"
        self.process: subprocess.Popen | None = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a `clinibox` subcommand against this box's config."""
        result = subprocess.run(
            [sys.executable, "-m", "firmware_app.cli", args[0], "--config", str(self.config),
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
        handle = open(self.log, "a")  # noqa: SIM115 - owned by the child process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "firmware_app.cli", "serve", "--config", str(self.config)],
            stdout=handle, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **(env or {})},
        )
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
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
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


@pytest.fixture
def box(tmp_path) -> Iterator[Box]:
    """A running clinibox with default settings and its own state folder."""
    instance = Box(tmp_path)
    instance.start()
    yield instance
    instance.stop()


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


@pytest.fixture(params=["native", "pynetdicom"])
def receiver(request) -> str:
    """Each of the box's DICOM receivers (``[dicom] receiver``), for the tests that
    face the network: the native front (clinibox-receiver) and pynetdicom."""
    return request.param


@pytest.fixture
def box_factory(tmp_path) -> Iterator[Callable[..., Box]]:
    """Make boxes with extra config; all are stopped at the end."""
    made: list[Box] = []

    def make(name: str = "box", start: bool = True, **overrides: dict) -> Box:
        root = tmp_path / name
        root.mkdir()
        instance = Box(root, overrides)
        if start:
            instance.start()
        made.append(instance)
        return instance

    yield make
    for instance in made:
        instance.stop()
