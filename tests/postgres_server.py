"""A real, throw-away PostgreSQL server for tests (initdb + pg_ctl, no Docker).

The server listens on 127.0.0.1 on a free port and on a private Unix socket
folder, trusts local connections (``-A trust``) and runs with fsync off: it
is for tests only. PostgreSQL refuses to run as root, so as root the data
folder is made in a private temporary folder owned by the ``postgres`` user
and every server command runs as that user (``runuser``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.ports import free_port

PG_GLOB = "/usr/lib/postgresql/*/bin"
SERVER_USER = "postgres"


def find_bin_dir() -> Path:
    """The newest PostgreSQL server bin folder; a clear test failure when none is installed."""
    candidates = [Path(p) for p in glob.glob(PG_GLOB) if (Path(p) / "initdb").exists()]
    if not candidates:
        pytest.fail(f"PostgreSQL server binaries not found ({PG_GLOB}/initdb): "
                    "apt-get install postgresql, as .ci/run does")

    def version(path: Path) -> tuple[int, ...]:
        digits = path.parent.name.split(".")
        return tuple(int(d) for d in digits if d.isdigit())

    return max(candidates, key=version)


class PostgresServer:
    """One PostgreSQL cluster under ``folder`` (or a private temporary folder when root)."""

    def __init__(self, folder: Path, *, durable: bool = False) -> None:
        """Plan a cluster; nothing runs until :meth:`start`.

        Tests run it with fsync off (fast); ``durable`` keeps PostgreSQL's
        deployed settings, for benchmarks.
        """
        self.durable = durable
        self.bin_dir = find_bin_dir()
        self.as_root = os.geteuid() == 0
        self._own_root: Path | None = None
        if self.as_root:
            # pytest's tmp folders are private to root; the postgres user could not enter them
            self._own_root = Path(tempfile.mkdtemp(prefix="clinibox-pg-"))
            folder = self._own_root
            user = pwd.getpwnam(SERVER_USER)
            os.chown(folder, user.pw_uid, user.pw_gid)
        self.folder = Path(folder)
        self.data_dir = self.folder / "data"
        self.socket_dir = self.folder / "sock"
        self.log_file = self.folder / "server.log"
        self.port = 0
        self.running = False

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            pytest.fail(f"{tool} failed ({result.returncode}): {result.stderr.strip()}\n{log}")
        return result

    def start(self) -> None:
        """initdb (trust, superuser ``postgres``), then start and wait until it accepts."""
        self._run("initdb", "-D", str(self.data_dir), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--no-locale", "--no-sync")
        self.socket_dir.mkdir(mode=0o700)
        if self.as_root:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.socket_dir, user.pw_uid, user.pw_gid)
        for attempt in range(3):
            self.port = free_port()
            options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
                       "-c max_connections=50")
            if not self.durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            result = self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data_dir),
                               "-l", str(self.log_file), "-o", options, check=attempt == 2)
            if result.returncode == 0:
                self.running = True
                return

    def url(self, db: str = "postgres") -> str:
        """A libpq URL for database ``db`` as the superuser."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove a private temporary folder."""
        if self.running:
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data_dir),
                      check=False)
            self.running = False
        if self._own_root is not None:
            shutil.rmtree(self._own_root, ignore_errors=True)
