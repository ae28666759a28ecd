"""``clinibox user``: the viewer's local accounts, managed on the box's console.

* ``clinibox user add NAME --role clinician|technician`` creates an account;
* ``clinibox user list`` shows every account and its role;
* ``clinibox user passwd NAME`` sets a new password (and ends the account's sessions);
* ``clinibox user remove NAME`` removes an account (and its sessions).

Passwords are asked for twice on the terminal (not echoed; the password rules are
shown first), or read as one line from standard input with ``--password-stdin``
(for scripts); never as an argument, where they would show in the process list
and the shell history. Without a terminal on standard input and without
``--password-stdin`` the command refuses at once (exit status 2) and says how to
give the password, instead of letting ``getpass`` fall back to reading it visibly.
Every change is an audit row naming the unix user who ran the command
(``cli:<user>``; ``clinibox audit --action account_created``).
"""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import sqlite3
import sys
from collections.abc import Callable

from clinibox_common.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from clinibox_common.i18n import gettext as _
from firmware_app.settings import box as config_module
from firmware_app.storage import db
from firmware_app.storage.accounts import ROLES, AccountError, Accounts, normalise_name
from firmware_app.words import labels
from webcore.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, password_problem

_NEEDS_NAME = ("add", "passwd", "remove")


def _usage_error(message: str) -> int:
    print(_("clinibox user: error: %(message)s", message=message), file=sys.stderr)
    return EXIT_USAGE


def password_rules() -> str:
    """The password rules in one line (from ``webcore.passwords``' own limits)."""
    return _("password rules: %(least)s to %(most)s characters; not one character repeated; "
             "not containing the account name; not one of the most common passwords",
             least=MIN_PASSWORD_LENGTH, most=MAX_PASSWORD_LENGTH)


def _stdin_is_terminal() -> bool:
    """Whether standard input is a terminal. A stream with no file descriptor was put in
    place inside this process (not by a shell): it is left to ``getpass``, which then
    asks on the controlling terminal itself."""
    stream = sys.stdin
    if stream is None:  # started with standard input closed
        return False
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation: no descriptor
        return True
    return os.isatty(descriptor)


def _no_terminal_error(args: argparse.Namespace) -> int:
    """Refuse at once when the password cannot be asked for; say how to give it."""
    example = ["clinibox", "user", args.action, args.name or "NAME"]
    if args.action == "add":
        example += ["--role", args.role or "technician"]
    command = "printf '%s\\n' \"$PASSWORD\" | " + shlex.join([*example, "--password-stdin"])
    return _usage_error(_("standard input is not a terminal, so the password cannot be asked "
                          "for: give it as one line on standard input with --password-stdin "
                          "(e.g. %(command)s), or run the command on a terminal",
                          command=command))


def _checked(password: str, name: str) -> str:
    """``password`` when the rules accept it; else AccountError naming the rule."""
    problem = password_problem(password, name)
    if problem:
        raise AccountError(_("%(problem)s (%(rules)s)", problem=problem,
                             rules=password_rules()))
    return password


def _read_password(name: str, from_stdin: bool) -> str:
    """The new password: one line of standard input, or typed twice at the prompt (the
    rules shown first); AccountError when it breaks a rule, naming the rule."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise AccountError(_("no password on standard input"))
        return _checked(line.rstrip("\r\n"), name)
    print(password_rules(), file=sys.stderr, flush=True)
    try:
        first = _checked(getpass.getpass(_("Password for %(name)s: ", name=name)), name)
        second = getpass.getpass(_("Again: "))
    except EOFError as exc:
        raise AccountError(_("no password given")) from exc
    if first != second:
        raise AccountError(_("the two passwords differ; nothing changed"))
    return first


def _run(args: argparse.Namespace, accounts: Accounts) -> int:
    if args.action == "list":
        rows = accounts.all()
        if not rows:
            print(_("no accounts yet: clinibox user add NAME --role technician"))
        for account in rows:
            print(f"{account.name:<32} {labels.role(account.role)}")
        return EXIT_OK
    name = normalise_name(args.name)
    exists = any(account.name == name for account in accounts.all())
    if args.action == "add":
        if exists:  # say so before asking for a password
            raise AccountError(_("account %(name)s already exists", name=name))
        account = accounts.add(name, _read_password(name, args.password_stdin), args.role)
        print(_("account %(name)s (%(role)s) added", name=account.name,
                role=labels.role(account.role)))
    elif args.action == "passwd":
        if not exists:
            raise AccountError(_("no account %(name)s", name=name))
        accounts.set_password(name, _read_password(name, args.password_stdin))
        print(_("password of %(name)s changed; its sessions were ended", name=name))
    else:
        accounts.remove(name)
        print(_("account %(name)s removed", name=name))
    return EXIT_OK


def cmd_user(args: argparse.Namespace) -> int:
    """Add, list, change the password of, or remove a viewer account."""
    if args.action in _NEEDS_NAME and not args.name:
        return _usage_error(_("%(action)s needs an account NAME", action=args.action))
    if args.action == "list" and args.name:
        return _usage_error(_("list takes no NAME"))
    if args.action == "add" and not args.role:
        return _usage_error(_("add needs --role (%(roles)s)", roles=" or ".join(ROLES)))
    if args.action != "add" and args.role:
        return _usage_error(_("--role applies to add only (an account's role cannot be "
                              "changed; remove and add it again)"))
    if args.password_stdin and args.action not in ("add", "passwd"):
        return _usage_error(_("--password-stdin applies to add and passwd only"))
    if args.action in ("add", "passwd") and not args.password_stdin \
            and not _stdin_is_terminal():
        return _no_terminal_error(args)
    config = config_module.load(getattr(args, "config", None))
    conn: sqlite3.Connection = db.open_database(config.database_path)
    try:
        return _run(args, Accounts(conn))
    except AccountError as exc:
        print(f"clinibox user {args.action}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        conn.close()


def add_parsers(sub: argparse._SubParsersAction,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register ``user`` on the main parser."""
    p = with_config(sub.add_parser(
        "user", help="the viewer's local accounts: add, list, passwd, remove"))
    p.add_argument("action", choices=["add", "list", "passwd", "remove"])
    p.add_argument("name", nargs="?", help="the account name (not for list)")
    p.add_argument("--role", choices=list(ROLES), help="the new account's role (add only)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password as one line from standard input instead of asking")
    p.set_defaults(func=cmd_user)
