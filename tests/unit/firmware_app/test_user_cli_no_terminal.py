"""``clinibox user add|passwd`` run as a script would (no terminal) and on a real terminal (a pty).

Without a terminal and without ``--password-stdin`` the command refuses at once, with exit
status 2 and how to give the password, and never lets ``getpass`` warn and read the
password visibly. On a terminal the password rules are shown before the first prompt.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from clinibox_common.errors import EXIT_USAGE
from firmware_app.settings import box as config_module
from firmware_app.storage import db
from firmware_app.storage.accounts import Accounts
from webcore.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

REPO = Path(__file__).resolve().parents[3]
GOOD = "correct horse battery"
RULES = (f"password rules: {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters; "
         "not one character repeated; not containing the account name; "
         "not one of the most common passwords")
#: a guard against a hung child only; nothing is measured
READ_GUARD_SECONDS = 120


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "clinibox.toml"
    path.write_text(f'[storage]\nstate_dir = "{(tmp_path / "state").as_posix()}"\n')
    return path


def english_env() -> dict[str, str]:
    """The environment without language settings: the commands speak English."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LC_", "LANG", "CLINIBOX_"))}
    return {**env, "LANG": "C.UTF-8"}


def user(config_path: Path, *argv: str, stdin: int | None = None,
         text: str | None = None) -> subprocess.CompletedProcess:
    """``clinibox user ARGV`` in a child process, standard input from ``stdin`` or ``text``."""
    return subprocess.run(
        [sys.executable, "-m", "clinibox", "user", *argv, "--config", str(config_path)],
        stdin=stdin, input=text, capture_output=True, text=True, cwd=REPO, env=english_env(),
        timeout=120)


def account_count(config_path: Path) -> int:
    conn = db.open_database(config_module.load(config_path).database_path)
    try:
        return Accounts(conn).count()
    finally:
        conn.close()


@pytest.mark.slow
def test_add_without_a_terminal_refuses_at_once_and_says_how(config_path):
    for stdin, text in ((subprocess.DEVNULL, None), (None, GOOD + "\n")):  # /dev/null, a pipe
        result = user(config_path, "add", "tina", "--role", "technician", stdin=stdin, text=text)
        assert result.returncode == EXIT_USAGE, result.stderr
        assert "GetPassWarning" not in result.stderr
        assert "Password for" not in result.stderr + result.stdout  # nothing was asked
        assert result.stderr.strip() == (
            "clinibox user: error: standard input is not a terminal, so the password cannot be "
            "asked for: give it as one line on standard input with --password-stdin (e.g. "
            "printf '%s\\n' \"$PASSWORD\" | clinibox user add tina --role technician "
            "--password-stdin), or run the command on a terminal")
    assert account_count(config_path) == 0


@pytest.mark.slow
def test_passwd_without_a_terminal_refuses_too(config_path):
    assert user(config_path, "add", "tina", "--role", "technician", "--password-stdin",
                text=GOOD + "\n").returncode == 0
    result = user(config_path, "passwd", "tina", stdin=subprocess.DEVNULL)
    assert result.returncode == EXIT_USAGE
    assert "GetPassWarning" not in result.stderr
    assert ("printf '%s\\n' \"$PASSWORD\" | clinibox user passwd tina --password-stdin"
            in result.stderr)
    changed = user(config_path, "passwd", "tina", "--password-stdin",
                   text="a brand new secret\n")
    assert changed.returncode == 0, changed.stderr
    assert "password of tina changed" in changed.stdout


def test_a_refused_password_on_stdin_names_the_rule(config_path):
    result = user(config_path, "add", "tina", "--role", "technician", "--password-stdin",
                  text="short\n")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"clinibox user add: the password is shorter than {MIN_PASSWORD_LENGTH} characters "
        f"({RULES})")
    assert "GetPassWarning" not in result.stderr
    assert account_count(config_path) == 0


def _read_until(fd: int, seen: bytearray, wanted: bytes) -> None:
    """Read the terminal into ``seen`` until ``wanted`` shows (or the child ends)."""
    while wanted not in seen:
        ready, _, _ = select.select([fd], [], [], READ_GUARD_SECONDS)
        assert ready, f"nothing more on the terminal; got {bytes(seen)!r}"
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            return
        seen += chunk


def test_on_a_terminal_the_rules_come_before_the_prompt(config_path):
    argv = [sys.executable, "-m", "clinibox", "user", "add", "tina", "--role",
            "technician", "--config", str(config_path)]
    env = english_env()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal and standard input
        try:
            os.chdir(REPO)
            os.execve(sys.executable, argv, env)
        finally:
            os._exit(127)
    seen = bytearray()
    try:
        _read_until(fd, seen, b"Password for tina: ")
        os.write(fd, (GOOD + "\n").encode())
        _read_until(fd, seen, b"Again: ")
        os.write(fd, (GOOD + "\n").encode())
        _read_until(fd, seen, b"added")
        _read_until(fd, seen, b"\0")  # to the end
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    screen = seen.decode()
    assert os.waitstatus_to_exitcode(status) == 0, screen
    assert "GetPassWarning" not in screen
    assert RULES in screen
    assert screen.index(RULES) < screen.index("Password for tina: ") < screen.index("Again: ")
    assert GOOD not in screen  # not echoed
    assert "account tina (technician) added" in screen
    assert account_count(config_path) == 1
