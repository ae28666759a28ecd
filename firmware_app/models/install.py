"""Installing and rolling back model packages: ``clinibox model install`` / ``rollback``.

Install, in order; the running model is untouched until the last step:

1. stage the package (a folder or a ``.tar.gz`` from USB) inside the store;
2. verify it: schema, Ed25519 signature by a trusted key, every file's sha256;
3. refuse another package name, or a version below the floor;
4. run its golden cases on the backend this box would choose;
5. switch: move it into place and replace ``state.json`` atomically. The
   package that ran until now is kept as ``previous`` (copied into the store
   when it came from ``[models] dir``), older ones are removed, and the new
   one starts its trial.

Each outcome goes into the box's event log, into the access audit trail with
who asked (``storage.audit``: ``cli:<unix user>`` on the console,
``system:service`` when the service rolls a failed trial back) and, as a
device event, into the outbox for the hospital. A refused package's own name
is only reported when its signature was good (unverified text never leaves
the box). The running service notices the new state and reloads (``app.py``).
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clinibox_common.contracts.egress import MODEL_ID, MODEL_REF
from clinibox_common.contracts.manifest import ModelPackage, PackageError
from clinibox_common.i18n import N_, gettext
from engine.golden import GoldenReport, check_golden, require_golden
from engine.model_package import load_package, version_key
from firmware_app.models.store import (
    StoreState,
    Trial,
    manifest_model_id,
    resolve_package_root,
    store_for,
)
from firmware_app.settings.box import Config
from firmware_app.storage import audit, db, model_offers
from firmware_app.telemetry.messages import LIFECYCLE, device_event, queue_device_event

log = logging.getLogger(__name__)


class UpdateRefused(PackageError):
    """An install or rollback the box will not do (nothing was changed).

    Made by :meth:`saying`, it keeps its marked English template and values, so a command
    says it in the reader's language (``said``; ``i18n.error_words``) while its text (for
    the logs) stays English."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message, code)
        self.words = ""
        self.values: dict[str, object] = {}

    @classmethod
    def saying(cls, template: str, code: str | None = None, **values: object
               ) -> UpdateRefused:
        """A refusal whose words are ``template`` (marked with ``N_``) filled with ``values``."""
        refused = cls(template % values if values else template, code)
        refused.words, refused.values = template, values
        return refused

    def said(self) -> str:
        """The refusal in the current language."""
        return gettext(self.words, **self.values) if self.words else str(self)


@dataclass(frozen=True)
class InstallResult:
    """What ``install`` did."""

    package: ModelPackage
    golden: GoldenReport
    previous: str
    removed: list[str]


def _runnable_root(config: Config) -> Path | None:
    """The folder of the package the box runs: one it finds and may run (its signature by
    a trusted key, its files intact), else None (a box waiting for a model)."""
    try:
        root = resolve_package_root(config)
        load_package(root, config.trusted_key_paths)
    except PackageError:
        return None
    return root


def _running_model_id(config: Config) -> str:
    """The id of the package the box runs (see :func:`_runnable_root`), else ""."""
    root = _runnable_root(config)
    return manifest_model_id(root) if root is not None else ""


def report_event(config: Config, event: str, reason: str, subject: str = "", *,
                 running: str | None = None, unit: str = "clinibox", note: str = "",
                 once_per_s: float = 0.0, rollout: int = 0, step: str = "",
                 progress: tuple[int, int] | None = None) -> bool:
    """Queue a device event for the hospital and note it in the box's event log; whether
    it was queued.

    ``running`` defaults to the model the box runs now ("" while it runs none). A
    ``subject`` that is neither a valid model id nor a package name (an unverified
    package's) is replaced by the running model's id, else by ``[models] name``. With
    ``once_per_s``, the same event (same note) queued within that many seconds is not
    queued again: a state that every start finds again (a model the routing rules name and
    the box lacks) tells the hospital once a day, not at every restart. ``rollout`` and
    ``step`` name a hospital rollout and the box's step in it, ``progress`` (bytes received,
    total) how far its download has come.
    """
    running = _running_model_id(config) if running is None else running
    if not MODEL_ID.fullmatch(running or ""):
        running = ""
    subject = next((s for s in (subject, running, config.models.name)
                    if MODEL_REF.fullmatch(s or "")), "")
    if not subject:
        log.warning("device event %s not queued: no valid model name", event)
        return False
    note = note or f"{event} ({reason}): {subject}"
    config.state_dir.mkdir(parents=True, exist_ok=True)
    conn = db.open_database(config.database_path)
    try:
        if once_per_s and db.event_noted_since(conn, LIFECYCLE, note, time.time() - once_per_s):
            log.info("device event not queued again: %s", note)
            return False
        queue_device_event(conn, config.telemetry.outbox_max_messages,
                           device_event(event, reason, running, subject, unit,
                                        rollout=rollout, step=step, progress=progress), note)
    finally:
        conn.close()
    return True


def audit_model(config: Config, action: str, *, by: str, target: str, detail: str) -> None:
    """Note a model change in the box's audit trail (a database error is logged: the change
    itself is done and must not be undone by a failed note)."""
    try:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        conn = db.open_database(config.database_path)
        try:
            audit.record(conn, action, account=by, address=audit.CONSOLE_ADDRESS,
                         target=target, detail=detail)
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as exc:
        log.error("model change %s (%s) not in the audit trail: %s", action, target, exc)


def settle_orders(config: Config, version: str, step: str, reason: str = "") -> None:
    """The hospital's rollout orders that installed ``version`` say where it ended (``kept``,
    ``rolled_back``): ``storage.model_offers.settle``; a database error is logged (the change
    itself is done)."""
    if not version:
        return
    try:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        conn = db.open_database(config.database_path)
        try:
            with db.transaction(conn):
                model_offers.settle(conn, config.models.name, version, step, reason)
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as exc:
        log.error("the rollout orders of %s not marked %s: %s", version, step, exc)


def _rollout_of(state: StoreState, version: str) -> int:
    """The rollout that installed ``version``, from the store's history (0: none)."""
    for entry in reversed(state.history):
        if entry.get("action") == "install" and entry.get("version") == version:
            return int(entry.get("rollout") or 0)
    return 0


def _check(config: Config, package: ModelPackage, state: StoreState) -> None:
    if package.name != config.models.name:
        raise UpdateRefused(f"the package is {package.name!r}; this box runs "
                            f"{config.models.name!r} ([models] name)", "invalid")
    if state.active == package.version:
        raise UpdateRefused(f"{package.model_id} is already installed and running", "invalid")
    if state.floor and version_key(package.version) < version_key(state.floor):
        raise UpdateRefused(
            f"{package.model_id} is older than {state.floor}, the newest version this box has "
            "installed (the version floor); an older package is never installed again",
            "older_version")


def install(config: Config, source, *, by: str | None = None, reason: str = "technician",
            rollout: int = 0, on_step: Callable[[str], None] | None = None) -> InstallResult:
    """Verify, check and switch to the package at ``source``; raise PackageError if refused.

    The install or the refusal is an audit row naming ``by`` (default: the console's
    unix user). ``reason`` is who asked, as the device event says it (``technician`` on
    the console, ``hospital`` for a rollout, whose number ``rollout`` is); ``on_step`` is
    told ``verified`` (signature, hashes, name and floor) and ``golden_passed`` as the
    install gets there.
    """
    by = audit.console_actor() if by is None else by
    try:
        result = _install(config, source, reason, rollout, on_step or (lambda step: None))
    except PackageError as exc:
        audit_model(config, "model_refused", by=by, target=f"package:{Path(source).name}",
                    detail=f"{exc.code}: {exc}")
        raise
    audit_model(config, "model_installed", by=by, target=f"model:{result.package.model_id}",
                detail=f"was {result.previous or '-'}; {result.golden.describe()}")
    return result


def _install(config: Config, source, reason: str, rollout: int,
             on_step: Callable[[str], None]) -> InstallResult:
    if config.models.version:
        raise UpdateRefused(f"[models] version pins {config.models.version}; clear it so that "
                            "installed packages can run")
    store = store_for(config)
    store.clean_leftovers()  # what an install cut short by a power cut left
    # what runs now, kept as the previous package only if the box may run it: a refused
    # package (the demo's on a hospital's box) is nothing to go back to
    running_root = _runnable_root(config)
    running_id = manifest_model_id(running_root) if running_root is not None else ""
    staging, staged = store.stage(source)
    verified = ""
    try:
        package = load_package(staged, config.trusted_key_paths)
        verified = package.model_id
        _check(config, package, store.read())
        on_step("verified")
        golden = require_golden(check_golden(package, config.runtime))
        on_step("golden_passed")
    except PackageError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if not (isinstance(exc, UpdateRefused) and exc.code == "invalid"):
            report_event(config, "model_refused", exc.code, verified, running=running_id,
                         note=f"model package refused ({exc.code}): {exc}", rollout=rollout)
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    def switch(state: StoreState) -> list[str]:
        _check(config, package, state)  # again, under the lock
        previous = ""
        if running_root is not None:
            if not state.active and running_root.resolve() != store.package_root(
                    package.version).resolve():
                store.adopt(running_root, running_root.name)  # keep what ran until now
            previous = running_root.name
        store.place(staged, package.version)
        state.previous, state.active = previous, package.version
        if not state.floor or version_key(package.version) > version_key(state.floor):
            state.floor = package.version
        state.trial = Trial(version=package.version, since=time.time(), rollout=rollout)
        state.note("install", version=package.version, previous=previous,
                   signer=package.signer, golden=golden.describe(), rollout=rollout)
        return store.prune({state.active, state.previous})

    try:
        removed = store.update(switch)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    installed = store.package_root(package.version)
    package = ModelPackage(root=installed, manifest=package.manifest, signer=package.signer)
    report_event(config, "model_installed", reason, package.model_id,
                 running=package.model_id,
                 note=f"model {package.model_id} installed (was {running_id or '-'}); "
                      f"{golden.describe()}", rollout=rollout)
    log.info("installed %s (previous %s)", package.model_id, running_id)
    return InstallResult(package, golden, running_id, removed)


def rollback(config: Config, reason: str = "technician", *, by: str | None = None,
             expect: str = "") -> tuple[str, str]:
    """Go back to the kept previous package; return (from model id, to model id).

    The rollback is an audit row naming ``by`` (default: the console's unix user when a
    technician asked, else the service, which rolls a failed trial back by itself). With
    ``expect`` (a version), the box goes back only while that version is the active one
    (the hospital's rollback order names the package it undoes). The device event names the
    rollout that brought the package left, if one did.
    """
    if by is None:
        by = audit.console_actor() if reason == "technician" else audit.SERVICE_ACTOR
    if config.models.version:
        raise UpdateRefused.saying(N_("[models] version pins %(version)s; change it there"),
                                   version=config.models.version)
    store = store_for(config)
    rollouts: list[int] = []

    def back(state: StoreState) -> tuple[str, str]:
        if not state.previous or not (store.package_root(state.previous) / "manifest.json"
                                      ).is_file():
            raise UpdateRefused.saying(N_("there is no previous model package to go back to"))
        if expect and state.active != expect:
            raise UpdateRefused(f"the box runs {state.active or 'no installed package'}, not "
                                f"{expect}; nothing to roll back", "invalid")
        bad, good = state.active, state.previous
        rollouts.append(state.trial.rollout if state.trial is not None else
                        _rollout_of(state, bad))
        state.active, state.previous, state.trial = good, "", None
        state.note("rollback", version=good, left=bad, reason=reason)
        return bad, good

    bad, good = store.update(back)
    settle_orders(config, bad, "rolled_back", reason)  # the update table says so
    settle_orders(config, good, "kept")  # running again, no trial
    left = manifest_model_id(store.package_root(bad)) if bad else ""
    now = manifest_model_id(store.package_root(good))
    report_event(config, "model_rolled_back", reason, left, running=now,
                 note=f"model rolled back from {left} to {now} ({reason})",
                 rollout=rollouts[0] if rollouts else 0)
    audit_model(config, "model_rolled_back", by=by, target=f"model:{now}",
                detail=f"from {left or '-'} ({reason})")
    log.warning("model rolled back from %s to %s (%s)", left, now, reason)
    return left, now
