"""The console's accounts and its command line: clinibox central user add|list|passwd|remove."""

from __future__ import annotations

import io
import sys

import pytest

from central.store import Store
from central_console.accounts import AccountError, ConsoleAccounts, ConsoleSessions
from clinibox.central_command import main
from webcore.sessions import SessionRule


@pytest.fixture
def config_file(tmp_path):
    """A central config whose database is in tmp_path."""
    path = tmp_path / "central.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/db/central.db"\n', encoding="utf-8")
    return path


def _run(argv: list[str], stdin: str = "") -> int:
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        return main(argv)
    finally:
        sys.stdin = saved


@pytest.mark.slow
def test_user_commands_add_list_passwd_remove(config_file, tmp_path, capsys):
    conf = ["--config", str(config_file)]
    assert _run(["user", "add", "Rad1", "--role", "radiologist", "--password-stdin", *conf],
                "Correct-Horse-91\n") == 0
    assert _run(["user", "add", "rad1", "--role", "admin", "--password-stdin", *conf],
                "Correct-Horse-91\n") != 0
    assert _run(["user", "add", "it1", "--role", "admin", "--password-stdin", *conf],
                "short\n") != 0
    assert _run(["user", "list", *conf]) == 0
    assert "rad1" in capsys.readouterr().out
    store = Store(f"sqlite:///{tmp_path}/db/central.db")
    accounts = ConsoleAccounts(store.database)
    assert accounts.authenticate("rad1", "Correct-Horse-91") is not None
    assert _run(["user", "passwd", "rad1", "--password-stdin", *conf], "Other-Secret-55\n") == 0
    assert accounts.authenticate("rad1", "Correct-Horse-91") is None
    assert accounts.authenticate("rad1", "Other-Secret-55") is not None
    assert _run(["user", "remove", "rad1", *conf]) == 0
    assert accounts.count() == 0
    with store.database.transaction(write=False) as tx:
        actions = [r[0] for r in tx.execute("SELECT action FROM console_audit ORDER BY id")]
    assert actions == ["account_added", "password_changed", "account_removed"]
    store.close()


def test_sessions_expire_and_end_with_a_password_change(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/db/central.db")
    accounts = ConsoleAccounts(store.database)
    account = accounts.add("rad2", "Correct-Horse-91", "radiologist")
    sessions = ConsoleSessions(store.database, SessionRule(idle_seconds=60, max_seconds=3600))
    token = sessions.start(account, now=1000.0)
    assert sessions.resume(token, now=1030.0) == account
    assert sessions.resume(token, now=1200.0) is None  # idle too long, and now deleted
    again = sessions.start(account)
    accounts.set_password("rad2", "Other-Secret-55")
    assert sessions.resume(again) is None
    with pytest.raises(AccountError):
        accounts.add("rad3", "Correct-Horse-91", "technician")
    store.close()
