"""``clinibox hospital-time``: the box's clock moved forward to the hospital's signed time.

A box with a flat clock battery and no network time loses the time at every power cut: its
clock starts again from the last time systemd-timesyncd saved. Once it is days behind, its
certificates, its messages' times and the hospital's verdicts all go wrong. The hospital knows
the time: each downlink carries its signed ``created_at``, and its receiver sends one (a
``clock`` downlink) to a box whose status shows its clock behind (``central/box_clock.py``).

The service hands an authentic downlink ahead of its clock to this helper
(``telemetry/hospital_time.py``): it cannot set the clock itself (``ProtectClock=yes``: it
parses what the clinic's LAN sends). ``clinibox-clock.path`` starts ``clinibox-clock.service``,
which runs this command as the service's user with one capability, ``CAP_SYS_TIME``. It opens
each waiting envelope again with the box's keys (signed by the hospital's downlink key, for
this box: a file the service user left cannot move the clock), moves the clock forward to the
newest ``created_at`` when it is more than ``CLOCK_TOLERANCE_SECONDS`` ahead, never back, and
removes the files. The time the file waited for the helper counts too: from its change time
(the kernel's, on the box's clock; a user can make it younger, never older) to the helper's
now, at most ``WAITED_AT_MOST_SECONDS``. On a slow board the helper starts minutes after the
service left the file, and a clock set to the bare ``created_at`` stayed those minutes
behind. systemd-timesyncd saves the time every minute while it has no server
(``SaveIntervalSec=``), so the next boot starts from it. NTP, once it answers, sets the exact
time as always.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from clinibox_common.contracts import downlink, signing
from clinibox_common.contracts.downlink import DownlinkRefused
from clinibox_common.contracts.envelope import MAX_ENVELOPE_BYTES, load_x25519_private
from clinibox_common.errors import EXIT_FAIL, EXIT_OK
from clinibox_common.fs import read_regular
from firmware_app.ops import clock_floor
from firmware_app.settings import box as config_module
from firmware_app.storage import db, event_codes
from firmware_app.telemetry import hospital_time

log = logging.getLogger(__name__)

#: the event-log component of the helper's events
COMPONENT = "downlink"
#: the most a waiting file's age adds to the hospital's signed time: the helper starts
#: seconds (a PC) to minutes (an emulated or slow board) after the service left it; a file
#: older than that waited for a helper that could not run, and counts this much only
WAITED_AT_MOST_SECONDS = 600.0


@dataclass
class ClockOutcome:
    """What one run did: the seconds the clock moved (0: not behind), the reasons of the
    waiting times it refused, and the hospital's newest time it checked (None: none)."""

    moved_s: float = 0.0
    refused: list[str] = field(default_factory=list)
    hospital_time: float | None = None
    #: how long the newest time waited for the helper (added to it)
    waited_s: float = 0.0

    @property
    def target(self) -> float | None:
        """The time the clock is moved to when it is behind it: the hospital's newest time
        and how long it waited; None when none was checked."""
        return None if self.hospital_time is None else self.hospital_time + self.waited_s


def _keys(config: config_module.Config) -> tuple[Ed25519PublicKey, X25519PrivateKey]:
    """The hospital's downlink signing key and the box's downlink key (nothing is made)."""
    return (signing.load_public_key(Path(config.telemetry.hospital_signing_key)),
            load_x25519_private(config.downlink_key_path, "the box's downlink key"))


def _opened_time(config: config_module.Config, envelope: bytes,
                 keys: tuple[Ed25519PublicKey, X25519PrivateKey]) -> float:
    """The hospital's signed ``created_at`` of one waiting envelope; DownlinkRefused."""
    hospital_key, box_key = keys
    _, payload, _ = downlink.open_downlink(
        envelope, clinic=config.telemetry.clinic, device=config.telemetry.device,
        hospital_key=hospital_key, box_key=box_key, accept_stale=True,
        trust_hospital_clock=True)
    return float(payload["created_at"])


def _remove(path: Path) -> None:
    """Remove one entry of the folder whatever it is (a folder whole, a link itself), so that
    nothing is left for the path unit to start the helper for again; never raises."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        log.error("cannot remove %s: %s", path, exc)


def _kept_by_timesyncd(_moment: dt.datetime) -> None:
    """The next boot's clock: systemd-timesyncd saves the time itself every minute while it
    has no server (its clock file is its own user's; this helper does not write it)."""


def take_hospital_time(config: config_module.Config, *,
                       set_clock: Callable[[dt.datetime], None] = clock_floor.set_system_clock,
                       now: Callable[[], float] = time.time) -> ClockOutcome:
    """Check every time waiting for the clock, move the clock forward to the newest when it is
    ahead, remove them all; what was done. OSError when the clock cannot be set."""
    outcome = ClockOutcome()
    found = hospital_time.entries(config.clock_incoming_dir)
    if not found:
        return outcome
    try:
        keys = _keys(config)
    except (OSError, ValueError):
        for path in found:  # the path unit must not start the helper again and again
            _remove(path)
        raise
    for path in found:
        try:
            if not hospital_time.FILE_NAME.fullmatch(path.name):
                raise OSError(f"{path.name} is not named as the service names a time")
            changed = path.lstat().st_ctime
            data = read_regular(path, MAX_ENVELOPE_BYTES)
            stamp = _opened_time(config, data, keys)
        except FileNotFoundError:
            continue  # replaced by a newer time meanwhile: nothing to say
        except DownlinkRefused as exc:
            outcome.refused.append(exc.reason)
        except OSError as exc:  # a link, a FIFO, a folder: nothing the hospital signed
            log.warning("a waiting time %s could not be read: %s", path.name, exc)
            outcome.refused.append("unreadable")
        else:
            if outcome.hospital_time is None or stamp > outcome.hospital_time:
                outcome.hospital_time = stamp
                outcome.waited_s = min(max(now() - changed, 0.0), WAITED_AT_MOST_SECONDS)
        finally:
            _remove(path)
    target = outcome.target
    if target is not None and hospital_time.is_ahead(target, now()):
        floor = dt.datetime.fromtimestamp(target, dt.timezone.utc)
        outcome.moved_s = clock_floor.raise_clock(
            floor, now=lambda: dt.datetime.fromtimestamp(now(), dt.timezone.utc),
            set_clock=set_clock, keep=_kept_by_timesyncd,
            source="the hospital's signed time (a downlink)")
    _record(config, outcome)
    return outcome


def _record(config: config_module.Config, outcome: ClockOutcome) -> None:
    """The outcome in the box's events (the device page, ``clinibox status``); nothing when
    the service has made no database yet (the journal has it)."""
    if not config.database_path.is_file():
        return
    try:
        conn = db.connect(config.database_path)
    except (OSError, sqlite3.Error) as exc:
        log.warning("cannot record the clock's outcome in %s: %s", config.database_path, exc)
        return
    try:
        with db.transaction(conn):
            if outcome.moved_s:
                minutes = max(1, round(outcome.moved_s / 60))
                db.record_event(conn, "WARNING", COMPONENT, (
                    f"the box's clock was {outcome.moved_s:.0f} s behind the hospital's signed "
                    "time; it was set forward to it"),
                    event_codes.code(event_codes.CLOCK_MOVED, minutes))
            for reason in dict.fromkeys(outcome.refused):
                db.record_event(conn, "ERROR", COMPONENT, (
                    f"a time left for the clock was refused ({reason}); the clock was not "
                    "changed by it"), event_codes.code(event_codes.CLOCK_REFUSED, reason))
    except sqlite3.Error as exc:
        log.warning("cannot record the clock's outcome: %s", exc)
    finally:
        conn.close()


def cmd_hospital_time(args: argparse.Namespace) -> int:
    """``clinibox hospital-time``: take the hospital's waiting time (clinibox-clock.service)."""
    config = config_module.load(getattr(args, "config", None))
    if not config.telemetry.hospital_signing_key:
        log.error("no [telemetry] hospital_signing_key: no time can be checked as the "
                  "hospital's (provision the box)")
        return EXIT_FAIL
    try:
        outcome = take_hospital_time(config)
    except (OSError, ValueError) as exc:
        log.error("the clock was not set: %s", exc)
        return EXIT_FAIL
    if outcome.moved_s:
        moment = dt.datetime.fromtimestamp(outcome.target or 0.0, dt.timezone.utc)
        print(f"clock set forward {outcome.moved_s:.0f} s to the hospital's signed time "
              f"({moment:%Y-%m-%d %H:%M} UTC)")
    elif outcome.hospital_time is not None:
        print("the clock is not behind the hospital's time: left as it is")
    for reason in outcome.refused:
        print(f"a waiting time was refused: {reason}")
    return EXIT_FAIL if outcome.refused else EXIT_OK


def add_parsers(sub: argparse._SubParsersAction,
                with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register ``hospital-time`` on the main parser."""
    p = with_config(sub.add_parser(
        "hospital-time", help="set the clock forward to the hospital's signed time, when the "
                              "service left one (clinibox-clock.service runs it)"))
    p.set_defaults(func=cmd_hospital_time)

