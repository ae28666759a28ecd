"""Provision a box from a USB stick: the hospital's enrolment bundle, with no terminal.

The appliance's first contact (``docs/technician/flash.md``): the technician writes the
hospital's ``BOX.bundle`` to the top of a USB stick and plugs it in. The stick's unit
(``clinibox-usb-import@.service``) mounts it read-only, then runs ``clinibox usb-import
--step provision`` as root, which:

- looks for files named ``*.bundle`` at the top of the medium: none, and nothing happens
  (a stick of images); more than one, and it is refused, as nobody can say which was meant;
- provisions the box from the one it found, exactly as ``clinibox provision`` does, with its
  checks: a bundle for another clinic or device on a box already provisioned is refused (a
  wrong stick never moves a box; only ``clinibox provision --force`` at a terminal does);
- on a box already provisioned, takes a renewal only from the hospital it already trusts: a
  bundle under another CA is refused. A stick needs no password, so without this anyone at
  a USB port could write a bundle with the box's clinic and device (on its screen) and a
  CA, broker and hospital key of their own, and take the box over;
- restarts the box's services so they read the new config, and
- writes the outcome, as a code, to ``/run/clinibox-usb-provision.json`` for the console's
  banner and the journal.

The images on the same stick are then imported as from any stick.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from clinibox_common.contracts.enrolment import (
    EnrolmentError,
    bundle_bytes,
    offered_ca,
    time_floor,
)
from clinibox_common.settings_loader import ConfigError
from firmware_app.ingest.usb_mount import host_view
from firmware_app.ops import stick_outcome
from firmware_app.ops.provision import ProvisionError, provision
from firmware_app.settings import box as config_module

log = logging.getLogger(__name__)

BUNDLE_SUFFIX = ".bundle"
OUTCOME_PATH = Path("/run/clinibox-usb-provision.json")
SERVICES = ("clinibox.service", "clinibox-web.service")


class StickOutcome(str, Enum):
    """What a stick's enrolment bundle came to (the console's banner reads it)."""

    NO_BUNDLE = "no_bundle"
    PROVISIONED = "provisioned"
    TWO_BUNDLES = "two_bundles"
    ANOTHER_CA = "another_ca"
    REFUSED = "refused"


@dataclass(frozen=True)
class StickResult:
    """The outcome, the bundle's file name, the clinic/device it made the box, and why not."""

    outcome: StickOutcome
    bundle: str = ""
    enrolled_as: str = ""
    reason: str = ""
    at: str = ""
    #: when the hospital issued the bundle, if the clock was behind it and moved forward
    clock_to: str = ""


def bundles_on(mount_point: Path) -> list[Path]:
    """The regular files named ``*.bundle`` at the top of the medium (links are not followed)."""
    found = []
    for entry in sorted(mount_point.iterdir()):
        if entry.name.startswith(".") or not entry.name.lower().endswith(BUNDLE_SUFFIX):
            continue
        if stat.S_ISREG(entry.lstat().st_mode):
            found.append(entry)
    return found


def provision_from(mount_point: Path, config: Path | None, *,
                   folder: Path | None = None,
                   raise_clock: Callable[[dt.datetime], float] | None = None) -> StickResult:
    """Provision the box configured at ``config`` from the one bundle on the medium (None: no
    config is named, and a bundle is refused for it); ``folder``: where to read the medium
    (its opened folder, ``usb_mount.opened_medium``), else the mount point; ``raise_clock``
    (root's ``clock_floor.raise_clock``): moves a clock that is behind the bundle's issue
    forward to it, once the bundle is known to be this box's hospital's."""
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    bundles = bundles_on(folder if folder is not None else host_view(mount_point))
    if not bundles:
        return StickResult(StickOutcome.NO_BUNDLE, at=now)
    if len(bundles) > 1:
        return StickResult(StickOutcome.TWO_BUNDLES, bundle=", ".join(b.name for b in bundles),
                           reason="more than one enrolment bundle on the stick", at=now)
    found = bundles[0]
    if config is None:
        return StickResult(StickOutcome.REFUSED, bundle=found.name,
                           reason="no config to provision: give --config or set "
                                  "CLINIBOX_CONFIG", at=now)
    try:
        data = bundle_bytes(found, follow_links=False)
    except EnrolmentError as exc:
        return StickResult(StickOutcome.REFUSED, bundle=found.name, reason=str(exc), at=now)
    ca = _ca_check(data, config)
    if ca is CaCheck.ANOTHER:
        return StickResult(StickOutcome.ANOTHER_CA, bundle=found.name,
                           reason="the bundle is signed by another CA than the hospital this "
                                  "box is provisioned for; only clinibox provision --force "
                                  "at the box's terminal can change its hospital", at=now)
    clock_to = ""
    if raise_clock is not None and ca in (CaCheck.FIRST, CaCheck.SAME):
        clock_to = _clock_to_bundle(data, raise_clock)
    try:
        done = provision(found, config)
    except ProvisionError as exc:
        return StickResult(StickOutcome.REFUSED, bundle=found.name, reason=str(exc), at=now,
                           clock_to=clock_to)
    return StickResult(StickOutcome.PROVISIONED, bundle=found.name,
                       enrolled_as=f"{done.bundle.clinic}/{done.bundle.device}", at=now,
                       clock_to=clock_to)


def _clock_to_bundle(data: bytes, raise_clock: Callable[[dt.datetime], float]) -> str:
    """Move the clock forward to when the hospital issued the bundle, when it is behind it (a
    box with no network time cannot take a bundle "not valid yet"); the moment it moved to,
    or ""."""
    try:
        floor = time_floor(data)
    except EnrolmentError:
        return ""  # provision refuses it with its reason
    try:
        moved = raise_clock(floor)
    except (OSError, ValueError, OverflowError) as exc:
        log.error("the clock is behind the bundle's issue %s and could not be set: %s",
                  floor.isoformat(timespec="seconds"), exc)
        return ""
    return floor.isoformat(timespec="seconds") if moved else ""


class CaCheck(str, Enum):
    """The bundle's CA against the box's: its first hospital, the same one, another, or
    not known (the bundle's fields or the box's config cannot be read: provision refuses)."""

    FIRST = "first"
    SAME = "same"
    ANOTHER = "another"
    UNKNOWN = "unknown"


def _ca_check(data: bytes, config: Path) -> CaCheck:
    """Compare the CA the bundle names (its fields only: nothing else in it is believed
    before this) with the one a provisioned box trusts; a provisioned box whose own CA
    cannot be read takes no bundle from a stick."""
    try:
        offered = offered_ca(data)
    except EnrolmentError:
        return CaCheck.UNKNOWN
    try:
        current = config_module.load(str(config)) if config.exists() else None
    except ConfigError:
        return CaCheck.UNKNOWN  # provision refuses a config that is not valid, saying so
    if current is None or not current.mqtt.host:
        return CaCheck.FIRST  # not provisioned yet: the first stick makes it the hospital's
    try:
        trusted = Path(current.mqtt.ca_file).read_text(encoding="utf-8")
    except OSError:
        return CaCheck.ANOTHER
    return CaCheck.SAME if trusted.strip() == offered.strip() else CaCheck.ANOTHER


def record(result: StickResult, path: Path = OUTCOME_PATH) -> None:
    """Keep the outcome where the console's banner reads it (root's, readable by all)."""
    stick_outcome.record(result, path)


def read_outcome(path: Path = OUTCOME_PATH) -> StickResult | None:
    """The last stick's outcome, or None when no stick carried a bundle since the boot."""
    return stick_outcome.read(path, StickResult, StickOutcome)


def restart_services() -> None:
    """Have the box's services read the new config (queued: this runs inside a unit)."""
    if not Path("/run/systemd/system").is_dir() or os.geteuid() != 0:
        return
    subprocess.run(["systemctl", "--no-block", "try-restart", *SERVICES], check=False,
                   timeout=30)
