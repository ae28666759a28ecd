"""The viewer's accounts (scrypt hashes), failed-login throttle and server-side sessions."""

from __future__ import annotations

import hashlib

import pytest

import webcore.passwords as passwords_module
from firmware_app.storage.accounts import Account, Accounts, LoginThrottle, Sessions
from webcore.passwords import (
    MIN_PASSWORD_LENGTH,
    AccountError,
    normalise_name,
    password_problem,
)

GOOD = "correct horse battery"


@pytest.fixture
def accounts(conn):
    return Accounts(conn)


@pytest.fixture
def alice(accounts):
    return accounts.add("alice", GOOD, "clinician")


# --- names and passwords -------------------------------------------------------------------

def test_normalise_name_strips_and_lower_cases():
    assert normalise_name("  Dr.Smith_2 ") == "dr.smith_2"
    assert normalise_name("a") == "a"
    assert normalise_name("x" * 32) == "x" * 32


@pytest.mark.parametrize("name", ["", "   ", "-bob", ".bob", "bo b", "bob!", "böb", "x" * 33,
                                  "bob\nx"])
def test_normalise_name_refuses_names_breaking_the_rule(name):
    with pytest.raises(AccountError, match="1 to 32 characters"):
        normalise_name(name)


@pytest.mark.parametrize(("password", "reason"), [
    ("short1!", "shorter than"),
    ("x" * (MIN_PASSWORD_LENGTH - 1), "shorter than"),
    ("a" * 40, "single character"),
    ("my-ALICE-is-long", "account name"),
    ("Password123", "common"),
    ("QWERTYUIOP", "common"),
    ("clinibox123", "common"),
    ("administrator", "common"),
    ("y" * 100 + "z" * 157, "longer than 256"),
])
def test_password_problem_names_each_rule(password, reason):
    problem = password_problem(password, "alice")
    assert problem is not None
    assert reason in problem


def test_password_problem_accepts_reasonable_passwords():
    assert password_problem(GOOD, "alice") is None
    assert password_problem("z" * 255 + "y", "alice") is None  # long is fine up to 256
    assert password_problem("1234567890x", "bob") is None


# --- accounts ------------------------------------------------------------------------------

def test_add_stores_a_scrypt_hash_never_the_password(conn, accounts, alice):
    assert alice == Account(id=alice.id, name="alice", role="clinician")
    assert not alice.is_technician
    stored = conn.execute("SELECT password_hash FROM accounts WHERE id = ?",
                          (alice.id,)).fetchone()[0]
    assert stored.startswith("scrypt:")
    assert GOOD not in stored
    dump = "\n".join(conn.iterdump())
    assert GOOD not in dump


def test_add_normalises_the_name_and_refuses_duplicates(accounts, alice):
    with pytest.raises(AccountError, match="already exists"):
        accounts.add("  ALICE ", "another good one", "technician")
    assert accounts.count() == 1


def test_add_refuses_bad_names_roles_and_weak_passwords(accounts):
    with pytest.raises(AccountError, match="bad account name"):
        accounts.add("no spaces", GOOD, "clinician")
    with pytest.raises(AccountError, match="unknown role"):
        accounts.add("bob", GOOD, "admin")
    with pytest.raises(AccountError, match="shorter than"):
        accounts.add("bob", "short", "clinician")
    with pytest.raises(AccountError, match="account name"):
        accounts.add("bob", "i-am-bob-the-builder", "clinician")
    with pytest.raises(AccountError, match="common"):
        accounts.add("bob", "LetMeIn123", "clinician")
    assert accounts.count() == 0
    assert accounts.all() == []


def test_count_all_and_get(accounts, alice):
    tech = accounts.add("Zed", GOOD, "technician")
    bob = accounts.add("bob", GOOD, "clinician")
    assert accounts.count() == 3
    assert [a.name for a in accounts.all()] == ["alice", "bob", "zed"]
    assert accounts.get(tech.id) == Account(tech.id, "zed", "technician")
    assert accounts.get(tech.id).is_technician
    assert accounts.get(bob.id) == bob
    assert accounts.get(10_000) is None


def test_authenticate_right_wrong_and_unknown(accounts, alice, monkeypatch):
    assert accounts.authenticate(" Alice", GOOD) == alice
    assert accounts.authenticate("alice", GOOD + "x") is None
    assert accounts.authenticate("alice", "") is None
    assert accounts.authenticate("alice", "x" * 300) is None
    checked = []
    real_check = passwords_module.check_password_hash

    def counting_check(stored: str, password: str) -> bool:
        checked.append(stored)
        return real_check(stored, password)

    monkeypatch.setattr(passwords_module, "check_password_hash", counting_check)
    assert accounts.authenticate("nobody", GOOD) is None
    assert accounts.authenticate("bad name!", GOOD) is None
    # an unknown or malformed name still costs one scrypt check, against the same dummy hash
    assert len(checked) == 2
    assert checked[0] == checked[1]
    assert checked[0].startswith("scrypt:")


def test_set_password_changes_it_and_ends_the_accounts_sessions(conn, accounts, alice):
    bob = accounts.add("bob", GOOD, "clinician")
    sessions = Sessions(conn, idle_seconds=600, max_seconds=3600)
    alice_token = sessions.start(alice)
    bob_token = sessions.start(bob)
    accounts.set_password("ALICE", "a brand new secret")
    assert accounts.authenticate("alice", GOOD) is None
    assert accounts.authenticate("alice", "a brand new secret") == alice
    assert sessions.resume(alice_token) is None
    assert sessions.resume(bob_token) == bob


def test_set_password_refuses_unknown_accounts_and_weak_passwords(conn, accounts, alice):
    sessions = Sessions(conn, idle_seconds=600, max_seconds=3600)
    token = sessions.start(alice)
    with pytest.raises(AccountError, match="no account"):
        accounts.set_password("nobody", "a brand new secret")
    with pytest.raises(AccountError, match="shorter than"):
        accounts.set_password("alice", "weak")
    assert sessions.resume(token) == alice  # a refused change ends nothing


def test_remove_cascades_sessions_and_keeps_feedback_anonymous(conn, accounts, alice):
    sessions = Sessions(conn, idle_seconds=600, max_seconds=3600)
    token = sessions.start(alice)
    accounts.remove(" Alice ")
    assert accounts.count() == 0
    assert accounts.get(alice.id) is None
    assert sessions.resume(token) is None
    assert conn.execute("SELECT COUNT(*) FROM web_sessions").fetchone()[0] == 0
    with pytest.raises(AccountError, match="no account alice"):
        accounts.remove("alice")


# --- login throttle ------------------------------------------------------------------------

def throttle_for(conn, free: int = 3, per_address: int = 10, max_delay: float = 64,
                 window: float = 600) -> LoginThrottle:
    return LoginThrottle(conn, free, per_address, max_delay, window_seconds=window)


def test_throttle_allows_tries_under_the_limit(conn):
    throttle = throttle_for(conn)
    for i in range(2):
        throttle.record_failure("alice", "10.0.0.1", now=1000.0 + i)
    assert throttle.wait_seconds("alice", "10.0.0.1", now=1002.0) == 0.0


def test_a_name_tried_from_many_addresses_is_never_locked(conn):
    throttle = throttle_for(conn)
    for i in range(30):
        throttle.record_failure(" Alice", f"10.0.{i}.1", now=1000.0 + i)
    assert throttle.wait_seconds("alice", "10.9.9.9", now=1031.0) == 0.0


def test_throttle_delays_one_account_from_one_address(conn):
    throttle = throttle_for(conn)
    for i in range(3):
        throttle.record_failure(" Alice", "10.0.0.5", now=1000.0 + i)
    assert throttle.wait_seconds("ALICE ", "10.0.0.5", now=1002.5) == pytest.approx(1.5)
    assert throttle.wait_seconds("bob", "10.0.0.5", now=1002.5) == 0.0
    assert throttle.wait_seconds("alice", "10.0.0.6", now=1002.5) == 0.0


def test_throttle_slows_an_address_trying_many_names(conn):
    throttle = throttle_for(conn, per_address=3)
    for i, name in enumerate(["alice", "bob", "carol"]):
        throttle.record_failure(name, "10.0.0.7", now=1000.0 + i)
    assert throttle.wait_seconds("dave", "10.0.0.7", now=1002.0) == pytest.approx(2.0)
    assert throttle.wait_seconds("dave", "10.0.0.8", now=1002.0) == 0.0


def test_throttle_wait_reaches_zero_and_the_window_forgets(conn):
    throttle = throttle_for(conn, free=2, window=60)
    for at in (1000.0, 1020.0, 1030.0):
        throttle.record_failure("alice", "10.0.0.1", now=at)
    # three failures, two free: the second delay (4 s) runs from the last failure
    waits = [throttle.wait_seconds("alice", "10.0.0.1", now=t) for t in (1031.0, 1033.0)]
    assert waits == pytest.approx([3.0, 1.0])
    assert throttle.wait_seconds("alice", "10.0.0.1", now=1034.0) == 0.0
    assert throttle.wait_seconds("alice", "10.0.0.1", now=5000.0) == 0.0  # never locked for good


def test_successful_logins_do_not_clear_failures(conn, accounts, alice):
    throttle = throttle_for(conn, free=1)
    throttle.record_failure("alice", "10.0.0.1", now=1000.0)
    assert accounts.authenticate("alice", GOOD) == alice
    assert throttle.wait_seconds("alice", "10.0.0.1", now=1001.0) > 0


def test_throttle_prunes_rows_older_than_the_window(conn):
    throttle = throttle_for(conn, window=60)
    throttle.record_failure("alice", "10.0.0.1", now=1000.0)
    throttle.record_failure("bob", "10.0.0.2", now=1030.0)
    assert conn.execute("SELECT COUNT(*) FROM login_failures").fetchone()[0] == 2
    throttle.record_failure("carol", "10.0.0.3", now=1070.0)
    names = [r[0] for r in conn.execute("SELECT name FROM login_failures ORDER BY at")]
    assert names == ["bob", "carol"]


def test_throttle_refuses_a_useless_limit(conn):
    with pytest.raises(ValueError):
        LoginThrottle(conn, 0, 10, 60)


# --- sessions ------------------------------------------------------------------------------

def test_session_start_and_resume_store_only_the_tokens_hash(conn, alice):
    sessions = Sessions(conn, idle_seconds=600, max_seconds=3600)
    token = sessions.start(alice, now=1000.0)
    assert len(token) >= 40
    assert sessions.resume(token, now=1001.0) == alice
    rows = conn.execute("SELECT * FROM web_sessions").fetchall()
    assert len(rows) == 1
    assert rows[0]["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert all(token not in str(value) for value in tuple(rows[0]))
    assert sessions.resume(token[:-1] + ("A" if token[-1] != "A" else "B"), now=1001.0) is None
    assert sessions.resume("", now=1001.0) is None
    assert sessions.start(alice, now=1000.0) != token


def test_session_expires_when_idle(conn, alice):
    sessions = Sessions(conn, idle_seconds=600, max_seconds=3600)
    token = sessions.start(alice, now=1000.0)
    assert sessions.resume(token, now=1600.0) == alice  # exactly idle_seconds: still valid
    assert sessions.resume(token, now=2201.0) is None
    assert conn.execute("SELECT COUNT(*) FROM web_sessions").fetchone()[0] == 0
    assert sessions.resume(token, now=1700.0) is None  # gone for good


def test_session_expires_after_the_maximum_even_when_busy(conn, alice):
    sessions = Sessions(conn, idle_seconds=600, max_seconds=3600)
    token = sessions.start(alice, now=1000.0)
    for t in range(1500, 4600, 500):
        assert sessions.resume(token, now=float(t)) == alice
    assert sessions.resume(token, now=4601.0) is None
    assert conn.execute("SELECT COUNT(*) FROM web_sessions").fetchone()[0] == 0


def test_session_last_seen_is_written_at_most_every_15_seconds(conn, alice):
    sessions = Sessions(conn, idle_seconds=600, max_seconds=3600)
    token = sessions.start(alice, now=1000.0)

    def last_seen():
        return conn.execute("SELECT last_seen FROM web_sessions").fetchone()[0]

    sessions.resume(token, now=1010.0)
    assert last_seen() == 1000.0
    sessions.resume(token, now=1020.0)
    assert last_seen() == 1020.0
    sessions.resume(token, now=1030.0)
    assert last_seen() == 1020.0


def test_session_end_and_end_all(conn, accounts, alice):
    bob = accounts.add("bob", GOOD, "clinician")
    sessions = Sessions(conn, idle_seconds=600, max_seconds=3600)
    first, second = sessions.start(alice), sessions.start(alice)
    bobs = sessions.start(bob)
    sessions.end(first)
    assert sessions.resume(first) is None
    assert sessions.resume(second) == alice
    third = sessions.start(alice)
    sessions.end_all(alice.id)
    assert sessions.resume(second) is None
    assert sessions.resume(third) is None
    assert sessions.resume(bobs) == bob


def test_session_purge_deletes_only_expired_sessions(conn, accounts, alice):
    sessions = Sessions(conn, idle_seconds=600, max_seconds=3600)
    idle = sessions.start(alice, now=1000.0)
    old = sessions.start(alice, now=1000.0)
    fresh = sessions.start(alice, now=3900.0)
    for t in (1500.0, 2000.0, 2500.0, 3000.0, 3500.0, 4000.0):
        sessions.resume(old, now=t)
    assert sessions.purge(now=4100.0) == 1  # idle: not seen since 1000
    assert sessions.resume(idle, now=4100.0) is None
    assert sessions.resume(fresh, now=4100.0) == alice
    assert sessions.resume(old, now=4500.0) == alice
    assert sessions.purge(now=4500.0) == 0
    assert sessions.purge(now=4700.0) == 1  # old: busy, but created over 3600 s ago
    assert sessions.resume(old, now=4700.0) is None
    assert sessions.resume(fresh, now=4700.0) == alice
    assert conn.execute("SELECT COUNT(*) FROM web_sessions").fetchone()[0] == 1
