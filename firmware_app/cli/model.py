"""``clinibox model …`` and ``clinibox service-failed``: the model lifecycle on the box.

* ``list`` / ``verify``: packages and their signature and hashes;
* ``install PACKAGE``: verify, check the floor, run the golden cases here, switch
  (``model_update.py``);
* ``rollback``: back to the kept previous package;
* ``status``: what runs, what is kept, the floor, the trial and the history;
* ``service-failed UNIT``: systemd's ``OnFailure=`` hook, a device event for the hospital.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from firmware_app.contracts.manifest import PackageError
from firmware_app.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from firmware_app.i18n import gettext as _
from firmware_app.i18n.text import display_width, ljust
from firmware_app.models.package import list_packages, load_package
from firmware_app.models.store import resolve_package_root
from firmware_app.settings import box as config_module
from web import wording


def _load_config(args: argparse.Namespace) -> config_module.Config:
    return config_module.load(getattr(args, "config", None))


def cmd_model(args: argparse.Namespace) -> int:
    """List, verify, install or roll back model packages; show the store's state."""
    config = _load_config(args)
    if args.action == "install":
        return _model_install(config, args)
    if args.action == "rollback":
        return _model_rollback(config)
    if args.action == "status":
        return _model_status(config, args.json)
    keys = [Path(k) for k in args.trust] if args.trust else config.trusted_key_paths
    if args.action == "list":
        packages = list_packages(config.models_dir) + list_packages(config.model_store_dir)
        if not packages:
            print(_("no model packages under %(models)s or %(store)s",
                    models=config.models_dir, store=config.model_store_dir))
            return EXIT_FAIL
        for root in packages:
            try:
                package = load_package(root, keys)
                arts = ", ".join(a.label for a in package.artifacts)
                print(f"{package.model_id:<32} " + _("verified (%(artifacts)s)",
                                                     artifacts=arts) + f"  {root}")
            except PackageError as exc:
                print(f"{root.parent.name}@{root.name:<20} "
                      + _("REFUSED: %(error)s", error=exc) + f"  {root}")
        return EXIT_OK
    root = Path(args.path) if args.path else resolve_package_root(config)
    try:
        package = load_package(root, keys)
    except PackageError as exc:
        print(_("REFUSED %(root)s: %(error)s", root=root, error=exc), file=sys.stderr)
        return EXIT_FAIL
    print(_("OK %(model)s: signature by key %(key)s, %(n)s artifact(s) match their sha256",
            model=package.model_id, key=package.signer, n=len(package.artifacts)))
    print("   " + _("intended use: %(use)s", use=wording.intended_use(
        package.manifest.get("intended_use", ""))))
    return EXIT_OK


def _model_install(config: config_module.Config, args: argparse.Namespace) -> int:
    from firmware_app.models.install import install

    if not args.path:
        print(_("model install needs the package folder or .tar.gz"), file=sys.stderr)
        return EXIT_USAGE
    try:
        result = install(config, Path(args.path))
    except PackageError as exc:
        print(_("REFUSED (%(code)s): %(error)s", code=exc.code, error=exc), file=sys.stderr)
        print(_("the box keeps running %(model)s", model=_running_model(config)),
              file=sys.stderr)
        return EXIT_FAIL
    package = result.package
    print(_("installed %(model)s (signed by key %(key)s); %(golden)s", model=package.model_id,
            key=package.signer, golden=result.golden.describe()))
    if result.previous:  # none on the box's first package of its [models] name
        print(_("previous package kept for `clinibox model rollback`: %(previous)s",
                previous=result.previous))
    if result.removed:
        print(_("removed older packages: %(removed)s", removed=", ".join(result.removed)))
    print(_("on trial until %(jobs)s analyses or %(hours)s h without a crash; a running "
            "service switches now", jobs=config.models.trial_jobs,
            hours=f"{config.models.trial_hours:g}"))
    return EXIT_OK


def _running_model(config: config_module.Config) -> str:
    from firmware_app.models.store import manifest_model_id

    try:
        return manifest_model_id(resolve_package_root(config)) or "-"
    except PackageError as exc:
        return _("no model (%(error)s)", error=exc)


def _model_rollback(config: config_module.Config) -> int:
    from firmware_app.models.install import rollback

    try:
        left, now = rollback(config)
    except PackageError as exc:
        print(_("REFUSED: %(error)s", error=exc), file=sys.stderr)
        return EXIT_FAIL
    print(_("rolled back from %(left)s to %(now)s; a running service switches now", left=left,
            now=now))
    return EXIT_OK


def _model_status(config: config_module.Config, as_json: bool) -> int:
    from dataclasses import asdict

    from firmware_app.models.store import store_for

    state = store_for(config).read()
    report = {"running": _running_model(config), **asdict(state)}
    if as_json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    active = state.active or _("(nothing installed: %(folder)s)", folder=config.models_dir)
    rows = ((_("running:"), report["running"]), (_("active:"), active),
            (_("previous:"), state.previous or "-"), (_("floor:"), state.floor or "-"))
    if state.trial:
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(state.trial.since))
        rows += ((_("trial:"), _("%(version)s, %(jobs)s/%(of)s analyses since %(since)s",
                                 version=state.trial.version, jobs=state.trial.jobs,
                                 of=config.models.trial_jobs, since=since)),)
    width = max(display_width(label) for label, _value in rows)
    for label, value in rows:
        print(f"{ljust(label, width)} {value}")
    for entry in state.history[-10:]:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["at"]))
        details = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("at", "action"))
        print(f"  {at} {entry['action']}: {details}")
    return EXIT_OK


def cmd_service_failed(args: argparse.Namespace) -> int:
    """``OnFailure=`` hook: note that a unit failed and queue a device event for the hospital."""
    from firmware_app.contracts.egress import UNITS
    from firmware_app.models.install import report_event

    config = _load_config(args)
    unit = args.unit.split("@", 1)[0].removesuffix(".service")
    report_event(config, "service_failed", "unit_failed", unit=unit if unit in UNITS else "other",
                 note=f"systemd unit {args.unit} failed")
    print(f"recorded the failure of {args.unit}; the hospital will be told")
    return EXIT_OK


def add_parsers(sub, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
                ) -> None:
    """Register ``model`` and ``service-failed`` on the ``clinibox`` parser."""
    p = with_config(sub.add_parser(
        "model", help="list, verify, install or roll back model packages; show their state"))
    p.add_argument("action", choices=["list", "verify", "install", "rollback", "status"])
    p.add_argument("path", nargs="?",
                   help="verify: package folder (default: the running one); install: the "
                        "package folder or .tar.gz")
    p.add_argument("--json", action="store_true", help="status as JSON")
    p.add_argument("--trust", action="append", metavar="KEY.pub",
                   help="public key to trust instead of the configured ones (repeatable)")
    p.set_defaults(func=cmd_model)
    p = with_config(sub.add_parser(
        "service-failed", help="OnFailure= hook: record a failed unit, tell the hospital"))
    p.add_argument("unit", help="the unit that failed (systemd's %%i)")
    p.set_defaults(func=cmd_service_failed)
