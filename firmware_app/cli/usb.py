"""``clinibox usb-import DEVICE``: mount a USB medium, take its network setting and provision
from its enrolment bundle if it carries them, wait for its import, unmount it.

The steps themselves are in ``firmware_app/ingest/usb_mount.py``,
``firmware_app/ops/usb_network.py`` and ``firmware_app/ops/usb_provision.py``; the systemd
unit runs them one by one with ``--step``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from clinibox_common.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from firmware_app.ingest.usb import import_status_path
from firmware_app.ingest.usb_mount import (
    DEFAULT_TIMEOUT,
    MediumError,
    device_name,
    mount_point_for,
    mount_step,
    opened_medium,
    unmount_medium,
    wait_for_import,
)
from firmware_app.ops import clock_floor, software_update, usb_model, usb_network, usb_provision
from firmware_app.ops import provision as provision_module
from firmware_app.settings import box as config_module
from firmware_app.storage import db, event_codes

log = logging.getLogger("firmware_app.ingest.usb_mount")


def _record(config: config_module.Config, message: str, code: str) -> None:
    """Keep the error for the device page, unless that would leave root-owned database files."""
    database = config.database_path
    try:
        if database.stat().st_uid != os.geteuid():
            return
        conn = db.connect(database)
        try:
            db.record_event(conn, "ERROR", "usb", message, code)
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        log.warning("cannot record the event in %s: %s", database, exc)



def cmd_usb_import(args: argparse.Namespace) -> int:
    """``clinibox usb-import DEVICE``: mount, wait for the import, unmount (or one --step)."""
    config = config_module.load(getattr(args, "config", None))
    try:
        name = device_name(args.device)
    except MediumError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    mount_point = mount_point_for(config.import_dir, name)
    steps = ("mount", "provision", "wait", "unmount") if args.step == "all" else (args.step,)
    code = EXIT_OK
    if "mount" in steps:
        try:
            mount_step(name, mount_point, args.any_device)
        except MediumError as exc:
            log.error("USB import of /dev/%s refused: %s", name, exc)
            return EXIT_FAIL
    if "provision" in steps and not _provision_step(name, mount_point, args):
        code = EXIT_FAIL
    if "wait" in steps:
        progress = wait_for_import(import_status_path(config.state_dir), mount_point.name,
                                   config.import_dir, time.monotonic(), args.timeout)
        if not progress.done:
            message = (f"USB import of /dev/{name} not finished after {args.timeout:g} s "
                       f"({progress.message}); the medium is unmounted anyway")
            log.error("%s", message)
            _record(config, message, event_codes.code(event_codes.USB_UNFINISHED, name))
            code = EXIT_FAIL
        elif progress.problem:
            message = f"USB import of /dev/{name}: {progress.message}, but {progress.problem}"
            log.error("%s", message)
            _record(config, message, event_codes.code(event_codes.USB_PROBLEM, name))
            code = EXIT_FAIL
        else:
            log.info("USB import of /dev/%s finished: %s", name, progress.message)
    if "unmount" in steps:
        if os.geteuid() != 0:
            log.error("unmounting needs root (the unit runs this step with '+')")
            return EXIT_FAIL
        if unmount_medium(mount_point):
            log.info("/dev/%s unmounted; the medium can be removed", name)
        else:
            code = EXIT_FAIL
    return code


def _provision_step(name: str, mount_point: Path, args: argparse.Namespace) -> bool:
    """Take the medium's network setting and provision from its enrolment bundle, if it has
    them, and take its software releases for the update unit (root); False when something
    was refused."""
    if os.geteuid() != 0:
        log.error("provisioning needs root (the unit runs this step with '+')")
        return False
    try:
        handle = opened_medium(name, mount_point)
    except MediumError as exc:
        log.error("/dev/%s: not read for a bundle or a release: %s", name, exc)
        return False
    folder = Path(f"/proc/self/fd/{handle}")  # the medium itself, whatever its path becomes
    try:
        # one file the box cannot take never keeps it from the others on the stick
        networked = _each_alone(name, "network setting", lambda: _network_from(name, folder))
        provisioned = _each_alone(name, "enrolment bundle", lambda: _provision_from_bundle(
            name, mount_point, folder, args))
        # after the bundle: a new box then trusts the hospital's model-signing keys
        modelled = _each_alone(name, "model package", lambda: _model_from(name, folder, args))
        try:
            taken = software_update.take_from(folder)
        except OSError as exc:
            log.error("/dev/%s: its software release could not be taken: %s", name, exc)
            return False
    finally:
        os.close(handle)
    if taken:
        log.info("/dev/%s: software release %s taken; clinibox-software-update applies it",
                 name, ", ".join(taken))
    return provisioned and networked and modelled


def _each_alone(name: str, what: str, step: Callable[[], bool]) -> bool:
    """Run one part of the stick's root step; an error it did not foresee is logged, and
    the stick's other parts go on."""
    try:
        return step()
    except Exception:
        log.exception("/dev/%s: its %s could not be taken", name, what)
        return False


def _network_from(name: str, folder: Path) -> bool:
    """Take the medium's network setting, if it has one; False when it was refused."""
    result = usb_network.take_from(folder)
    if result.outcome is usb_network.NetworkOutcome.NONE:
        return True
    usb_network.record(result)
    if result.outcome is usb_network.NetworkOutcome.REFUSED:
        log.error("/dev/%s: network setting %s refused (%s): %s", name, usb_network.FILE_NAME,
                  result.refusal, result.reason)
        return False
    log.info("/dev/%s: network set from %s: %s", name, usb_network.FILE_NAME, result.setting)
    return True


def _provision_from_bundle(name: str, mount_point: Path, folder: Path,
                           args: argparse.Namespace) -> bool:
    """Provision from the medium's enrolment bundle, if it has one; False when refused. The
    services restart at once: the box reaches the hospital while a model package, if the
    stick has one, is checked and installed (minutes on a slow board)."""
    try:
        config: Path | None = provision_module.config_path(getattr(args, "config", None))
    except provision_module.ProvisionError:
        config = None  # a stick without a bundle needs none; one with a bundle is refused
    result = usb_provision.provision_from(mount_point, config, folder=folder,
                                          raise_clock=clock_floor.raise_clock)
    if result.outcome is usb_provision.StickOutcome.NO_BUNDLE:
        return True
    usb_provision.record(result)
    if result.outcome is usb_provision.StickOutcome.PROVISIONED:
        log.info("/dev/%s: provisioned as %s from %s; restarting the services", name,
                 result.enrolled_as, result.bundle)
        usb_provision.restart_services()
        return True
    log.error("/dev/%s: enrolment bundle %s refused (%s): %s", name, result.bundle,
              result.outcome.value, result.reason)
    return False


def _model_from(name: str, folder: Path, args: argparse.Namespace) -> bool:
    """Install the medium's model package, if it has one; False when refused."""
    if not usb_model.archives_on(folder):
        return True
    try:
        config = provision_module.config_path(getattr(args, "config", None))
    except provision_module.ProvisionError as exc:
        result = usb_model.ModelResult(usb_model.ModelOutcome.REFUSED, reason=str(exc))
    else:
        result = usb_model.take_from(folder, config)
    usb_model.record(result)
    if result.outcome is usb_model.ModelOutcome.ADOPTED:
        usb_provision.restart_services()  # they read [models] name once, at their start
    if result.outcome in (usb_model.ModelOutcome.INSTALLED, usb_model.ModelOutcome.ADOPTED):
        log.info("/dev/%s: model package %s installed (%s): %s", name, result.model,
                 result.outcome, result.reason)
        return True
    log.error("/dev/%s: model package %s refused (%s): %s", name, result.archive,
              result.outcome, result.reason)
    return False


def add_parsers(sub: argparse._SubParsersAction,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register ``usb-import`` on the main parser."""
    p = with_config(sub.add_parser(
        "usb-import", help="mount a USB medium read-only under the import folder, take its "
                           "network setting (clinibox-network.toml) and provision the box "
                           "from its enrolment bundle if it has them, wait for its import, "
                           "unmount it (root)"))
    p.add_argument("device", help="the block device, e.g. sdb1 or /dev/sdb1")
    p.add_argument("--step", choices=["all", "mount", "provision", "wait", "unmount"],
                   default="all",
                   help="run one step only (the systemd unit runs them separately)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds to wait for the import before unmounting anyway")
    p.add_argument("--any-device", action="store_true",
                   help="also accept a device that is neither on USB nor removable")
    p.set_defaults(func=cmd_usb_import)
