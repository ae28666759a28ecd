"""``clinibox central user …`` (the console's accounts) and ``clinibox central web`` (serve it).

A password is typed twice at a prompt, or read as one line of standard input with
``--password-stdin`` (for scripts); never as an argument. ``web`` serves the console
over HTTPS with gunicorn (``webcore.server``): the hospital's certificate from ``[web]
tls_cert``/``tls_key``, else a self-signed one made in ``[web] state_dir`` whose
SHA-256 fingerprint is logged, for people to compare with what their browser shows.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from central.config import CentralConfig
from central.store import Store, StoreError
from central.store_open import webhook_options
from central_console.accounts import ROLES, AccountError, ConsoleAccounts
from clinibox_common.errors import EXIT_OK, EXIT_USAGE, CliniboxError
from clinibox_common.i18n import gettext as _

log = logging.getLogger("clinibox.central")


def _store(config: CentralConfig) -> Store:
    try:
        return Store(config.database.url, **webhook_options(config))
    except StoreError as exc:
        from central.store_open import database_words

        raise CliniboxError(database_words(config.database.url, exc)) from exc


def _read_password(name: str, from_stdin: bool) -> str:
    """The new password: one line of standard input, or typed twice at the prompt."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise AccountError(_("no password on standard input"))
        return line.rstrip("\r\n")
    try:
        first = getpass.getpass(_("Password for %(name)s: ", name=name))
        second = getpass.getpass(_("Again: "))
    except EOFError as exc:
        raise AccountError(_("no password given")) from exc
    if first != second:
        raise AccountError(_("the two passwords differ; nothing changed"))
    return first


def cmd_user(args: argparse.Namespace, config: CentralConfig) -> int:
    """Add, list, change the password of, or remove a console account."""
    from central import labels
    from clinibox_common.i18n import ENGLISH, current

    english = current() == ENGLISH
    store = _store(config)
    accounts = ConsoleAccounts(store.database)
    try:
        if args.action == "list":
            rows = accounts.all()
            if not rows:
                print(_("no console accounts yet: %(command)s",
                        command="clinibox central user add NAME --role admin"))
            for account in rows:
                role = account.role if english else labels.role(account.role)
                print(f"{account.name:<32} {role}")
            return EXIT_OK
        if args.action == "add":
            if accounts.known(args.name):
                raise AccountError(_("an account named %(name)s already exists",
                                     name=args.name.strip().lower()))
            account = accounts.add(args.name, _read_password(args.name, args.password_stdin),
                                   args.role)
            print(_("console account %(name)s (%(role)s) added", name=account.name,
                    role=account.role if english else labels.role(account.role)))
        elif args.action == "passwd":
            accounts.set_password(args.name, _read_password(args.name, args.password_stdin))
            print(_("password of %(name)s changed; its sessions ended",
                    name=args.name.strip().lower()))
        else:
            accounts.remove(args.name)
            print(_("console account %(name)s removed", name=args.name.strip().lower()))
    except AccountError as exc:
        print(f"clinibox central user: {_('error')}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        store.close()
    return EXIT_OK


def add_user_arguments(user: argparse.ArgumentParser) -> None:
    """The actions of ``clinibox central user`` (``add``, ``list``, ``passwd``, ``remove``);
    each takes ``--config`` and ``-v`` after it too."""
    actions = user.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", default=argparse.SUPPRESS,
                       help="central config file (TOML); defaults if omitted")
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="log debug detail")
        return p

    add = action("add", "add a console account")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES,
                     help="radiologist (reviews alerts) or admin (fleet, drift, audit, users)")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password as one line of standard input")
    action("list", "list the console's accounts")
    passwd = action("passwd", "change an account's password (its sessions end)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password as one line of standard input")
    remove = action("remove", "remove a console account")
    remove.add_argument("name")


def cmd_web(args: argparse.Namespace, config: CentralConfig) -> int:
    """Serve the console over HTTPS until stopped."""
    from central_console.app import create_app
    from webcore.server import WsgiServer, check_port, gunicorn_options
    from webcore.tls import CertificateError, ensure_certificate

    web = config.web
    state_dir = Path(web.state_dir)
    configured = bool(web.tls_cert)
    try:
        cert, key, fingerprint = ensure_certificate(
            Path(web.tls_cert) if configured else state_dir / "console-cert.pem",
            Path(web.tls_key) if configured else state_dir / "console-key.pem",
            configured=configured, common_name="clinibox hospital console")
    except CertificateError as exc:
        raise CliniboxError(str(exc), exit_status=EXIT_USAGE) from exc
    store = _store(config)
    if not configured:
        log.info("self-signed certificate %s, SHA-256 fingerprint %s", cert, fingerprint)
    if ConsoleAccounts(store.database).count() == 0:
        log.warning("no console account yet: clinibox central user add NAME --role admin")
    app = create_app(config, store)
    bind = f"[{web.host}]:{web.port}" if ":" in web.host else f"{web.host}:{web.port}"
    check_port(web.host, web.port)
    log.info("console on https://%s", bind)
    WsgiServer(app, gunicorn_options(
        bind=bind, threads=web.threads, cert=cert, key=key,
        loglevel="debug" if args.verbose else "info", proc_name="clinibox-central-web")).run()
    return EXIT_OK


def add_commands(command: Callable[[str, Callable[..., int], str], argparse.ArgumentParser]
                 ) -> None:
    """Register the console's commands, ``web`` and ``user``, with ``command(name, func, help)``
    (``clinibox/central_command.py``)."""
    command("web", cmd_web, "serve the hospital's console over HTTPS until stopped")
    add_user_arguments(command("user", cmd_user, "the console's accounts: add, list, passwd, "
                                                 "remove"))
