"""``clinibox central rollout``, ``rollouts`` and ``rollback``: model rollouts from a terminal.

* ``rollout PACKAGE --to CLINIC/BOX … [--group NAME] [--canary N] [--wave-size N]
  [--pause-on-failure]``: check the hospital-signed package as a box would, and start
  offering it (``central/rollouts.py``); PACKAGE is the archive ``clinibox model sign
  --archive`` wrote, or a package folder (packed here the same way);
* ``rollouts [ID] [--json] [--hold ID] [--resume ID]``: the rollouts and where each box
  stands; hold one (no further wave), or resume a paused one;
* ``rollback --to CLINIC/BOX … | --rollout ID``: send the boxes back to the package they ran
  before.

The console's fleet page does the same (``central_console``). Every change is a row of the
console's audit trail naming ``--as`` (default ``cli:<unix user>``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from central import rollouts
from central.config import CentralConfig
from central.store_open import open_store
from clinibox_common.contracts.package_archive import pack
from clinibox_common.errors import EXIT_OK, EXIT_USAGE, CliniboxError
from clinibox_common.i18n import ENGLISH, current, ngettext
from clinibox_common.i18n import gettext as _


def _box(text: str) -> tuple[str, str]:
    clinic, slash, device = text.partition("/")
    if not slash or not clinic or not device:
        raise argparse.ArgumentTypeError(f"{text!r} is not CLINIC/BOX")
    return clinic, device


def checked_package(path: Path, config: CentralConfig, folder: Path) -> rollouts.CheckedPackage:
    """The package at ``path`` (an archive, or a folder packed into ``folder``), checked."""
    if path.is_dir():
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        path = pack(path, folder / f"{manifest['name']}-{manifest['version']}.tar.gz").path
    return rollouts.check_package(path, [Path(k) for k in config.rollouts.trusted_keys])


def cmd_rollout(args: argparse.Namespace, config: CentralConfig) -> int:
    """Start a rollout of a hospital-signed package to boxes."""
    canary = config.rollouts.canary if args.canary is None else args.canary
    wave_size = args.wave_size or config.rollouts.wave_size
    problem = rollouts.waves_problem(canary, wave_size)  # the one rule, before any work
    if problem is not None:
        raise CliniboxError(rollouts.waves_refusal(problem), exit_status=EXIT_USAGE)
    store = open_store(config)
    boxes = list(args.to or [])
    if args.group:
        with store.database.transaction(write=False) as tx:
            found = rollouts.group_boxes(tx, args.group)
        if not found:
            raise CliniboxError(_("no enrolled box in group %(group)s", group=repr(args.group)),
                                exit_status=EXIT_USAGE)
        boxes += found
    with tempfile.TemporaryDirectory(prefix="clinibox-rollout-") as folder:
        package = checked_package(Path(args.package), config, Path(folder))
        with store.database.transaction(write=True) as tx:
            rollout_id = rollouts.create(
                tx, package, boxes, canary=canary, wave_size=wave_size,
                pause_on_failure=args.pause_on_failure, chunk_kib=config.rollouts.chunk_kib,
                by=_actor(args))
            row = rollouts.rollout(tx, rollout_id)
    assert row is not None
    archive = package.archive
    print(_("rollout %(id)s: %(package)s (signed by key %(key)s, %(bytes)s bytes in %(chunks)s "
            "chunks) to %(boxes)s boxes, %(canary)s canary first; offered now to %(sent)s",
            id=rollout_id, package=f"{archive.name}@{archive.version}", key=package.signer,
            bytes=archive.size, chunks=len(row["chunk_sha256"]), boxes=len(set(boxes)),
            canary=canary, sent=row["steps"].get("sent", 0)))
    return EXIT_OK


def _actor(args: argparse.Namespace) -> str:
    return args.account or f"cli:{getpass.getuser()}"


def cmd_rollouts(args: argparse.Namespace, config: CentralConfig) -> int:
    """List the rollouts (or one, with its boxes); hold or resume one."""
    store = open_store(config)
    with store.database.transaction(write=True) as tx:
        if args.hold:
            rollouts.pause(tx, args.hold, _actor(args))
        if args.resume:
            rollouts.resume(tx, args.resume, _actor(args))
        rows = [rollouts.rollout(tx, args.id)] if args.id else rollouts.rollouts(tx)
        if args.id and rows[0] is None:
            raise CliniboxError(_("no rollout %(id)s", id=args.id))
        for row in rows:
            assert row is not None
            row["boxes"] = rollouts.targets(tx, row["id"])
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return EXIT_OK
    if not rows:
        print(_("no rollouts"))
    for row in rows:
        assert row is not None
        _print_rollout(row, with_boxes=bool(args.id))
    return EXIT_OK


def _print_rollout(row: dict[str, Any], *, with_boxes: bool) -> None:
    if current() != ENGLISH:
        _print_rollout_words(row, with_boxes=with_boxes)
        return
    steps = ", ".join(f"{step} {n}" for step, n in sorted(row["steps"].items()))
    reason = f" ({row['state_reason']})" if row["state_reason"] else ""
    print(f"#{row['id']:<4} {row['name']}@{row['version']:<10} {row['state']}{reason:<16} "
          f"{steps}")
    if with_boxes:
        for box in row["boxes"]:
            why = f" ({box['reason']})" if box["reason"] else ""
            if box["step"] in rollouts.INSTALLED_STEPS and not box["seen"]:
                why += f" [not seen: status reports {box['running'] or '-'}]"
            print(f"      wave {box['wave']}  {box['clinic']}/{box['device']:<20} "
                  f"{box['step']}{why}")


def _print_rollout_words(row: dict[str, Any], *, with_boxes: bool) -> None:
    """A rollout in the reader's words (the console's: ``labels.ROLLOUT_WORDS``)."""
    from central import labels

    print(_("rollout %(id)s: %(package)s, %(state)s; %(steps)s", id=row["id"],
            package=f"{row['name']}@{row['version']}",
            state=labels.rollout_state(row["state"], row["state_reason"]),
            steps=_(", ").join(labels.rollout_steps(row["steps"])) or "–"))
    if with_boxes:
        for box in row["boxes"]:
            unseen = labels.rollout_unseen(box)
            print("      " + _("wave %(wave)s  %(box)s  %(step)s", wave=box["wave"],
                              box=f"{box['clinic']}/{box['device']}",
                              step=labels.rollout_where(box["step"], box["reason"],
                                                        box.get("rollback_seq")))
                  + (_(", ").join(("", unseen)) if unseen else ""))


def cmd_rollback(args: argparse.Namespace, config: CentralConfig) -> int:
    """Send boxes back to the package they ran before a rollout's."""
    if not args.to and not args.rollout:
        raise CliniboxError(_("rollback needs --to CLINIC/BOX or --rollout ID"),
                            exit_status=EXIT_USAGE)
    store = open_store(config)
    with store.database.transaction(write=True) as tx:
        sent = rollouts.rollback(tx, _actor(args), rollout_id=args.rollout,
                                 boxes=args.to or ())
    print(ngettext("rollback sent to %(num)d box", "rollback sent to %(num)d boxes", sent))
    return EXIT_OK


def add_rollout_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Register ``rollout``, ``rollouts`` and ``rollback`` on ``clinibox central``."""
    start = command("rollout", cmd_rollout,
                    "offer a hospital-signed model package or software release to boxes, "
                    "canaries first")
    start.add_argument("package", help="the package archive (clinibox model sign --archive) "
                                       "or folder, or a release of the box's software "
                                       "(clinibox software pack)")
    start.add_argument("--to", action="append", type=_box, metavar="CLINIC/BOX",
                       help="a box to offer it to (repeatable; the first --canary are canaries)")
    start.add_argument("--group", metavar="NAME",
                       help="every enrolled box of the clinics of county NAME, or of clinic NAME")
    start.add_argument("--canary", type=int, default=None, metavar="N",
                       help="boxes offered first (default [rollouts] canary)")
    start.add_argument("--wave-size", type=int, default=None, metavar="N",
                       help="boxes offered at once after the canaries (default [rollouts] "
                            "wave_size)")
    start.add_argument("--pause-on-failure", action="store_true",
                       help="pause on a failure in any wave (a canary's always pauses)")
    start.add_argument("--as", dest="account", default=None, metavar="NAME",
                       help="who started it, for the audit trail (default cli:<unix user>)")
    listing = command("rollouts", cmd_rollouts, "the rollouts and where each box stands")
    listing.add_argument("id", nargs="?", type=int, help="one rollout, with its boxes")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--hold", type=int, metavar="ID", help="offer no further wave")
    listing.add_argument("--resume", type=int, metavar="ID", help="go on with a paused rollout")
    listing.add_argument("--as", dest="account", default=None, metavar="NAME",
                         help="who held or resumed it (default cli:<unix user>)")
    back = command("rollback", cmd_rollback,
                   "send boxes back to the package they ran before a rollout's")
    back.add_argument("--to", action="append", type=_box, metavar="CLINIC/BOX",
                      help="a box (repeatable): its latest rollout is undone")
    back.add_argument("--rollout", type=int, metavar="ID",
                      help="every box of this rollout (and it offers nothing more)")
    back.add_argument("--as", dest="account", default=None, metavar="NAME",
                      help="who asked, for the audit trail (default cli:<unix user>)")
