"""``clinibox user add|list|passwd|remove`` against a box database in a temporary state dir."""

from __future__ import annotations

import argparse
import getpass
import io
import sys

import pytest

from firmware_app.cli.users import add_parsers
from firmware_app.settings import box as config_module
from firmware_app.storage import db
from firmware_app.storage.accounts import Accounts, Sessions

GOOD = "correct horse battery"


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "clinibox.toml"
    path.write_text(f'[storage]\nstate_dir = "{(tmp_path / "state").as_posix()}"\n')
    return path


def run(config_path, *argv: str, stdin: str | None = None, monkeypatch=None) -> int:
    parser = argparse.ArgumentParser(prog="clinibox")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p):
        p.add_argument("--config")
        return p

    add_parsers(sub, with_config)
    args = parser.parse_args(["user", *argv, "--config", str(config_path)])
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return args.func(args)


def open_accounts(config_path):
    conn = db.open_database(config_module.load(config_path).database_path)
    return conn, Accounts(conn)


def test_add_with_password_stdin_then_list(config_path, capsys, monkeypatch):
    assert run(config_path, "list") == 0
    assert capsys.readouterr().out.strip() == (
        "no accounts yet: clinibox user add NAME --role technician")
    rc = run(config_path, "add", "Tech", "--role", "technician", "--password-stdin",
             stdin=GOOD + "\n", monkeypatch=monkeypatch)
    assert rc == 0
    assert capsys.readouterr().out.strip() == "account tech (technician) added"
    assert run(config_path, "add", "bob", "--role", "clinician", "--password-stdin",
               stdin=GOOD + "\n", monkeypatch=monkeypatch) == 0
    capsys.readouterr()
    assert run(config_path, "list") == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines == [["bob", "clinician"], ["tech", "technician"]]
    conn, accounts = open_accounts(config_path)
    try:
        tech = accounts.authenticate("tech", GOOD)  # the newline is not part of the password
        assert tech is not None
        assert tech.is_technician
    finally:
        conn.close()


def test_add_prompts_twice_and_refuses_when_they_differ(config_path, capsys, monkeypatch):
    prompts = []
    answers = iter([GOOD, GOOD + "!"])

    def fake_getpass(prompt: str = "Password: ") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    assert run(config_path, "add", "alice", "--role", "clinician") == 1
    assert prompts == ["Password for alice: ", "Again: "]
    assert "differ" in capsys.readouterr().err
    conn, accounts = open_accounts(config_path)
    try:
        assert accounts.count() == 0
    finally:
        conn.close()


def test_add_prompted_passwords_that_match(config_path, capsys, monkeypatch):
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": GOOD)
    assert run(config_path, "add", "alice", "--role", "clinician") == 0
    assert "account alice (clinician) added" in capsys.readouterr().out


def test_weak_password_exits_1_with_the_reason(config_path, capsys, monkeypatch):
    rc = run(config_path, "add", "alice", "--role", "clinician", "--password-stdin",
             stdin="password123\n", monkeypatch=monkeypatch)
    assert rc == 1
    captured = capsys.readouterr()
    assert "common" in captured.err
    assert captured.out == ""
    rc = run(config_path, "add", "alice", "--role", "clinician", "--password-stdin",
             stdin="", monkeypatch=monkeypatch)
    assert rc == 1
    assert "no password" in capsys.readouterr().err


def test_duplicate_and_bad_names_exit_1_before_asking(config_path, capsys, monkeypatch):
    def no_prompt(prompt: str = "") -> str:
        raise AssertionError("must not ask for a password")

    monkeypatch.setattr(getpass, "getpass", no_prompt)
    assert run(config_path, "add", "alice", "--role", "clinician", "--password-stdin",
               stdin=GOOD + "\n", monkeypatch=monkeypatch) == 0
    capsys.readouterr()
    assert run(config_path, "add", "ALICE", "--role", "technician") == 1
    assert "already exists" in capsys.readouterr().err
    assert run(config_path, "add", "bad name", "--role", "technician") == 1
    assert "bad account name" in capsys.readouterr().err
    assert run(config_path, "passwd", "nobody") == 1
    assert "no account nobody" in capsys.readouterr().err


def test_missing_role_and_other_usage_errors_exit_2(config_path, capsys):
    assert run(config_path, "add", "alice") == 2
    assert "--role" in capsys.readouterr().err
    assert run(config_path, "remove") == 2
    assert "needs an account NAME" in capsys.readouterr().err
    assert run(config_path, "passwd", "alice", "--role", "technician") == 2
    assert "add only" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        run(config_path, "add", "alice", "--role", "admin")
    assert exc.value.code == 2


def test_passwd_changes_the_password_and_ends_sessions(config_path, capsys, monkeypatch):
    assert run(config_path, "add", "alice", "--role", "clinician", "--password-stdin",
               stdin=GOOD + "\n", monkeypatch=monkeypatch) == 0
    conn, accounts = open_accounts(config_path)
    try:
        token = Sessions(conn, 600, 3600).start(accounts.all()[0])
        capsys.readouterr()
        assert run(config_path, "passwd", "Alice", "--password-stdin",
                   stdin="a brand new secret\r\n", monkeypatch=monkeypatch) == 0
        assert "password of alice changed" in capsys.readouterr().out
        assert accounts.authenticate("alice", GOOD) is None
        assert accounts.authenticate("alice", "a brand new secret") is not None
        assert Sessions(conn, 600, 3600).resume(token) is None
        assert run(config_path, "passwd", "alice", "--password-stdin",
                   stdin="alice-is-my-name\n", monkeypatch=monkeypatch) == 1
        assert "account name" in capsys.readouterr().err
    finally:
        conn.close()


def test_remove(config_path, capsys, monkeypatch):
    assert run(config_path, "add", "alice", "--role", "clinician", "--password-stdin",
               stdin=GOOD + "\n", monkeypatch=monkeypatch) == 0
    capsys.readouterr()
    assert run(config_path, "remove", "alice") == 0
    assert capsys.readouterr().out.strip() == "account alice removed"
    assert run(config_path, "remove", "alice") == 1
    assert "no account alice" in capsys.readouterr().err
    conn, accounts = open_accounts(config_path)
    try:
        assert accounts.count() == 0
    finally:
        conn.close()
