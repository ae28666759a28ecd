"""The box's Flower SuperNode, supervised: it trains only in the configured hours, at the
lowest priority, paused while images wait for analysis, and started again after a crash or
a power cut (issue 60, decision 0056).

``clinibox learning node`` runs :class:`NodeSupervisor` (under systemd, with a CPU quota:
``docs/hospital/federated.md``). Within ``[learning] hours`` it writes the case file from
the box's labelled images (``case_file.py``) and starts ``flower-supernode`` on it
(:func:`supernode_command`, the very command the loopback federation of the tests and the
bench runs), in a process group of its own at nice 19 and ``SCHED_IDLE`` (through ``nice``
and ``chrt``):

* while objects wait in the box's queue (received, not yet analysed) the group is stopped
  (``SIGSTOP``) and continued (``SIGCONT``) once the queue is empty: the box's images come
  first. A round that needs the box meanwhile goes on without it (the hospital's round
  tolerates a box that drops out);
* outside the hours the SuperNode is stopped; the case file is written once a window, at
  its start (the labels of the day count);
* a SuperNode that exits is started again after :data:`RESTART_AFTER_S`; after a power cut
  systemd starts the supervisor, which starts the SuperNode: the box joins the next round;
* where it stands (``state.py``: running, paused, outside the hours, nothing to train on and
  why …) is written for ``clinibox learning status``.

Its ClientApps run only the bundle clinibox ships (``bundle_check.py``: the SuperNode finds
``flwr-clientapp`` first in ``<state_dir>/learning/bin``, which checks the bundle before
Flower installs it). Only the masked head (and, when a round is evaluated, the number of its
labelled cases) leaves.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from clinibox_common.contracts.manifest import PackageError
from engine.model_package import load_package
from firmware_app.learning.bundle_check import supernode_environment
from firmware_app.learning.case_file import write_case_file
from firmware_app.learning.state import (
    CASE_FILE_FAILED,
    HEARTBEAT_S,
    NO_LABELLED_CASES,
    STATE_FILE,
    LearningState,
    StateRecord,
    write_state,
)
from firmware_app.models.store import resolve_package_root
from firmware_app.settings.box import Config
from firmware_app.settings.learning import HOURS
from firmware_app.storage import db
from firmware_app.storage.telemetry import queue_depth

log = logging.getLogger(__name__)

#: how often the supervisor looks at the queue and the clock
POLL_S = 2.0
#: how long after a SuperNode's exit it is started again
RESTART_AFTER_S = 30.0
#: how long after a case file with nothing to train on (or none at all) it is written again
WRITE_AGAIN_AFTER_S = 1800.0


def supernode_command(superlink: str, root_certificates: Path, cases: Path,
                      clientappio_port: int | None = None) -> list[str]:
    """``flower-supernode`` joining ``superlink`` over TLS (checked against the hospital's CA)
    with the case file as its node configuration."""
    command = [str(Path(sys.executable).with_name("flower-supernode")),
               "--root-certificates", str(root_certificates), "--superlink", superlink,
               "--node-config", f'cases="{cases}"']
    if clientappio_port is not None:
        command += ["--host", "127.0.0.1", "--port", str(clientappio_port)]
    return command


def in_hours(hours: str, now: dt.datetime) -> bool:
    """Whether ``now`` (local time) lies in ``hours`` (``22-6``: 22:00 up to 06:00)."""
    found = HOURS.fullmatch(hours)
    if found is None:
        return False
    start, end = int(found[1]), int(found[2])
    if start < end:
        return start <= now.hour < end
    return now.hour >= start or now.hour < end


#: the SuperNode is started through these, at nice 19 and ``SCHED_IDLE`` (inherited by the
#: ClientApp processes it starts; each ``exec``s the next, so the pid stays the node's)
LOWEST_PRIORITY = ("nice", "-n", "19", "chrt", "--idle", "0")


class NodeSupervisor:
    """Starts, pauses, continues and stops the box's SuperNode (the module's rules)."""

    def __init__(self, config: Config, cases: Path, *,
                 command: Callable[[Path], list[str]] | None = None,
                 now: Callable[[], dt.datetime] = dt.datetime.now) -> None:
        self.config, self.cases, self.now = config, cases, now
        learning = config.learning
        self.command = command or (lambda path: supernode_command(
            learning.superlink, Path(learning.root_certificates), path))
        self.node: subprocess.Popen | None = None
        self.group = 0  # the node's process group (its ClientApps are in it too)
        self.paused = False
        self.exited_at = float("-inf")  # (monotonic time counts from boot: 0 is no exit)
        #: when the case file may be written again after one with nothing to train on
        self.write_again_at = 0.0
        #: whether the case file was written in this window (once a window, not at each start)
        self.written = False
        self.conn = db.connect(config.database_path, acknowledging=False)
        #: what ``clinibox learning status`` reads (``state.py``), and the case file's counts
        self.state_path = cases.parent / STATE_FILE
        self.reported: StateRecord | None = None
        self.counts, self.reason, self.model = (0, 0), "", ""

    def report(self, state: LearningState) -> None:
        """Write the state when it changed, or when the last write is a heartbeat old; a
        failure to write is logged, never a stop."""
        now, last = time.time(), self.reported
        reason = self.reason if state == LearningState.NO_CASES else ""
        changed = last is None or (last.state, last.reason, last.lesions, last.clear,
                                   last.model) != (state, reason, *self.counts, self.model)
        # a heartbeat a minute, and at once after the clock was set back
        if not changed and 0 <= now - last.updated_at < HEARTBEAT_S:
            return
        record = StateRecord(state, now if changed else last.since, now, *self.counts, reason,
                             self.model)
        try:
            write_state(self.state_path, record)
        except OSError as exc:
            log.warning("learning: its state could not be written (%s)", exc)
            return
        self.reported = record

    def write_cases(self) -> bool:
        """Write the case file afresh; whether it holds a case to train on. Any failure is
        logged and counts as none: the supervisor looks again later, it never stops."""
        try:
            package = load_package(resolve_package_root(self.config),
                                   self.config.trusted_key_paths)
            self.model = package.model_id
            summary = write_case_file(self.config, self.conn, package, self.cases)
            db.keep_private(self.cases)
        except PackageError as exc:
            log.error("learning: no case file (%s): %s", exc.code, exc)
            self.counts, self.reason = (0, 0), str(exc.code or CASE_FILE_FAILED)
            return False
        except Exception:
            log.exception("learning: the case file could not be written")
            self.counts, self.reason = (0, 0), CASE_FILE_FAILED
            return False
        log.info("learning: case file with %d lesion(s) and %d clear image(s); left out: %s",
                 summary.lesions, summary.clear, dict(summary.left_out) or "none")
        self.counts, self.reason = (summary.lesions, summary.clear), NO_LABELLED_CASES
        return summary.lesions + summary.clear > 0

    def start(self) -> None:
        """Start the SuperNode in a process group of its own, at the lowest priority."""
        self.node = subprocess.Popen([*LOWEST_PRIORITY, *self.command(self.cases)],
                                     process_group=0, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL,
                                     env=supernode_environment(self.cases.parent / "bin"))
        self.group, self.paused = self.node.pid, False
        log.info("learning: SuperNode started (pid %d)", self.node.pid)

    def _signal(self, sig: signal.Signals) -> None:
        """Signal the node's whole process group (its ClientApps too, even after the node
        itself has gone)."""
        if self.group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.group, sig)

    def _end_group(self) -> None:
        """Whatever is left of the group (a ClientApp whose node died while it was stopped):
        continued, then killed."""
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        self.group, self.paused = 0, False

    def stop(self) -> None:
        """Stop the SuperNode and its ClientApps (continued first, so they can end)."""
        if self.node is not None:
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGTERM)
            try:
                self.node.wait(20)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.node.wait(5)
            self.node = None
        self._end_group()

    def step(self) -> None:
        """One look at the clock, the queue and the SuperNode; act on what changed; then
        write where it stands (:meth:`report`)."""
        self.report(self._step())

    def _step(self) -> LearningState:
        """:meth:`step`'s work; where the SuperNode stands after it."""
        if not in_hours(self.config.learning.hours, self.now()):
            if self.node is not None:
                log.info("learning: outside %s, SuperNode stopped", self.config.learning.hours)
                self.stop()
            self.written = False
            return LearningState.OUTSIDE_HOURS
        if self.node is not None and self.node.poll() is not None:
            log.warning("learning: the SuperNode exited (%s); started again in %.0f s",
                        self.node.returncode, RESTART_AFTER_S)
            self.node, self.exited_at = None, time.monotonic()
            self._end_group()
        busy = queue_depth(self.conn) > 0
        if self.node is None:
            if busy:
                return LearningState.WAITING_FOR_ANALYSIS
            if time.monotonic() - self.exited_at < RESTART_AFTER_S:
                return LearningState.RESTARTING
            if not self.written or not self.cases.is_file():
                if time.monotonic() < self.write_again_at:
                    return LearningState.NO_CASES
                self.written = self.write_cases()
            if self.written:
                self.start()
                return LearningState.RUNNING
            # nothing to train on: decoding every labelled image again can wait
            self.write_again_at = time.monotonic() + WRITE_AGAIN_AFTER_S
            return LearningState.NO_CASES
        if busy and not self.paused:
            self._signal(signal.SIGSTOP)
            self.paused = True
            log.info("learning: images wait for analysis; SuperNode paused")
        elif not busy and self.paused:
            self._signal(signal.SIGCONT)
            self.paused = False
            log.info("learning: queue empty; SuperNode continued")
        return LearningState.PAUSED if self.paused else LearningState.RUNNING

    def run(self, stop: threading.Event) -> None:
        """Supervise until ``stop`` is set, then stop the SuperNode."""
        try:
            while not stop.is_set():
                self.step()
                stop.wait(POLL_S)
        finally:
            self.stop()
            self.conn.close()
