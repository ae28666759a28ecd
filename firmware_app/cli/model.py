"""``clinibox model …`` and ``clinibox service-failed``: the model lifecycle on the box.

* ``list`` / ``verify``: packages and their signature and hashes;
* ``sign PACKAGE --key KEY.pem``: the hospital verifies a maker's package and signs it
  with its own key, keeping the maker's signature (``models/resign.py``);
* ``install PACKAGE``: verify, check the floor, run the golden cases here, switch
  (``model_update.py``);
* ``trial-package --key MAKER.pem --version X.Y.Z --out DIR``: the demo package under a new
  version, marked as a trial package, signed with one's own maker key, to rehearse
  signing, rollout and rollback with (``models/rehearsal.py``);
* ``rollback``: back to the kept previous package;
* ``status``: what runs (verified as ``list`` does), what is kept, the floor, the trial
  and the history;
* ``service-failed UNIT``: systemd's ``OnFailure=`` hook, a device event for the hospital.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from clinibox_common.contracts.manifest import ModelPackage, PackageError
from clinibox_common.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from clinibox_common.i18n import ENGLISH, N_, current
from clinibox_common.i18n import gettext as _
from clinibox_common.i18n.error_words import error_words
from clinibox_common.i18n.text import display_width, ljust
from engine.model_package import list_packages, load_package, signature_history
from firmware_app.models.store import resolve_package_root
from firmware_app.settings import box as config_module
from firmware_app.words import model_update_words as model_words
from firmware_app.words import wording


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
    if args.action == "sign":
        return _model_sign(args, keys)
    if args.action == "trial-package":
        return _model_trial_package(args)
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
                                                     artifacts=arts)
                      + _signers(package, short=True) + f"  {root}")
            except PackageError as exc:
                print(f"{root.parent.name}@{root.name:<20} "
                      + _("REFUSED: %(error)s", error=error_words(exc)) + f"  {root}")
        return EXIT_OK
    root = Path(args.path) if args.path else resolve_package_root(config)
    try:
        package = load_package(root, keys)
    except PackageError as exc:
        print(_("REFUSED %(root)s: %(error)s", root=root, error=error_words(exc)), file=sys.stderr)
        return EXIT_FAIL
    print(_("OK %(model)s: signature by key %(key)s, %(n)s artifact(s) match their sha256",
            model=package.model_id, key=package.signer, n=len(package.artifacts)))
    if signature_history(package.manifest):
        print("   " + _signers(package, short=False).removeprefix("; "))
    print("   " + _("intended use: %(use)s", use=wording.intended_use(
        package.manifest.get("intended_use", ""))))
    rehearsal = (package.manifest.get("provenance") or {}).get("rehearsal")
    if isinstance(rehearsal, dict):  # clinibox model trial-package
        print("   " + _("TRIAL PACKAGE for rehearsals, made from %(source)s (same weights): "
                        "not for clinical use", source=rehearsal.get("made_from", "?")))
    return EXIT_OK


def _model_install(config: config_module.Config, args: argparse.Namespace) -> int:
    from firmware_app.models.install import install

    if not args.path:
        print(_("model install needs the package folder or .tar.gz"), file=sys.stderr)
        return EXIT_USAGE
    try:
        result = install(config, Path(args.path))
    except PackageError as exc:
        print(_("REFUSED (%(code)s): %(error)s", code=exc.code, error=error_words(exc)),
              file=sys.stderr)
        running, waiting = _running_model(config)
        if running is not None:
            print(_("the box keeps running %(model)s", model=running), file=sys.stderr)
        else:
            print(_("the box runs no model: it keeps waiting for one (%(why)s)",
                    why=_waiting_words(waiting)), file=sys.stderr)
        return EXIT_FAIL
    from firmware_app.ops.selftest import golden_detail

    package = result.package
    print(_("installed %(model)s (signed by key %(key)s); %(golden)s", model=package.model_id,
            key=package.signer, golden=golden_detail(result.golden)))
    if result.previous:  # none on the box's first package of its [models] name
        print(_("previous package kept for `clinibox model rollback`: %(previous)s",
                previous=result.previous))
    if result.removed:
        print(_("removed older packages: %(removed)s", removed=", ".join(result.removed)))
    print(_("on trial until %(jobs)s analyses or %(hours)s h without a crash; a running "
            "service switches now", jobs=config.models.trial_jobs,
            hours=f"{config.models.trial_hours:g}"))
    return EXIT_OK


def _running_model(config: config_module.Config) -> tuple[str | None, dict | None]:
    """The model the box would run, verified as ``list`` verifies it: (its id, None), or
    (None, {"reason": the refusal's code, "detail": why}) when it has none it may run."""
    from firmware_app.models.store import manifest_model_id

    root = None
    try:
        root = resolve_package_root(config)
        return load_package(root, config.trusted_key_paths).model_id, None
    except PackageError as exc:
        model = manifest_model_id(root) if root is not None else ""
        detail = f"{model} refused: {exc.code}: {exc}" if model else str(exc)  # English
        return None, {"reason": exc.code, "detail": detail}


def _download(config: config_module.Config) -> dict | None:
    """The hospital's rollout being downloaded (``storage/download_progress.py``), or None."""
    from firmware_app.storage import db, download_progress

    if not config.database_path.exists():
        return None
    conn = db.connect(config.database_path)
    try:
        return download_progress.current(conn)
    finally:
        conn.close()


def _waiting_words(waiting: dict) -> str:
    """Why the box runs no model: the refusal as recorded in English, its reason's words in
    another language."""
    return waiting["detail"] if current() == ENGLISH else model_words.reason(waiting["reason"])


def _signers(package: ModelPackage, *, short: bool) -> str:
    """``; signed by key X (hospital), first signed by key Y (maker)`` for a package signed
    again (``clinibox model sign``); empty for one signed once."""
    history = signature_history(package.manifest)
    if not history:
        return ""
    first = history[0]
    text = _("signed by key %(key)s, first signed by key %(first)s (%(role)s)",
             key=package.signer, first=first["key_id"], role=first.get("role", "?"))
    if not short:
        for entry in history[1:]:
            text += "; " + _("then by key %(key)s (%(role)s)", key=entry["key_id"],
                             role=entry.get("role", "?"))
    return "; " + text


def _model_sign(args: argparse.Namespace, keys: list[Path]) -> int:
    from firmware_app.models.resign import sign_package

    if not args.path or not args.key:
        print(_("model sign needs the package folder or .tar.gz and --key KEY.pem"),
              file=sys.stderr)
        return EXIT_USAGE
    try:
        result = sign_package(Path(args.path), Path(args.key), keys,
                              out=Path(args.out) if args.out else None,
                              archive=Path(args.archive) if args.archive else None)
    except PackageError as exc:
        print(_("REFUSED (%(code)s): %(error)s", code=exc.code, error=error_words(exc)),
              file=sys.stderr)
        return EXIT_FAIL
    package = result.package
    print(_("signed %(model)s with key %(key)s into %(out)s", model=package.model_id,
            key=package.signer, out=package.root))
    for entry in result.earlier:
        print("   " + _("earlier signature kept: key %(key)s (%(role)s)",
                        key=entry["key_id"], role=entry.get("role", "?")))
    if result.archive is not None:
        print(_("archive %(path)s: sha256 %(sha256)s, %(size)s bytes",
                path=result.archive.path, sha256=result.archive.sha256,
                size=result.archive.size))
    return EXIT_OK


def _model_trial_package(args: argparse.Namespace) -> int:
    from firmware_app.models.rehearsal import make_trial_package

    if not args.key or not args.version or not args.out:
        print(_("model trial-package needs --key MAKER.pem, --version and --out DIR"),
              file=sys.stderr)
        return EXIT_USAGE
    try:
        made = make_trial_package(Path(args.key), args.version, Path(args.out),
                                  source=Path(args.path) if args.path else None,
                                  archive=Path(args.archive) if args.archive else None)
    except PackageError as exc:
        print(_("REFUSED (%(code)s): %(error)s", code=exc.code, error=error_words(exc)),
              file=sys.stderr)
        return EXIT_FAIL
    package = made.package
    print(_("made the TRIAL package %(model)s from %(source)s (same weights; not for clinical "
            "use), signed with key %(key)s, in %(out)s", model=package.model_id,
            source=made.source, key=package.signer, out=package.root))
    if made.archive is not None:
        print(_("archive %(path)s: sha256 %(sha256)s, %(size)s bytes", path=made.archive.path,
                sha256=made.archive.sha256, size=made.archive.size))
    return EXIT_OK


def _model_rollback(config: config_module.Config) -> int:
    from firmware_app.models.install import rollback

    try:
        left, now = rollback(config)
    except PackageError as exc:
        print(_("REFUSED: %(error)s", error=error_words(exc)), file=sys.stderr)
        return EXIT_FAIL
    print(_("rolled back from %(left)s to %(now)s; a running service switches now", left=left,
            now=now))
    return EXIT_OK


def _model_status(config: config_module.Config, as_json: bool) -> int:
    from dataclasses import asdict

    from firmware_app.models.store import store_for

    state = store_for(config).read()
    running, waiting = _running_model(config)
    report = {"running": running, **asdict(state), "download": _download(config)}
    if waiting is not None:
        report["waiting_for_model"] = waiting
    if as_json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    shown = running or _("none — waiting for a model (%(why)s)", why=_waiting_words(waiting))
    active = state.active or _("(nothing installed: %(folder)s)", folder=config.models_dir)
    rows = ((_("running:"), shown), (_("active:"), active),
            (_("previous:"), state.previous or "-"), (_("floor:"), state.floor or "-"))
    download = _download(config)
    if download is not None:
        rows += ((_("download:"), model_words.progress(download, time.time())),)
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
        print(f"  {at} {history_line(entry)}")
    return EXIT_OK


#: the store's history (``StoreState.note``) in words, by action
HISTORY = {"install": N_("installed %(version)s"),
           "rollback": N_("rolled back to %(version)s from %(left)s (%(reason)s)"),
           "kept": N_("kept %(version)s after its trial (%(jobs)s analyses)")}


def history_line(entry: dict) -> str:
    """One entry of the store's history for a person: the action in words, the rollout and
    the signer; an action without words as its recorded keys."""
    template = HISTORY.get(entry.get("action", ""))
    if template is None:
        details = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("at", "action"))
        return f"{entry.get('action')}: {details}"
    values = {"version": entry.get("version", "?"), "left": entry.get("left") or "-",
              "reason": model_words.reason(entry.get("reason")) or "-",
              "jobs": entry.get("jobs", "?")}
    line = _(template, **values)
    if entry.get("signer"):
        line += _(", signed by key %(key)s", key=entry["signer"])
    if entry.get("rollout"):
        line += _(", rollout %(rollout)s", rollout=entry["rollout"])
    return line


def cmd_service_failed(args: argparse.Namespace) -> int:
    """``OnFailure=`` hook: note that a unit failed and queue a device event for the hospital."""
    from clinibox_common.contracts.egress import UNITS
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
        "model", help="list, verify, install, sign or roll back model packages; show their "
                      "state"))
    p.add_argument("action", choices=["list", "verify", "install", "rollback", "status",
                                      "sign", "trial-package"])
    p.add_argument("path", nargs="?",
                   help="verify: package folder (default: the running one); install, sign: "
                        "the package folder or .tar.gz; trial-package: the demo package "
                        "folder (default: the bundled one)")
    p.add_argument("--json", action="store_true", help="status as JSON")
    p.add_argument("--trust", action="append", metavar="KEY.pub",
                   help="public key to trust instead of the configured ones (repeatable); "
                        "sign: the maker's key the package is signed with")
    p.add_argument("--key", metavar="KEY.pem",
                   help="sign: the hospital's model-signing private key (never the demo key); "
                        "trial-package: your own 'maker' key (clinibox keys generate)")
    p.add_argument("--out", metavar="DIR",
                   help="sign: the signed package folder to write (default: "
                        "<name>-<version>-signed/ beside PACKAGE); trial-package: the folder "
                        "to write")
    p.add_argument("--archive", metavar="OUT.tar.gz",
                   help="sign, trial-package: also write the package as an archive (for "
                        "rollouts and model install)")
    p.add_argument("--version", metavar="X.Y.Z", dest="version",
                   help="trial-package: the trial package's version (newer than the demo's)")
    p.set_defaults(func=cmd_model)
    p = with_config(sub.add_parser(
        "service-failed", help="OnFailure= hook: record a failed unit, tell the hospital"))
    p.add_argument("unit", help="the unit that failed (systemd's %%i)")
    p.set_defaults(func=cmd_service_failed)
