"""``clinibox software``: the box's own software updated from a signed release.

``pack`` cuts a release from an offline bundle and signs it (where the hospital's
model-signing key is kept); ``apply`` installs one on the box, tries it and keeps it or goes
back by itself (root); ``assess`` is the boot's check for a trial the box went down in (its
unit runs it); ``status`` says what runs and how the last update ended.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path

from clinibox_common.contracts.manifest import PackageError
from clinibox_common.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from clinibox_common.i18n import _, gettext
from clinibox_common.i18n.error_words import error_words
from firmware_app.settings import box as config_module
from firmware_app.words import software_words


def cmd_pack(args: argparse.Namespace) -> int:
    """Cut and sign a release; print where it was written."""
    from firmware_app.ops.software_pack import PackError, pack_release

    if not args.path or not args.key:
        print(_("name the offline bundle and --key, the hospital's model-signing key"))
        return EXIT_USAGE
    try:
        packed = pack_release(Path(args.path), Path(args.key), Path(args.out))
    except PackError as exc:
        print(_("release not made: %(error)s", error=str(exc)))
        return EXIT_FAIL
    except (PackageError, OSError, ValueError) as exc:
        print(_("release not made: %(error)s", error=error_words(exc)))
        return EXIT_FAIL
    print(_("release %(path)s written: version %(version)s, %(mb)s MB, SHA-256 %(sha)s",
            path=str(packed.path), version=packed.version, mb=f"{packed.size / 1e6:.1f}",
            sha=packed.sha256))
    return EXIT_OK


def _needs_root() -> bool:
    if os.geteuid() != 0:
        print(_("this command changes the installed software: run it as root"))
        return True
    return False


def cmd_apply(args: argparse.Namespace) -> int:
    """Apply a release; say how it ended."""
    if _needs_root():
        return EXIT_USAGE
    from firmware_app.ops.software_update import apply, apply_incoming

    config = config_module.load(getattr(args, "config", None))
    if args.incoming:
        outcomes = apply_incoming(config)
    elif args.path:
        outcomes = iter([apply(config, Path(args.path))])
    else:
        print(_("name a release, or --incoming"))
        return EXIT_USAGE
    code = EXIT_OK
    for outcome in outcomes:  # each said as it ends (the screen shows the update's unit)
        print(_("software update: %(what)s", what=software_words.outcome_sentence(outcome)),
              flush=True)
        code = code if outcome["outcome"] == "kept" else EXIT_FAIL
    return code


def cmd_assess(args: argparse.Namespace) -> int:
    """At boot: revert a trial the box went down in."""
    if _needs_root():
        return EXIT_USAGE
    from firmware_app.ops.software_update import assess_at_boot

    outcome = assess_at_boot()
    if outcome is not None:
        print(software_words.outcome_sentence(outcome))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """What runs, what is kept, and how the last update ended."""
    from clinibox_common.contracts.software_release import ReleaseError
    from firmware_app.ops.software_update import Layout

    layout = Layout()
    try:
        running = layout.running_version()
    except ReleaseError:
        running = ""
    kept = sorted(q.parent.name for q in layout.prefix.glob("*/VERSION")
                  if q.parent.name not in (running, "current")
                  and not q.parent.name.startswith("."))
    outcome = software_words.read_outcome()
    trial = layout.trial.exists()
    if args.json:
        print(json.dumps({"running": running, "kept": kept, "trial_open": trial,
                          "last_update": outcome}, indent=2))
        return EXIT_OK
    print(_("software version: %(version)s", version=running or gettext("not installed")))
    if kept:
        print(_("kept to go back to: %(versions)s", versions=", ".join(kept)))
    if trial:
        print(_("an update is being tried now"))
    if outcome:
        print(_("last update (%(when)s): %(what)s",
                when=software_words.outcome_time(outcome),
                what=software_words.outcome_sentence(outcome)))
    else:
        print(_("no update applied yet"))
    return EXIT_OK


STEPS = {"pack": cmd_pack, "apply": cmd_apply, "assess": cmd_assess, "status": cmd_status}


def cmd_software(args: argparse.Namespace) -> int:
    """``clinibox software ACTION``."""
    return STEPS[args.action](args)


def add_parsers(sub: argparse._SubParsersAction,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register ``software`` on the main parser."""
    p = with_config(sub.add_parser(
        "software", help="the box's own software: pack a signed release (hospital), apply one "
                         "and keep it or go back by itself (root), its state"))
    p.add_argument("action", choices=list(STEPS),
                   help="pack: cut a release from an offline bundle; apply: install a "
                        "release, try it, keep it or go back (root); assess: at boot, go back "
                        "from a trial the box went down in (its unit runs it); status: the "
                        "version running, the one kept, the last update")
    p.add_argument("path", nargs="?",
                   help="pack: the offline bundle (folder or .tar.gz); apply: a .release")
    p.add_argument("--key", help="pack: the hospital's model-signing private key")
    p.add_argument("--out", default=".", help="pack: folder for the .release (default: here)")
    p.add_argument("--incoming", action="store_true",
                   help="apply: every release waiting in /var/lib/clinibox-software/incoming "
                        "(what the update unit runs)")
    p.add_argument("--json", action="store_true", help="status: machine-readable output")
    p.set_defaults(func=cmd_software)
