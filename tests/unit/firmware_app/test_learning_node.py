"""The box's SuperNode, supervised: started only in [learning] hours on a fresh case file, at
nice 19 and SCHED_IDLE, stopped (SIGSTOP) while images wait for analysis and continued after,
started again when it exits, stopped outside the hours. A real process stands in for
``flower-supernode`` here; the real rounds run the same command (``supernode_command``, in
bench/federation.py and tests/integration/test_federated_rounds.py)."""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path

import pytest

from clinibox_common.settings_loader import ConfigError
from firmware_app.ingest.landing import Lander
from firmware_app.learning import node as node_module
from firmware_app.learning.node import NodeSupervisor, in_hours, supernode_command
from firmware_app.learning.state import NO_LABELLED_CASES, LearningState, read_state
from firmware_app.settings.box import from_dict
from firmware_app.storage import db
from firmware_app.storage.spool import make_spool
from tests.unit.firmware_app.test_learning_case_file import _analyse, _box, _review

NIGHT = dt.datetime(2026, 11, 28, 23, 30)
DAY = dt.datetime(2026, 11, 28, 14, 0)


def _state(pid: int) -> str:
    """The process's state letter (S sleeping, T stopped …)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def _nice(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[16])


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended (gone, or a zombie no one has reaped yet)."""
    try:
        return _state(pid) == "Z"
    except FileNotFoundError:
        return True


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert condition(), what


def _wait_state(pid: int, letter: str) -> None:
    deadline = time.monotonic() + 10
    while _state(pid) != letter and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _state(pid) == letter


def test_the_hours_cross_midnight_or_not():
    assert in_hours("22-6", NIGHT) and in_hours("22-6", dt.datetime(2026, 1, 1, 5, 59))
    assert not in_hours("22-6", DAY) and not in_hours("22-6", dt.datetime(2026, 1, 1, 6, 0))
    assert in_hours("1-5", dt.datetime(2026, 1, 1, 1, 0))
    assert not in_hours("1-5", dt.datetime(2026, 1, 1, 5, 0))


def test_a_wrong_learning_section_is_refused_saying_the_fix():
    with pytest.raises(ConfigError, match="superlink and root_certificates"):
        from_dict({"learning": {"enabled": True}})
    with pytest.raises(ConfigError, match="22-6"):
        from_dict({"learning": {"hours": "22-22"}})
    with pytest.raises(ConfigError, match="host:port"):
        from_dict({"learning": {"superlink": "https://hospital/"}})


def test_the_supernode_command_joins_over_tls_with_the_case_file(tmp_path):
    command = supernode_command("fed.hospital.example:9092", tmp_path / "ca.pem",
                                tmp_path / "cases.npz")
    assert Path(command[0]).name == "flower-supernode"
    assert command[1:] == ["--root-certificates", str(tmp_path / "ca.pem"), "--superlink",
                           "fed.hospital.example:9092", "--node-config",
                           f'cases="{tmp_path / "cases.npz"}"']


def test_the_supervisor_trains_in_its_hours_and_gives_way_to_images(tmp_path, monkeypatch):
    config = _box(tmp_path, trainable=True)
    landed = _analyse(config, 4)
    _review(config, landed)
    clock = {"now": NIGHT}
    cases = config.state_dir / "learning" / "cases.npz"
    child_file = tmp_path / "clientapp.pid"
    # a node that starts a "ClientApp" of its own, as flower-supernode does
    stand_in = [sys.executable, "-c",
                "import subprocess, sys, time\n"
                "child = subprocess.Popen([sys.executable, '-c', 'import time\\n"
                "while True: time.sleep(0.1)'])\n"
                f"open({str(child_file)!r}, 'w').write(str(child.pid))\n"
                "while True: time.sleep(0.1)"]
    supervisor = NodeSupervisor(config, cases, command=lambda _path: stand_in,
                                now=lambda: clock["now"])
    try:
        supervisor.step()  # in the hours, the queue empty: a fresh case file, then the node
        assert supervisor.node is not None
        pid = supervisor.node.pid
        said = read_state(supervisor.state_path)
        assert said is not None and said.state == LearningState.RUNNING
        assert (said.lesions, said.clear) == (2, 2) and said.reason == ""
        written = supervisor.state_path.stat().st_mtime_ns
        supervisor.step()  # nothing changed: not written again, the state's start kept
        assert supervisor.state_path.stat().st_mtime_ns == written
        assert read_state(supervisor.state_path).since == said.since
        assert cases.is_file() and cases.stat().st_mode & 0o077 == 0
        _wait(lambda: child_file.is_file() and child_file.read_text(), "the ClientApp")
        child = int(child_file.read_text())
        assert _nice(pid) == 19 and os.sched_getscheduler(pid) == os.SCHED_IDLE
        assert _nice(child) == 19 and os.sched_getscheduler(child) == os.SCHED_IDLE
        assert os.getpgid(pid) == pid == os.getpgid(child)  # its ClientApps stop with it

        # an image arrives: the node stops until the queue is empty again
        lander = Lander(make_spool(config), config.database_path, 64 * 2**20)
        lander.land((config.state_dir / "p0.dcm").read_bytes(), sop_instance_uid="1.2.41.1",
                    source="dicom", origin="TEST")
        supervisor.step()
        _wait_state(pid, "T")
        _wait_state(child, "T")
        assert read_state(supervisor.state_path).state == LearningState.PAUSED
        supervisor.conn.execute("UPDATE instances SET status = 'processed'")
        supervisor.step()
        _wait_state(pid, "S")

        # it dies, its ClientApp left behind: that is ended, and the node started again
        # after the pause, on the case file of this window (not written again)
        written = cases.stat().st_mtime_ns
        supervisor.node.kill()
        supervisor.node.wait()
        monkeypatch.setattr(node_module, "RESTART_AFTER_S", 0.0)
        supervisor.step()
        _wait(lambda: _gone(child), "the orphaned ClientApp to end")
        supervisor.step()
        assert supervisor.node is not None and supervisor.node.pid != pid
        assert cases.stat().st_mtime_ns == written

        # the morning: stopped
        clock["now"] = DAY
        restarted = supervisor.node
        supervisor.step()
        assert supervisor.node is None and restarted.poll() is not None
        assert read_state(supervisor.state_path).state == LearningState.OUTSIDE_HOURS
    finally:
        supervisor.stop()
        supervisor.conn.close()


def test_no_labelled_case_no_node(tmp_path, monkeypatch):
    monkeypatch.setattr(node_module, "RESTART_AFTER_S", 0.0)
    config = _box(tmp_path, trainable=True)
    _analyse(config, 2)  # analysed, never reviewed
    supervisor = NodeSupervisor(config, config.state_dir / "learning" / "cases.npz",
                                command=lambda _path: [sys.executable, "-c", "pass"],
                                now=lambda: NIGHT)
    try:
        supervisor.step()
        assert supervisor.node is None
        # nothing to train on: the case file is not written again at every look
        written = supervisor.cases.stat().st_mtime_ns
        supervisor.step()
        assert supervisor.node is None and supervisor.cases.stat().st_mtime_ns == written
        said = read_state(supervisor.state_path)
        assert said.state == LearningState.NO_CASES and said.reason == NO_LABELLED_CASES
    finally:
        supervisor.conn.close()


def test_the_documented_learning_section_is_accepted():
    import re

    import tomllib

    from clinibox_common.bundled import REPO_ROOT

    text = (REPO_ROOT / "docs" / "hospital" / "federated.md").read_text()
    [block] = [b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "[learning]" in b]
    learning = from_dict(tomllib.loads(block)).learning
    assert learning.enabled and learning.superlink == "federation.hospital.example:9092"
    assert learning.hours == "22-6"


def test_the_service_on_a_box_whose_learning_is_off_stops_without_a_restart_loop(tmp_path):
    """``clinibox learning node`` exits 2 saying what to set, and the unit does not start it
    again for that status (a technician who enables it too early gets one failure, not a
    loop)."""
    import subprocess

    from clinibox_common.bundled import REPO_ROOT
    from tests.integration.test_install_system import read_unit, unit_values

    (tmp_path / "box.toml").write_text(f'[storage]\nstate_dir = "{tmp_path}"\n')
    done = subprocess.run([sys.executable, "-m", "clinibox", "learning", "node", "--config",
                           str(tmp_path / "box.toml")], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "[learning] enabled = true" in done.stdout
    unit = read_unit(REPO_ROOT / "systemd" / "clinibox-learning.service")
    assert unit_values(unit, "Service", "Restart") == ["on-failure"]
    assert unit_values(unit, "Service", "RestartPreventExitStatus") == ["2"]


def test_the_state_is_written_on_a_change_and_once_a_minute_not_at_every_look(tmp_path,
                                                                              monkeypatch):
    """The supervisor looks every 2 s: it writes its state when it changes and as a heartbeat,
    keeping when the state began; the first look after boot is not a restart."""
    config = _box(tmp_path, trainable=True)
    clock = {"wall": 1_800_000_000.0}
    monkeypatch.setattr(node_module.time, "time", lambda: clock["wall"])
    supervisor = NodeSupervisor(config, config.state_dir / "learning" / "cases.npz",
                                command=lambda _path: [sys.executable, "-c", "pass"],
                                now=lambda: DAY)
    try:
        supervisor.step()  # outside the hours, right after boot
        first = read_state(supervisor.state_path)
        assert first.state == LearningState.OUTSIDE_HOURS and first.since == clock["wall"]
        written = supervisor.state_path.stat().st_mtime_ns
        clock["wall"] += 30
        supervisor.step()
        assert supervisor.state_path.stat().st_mtime_ns == written  # no change, no heartbeat
        clock["wall"] += 31
        supervisor.step()
        beat = read_state(supervisor.state_path)
        assert beat.updated_at == clock["wall"] and beat.since == first.since
        clock["wall"] -= 3600  # the clock set back: written again at once
        supervisor.step()
        assert read_state(supervisor.state_path).updated_at == clock["wall"]
    finally:
        supervisor.conn.close()


def test_the_first_look_after_boot_is_not_a_restart(tmp_path, monkeypatch):
    config = _box(tmp_path, trainable=True)
    fresh = db.connect(config.database_path)
    db.initialise(fresh)
    fresh.close()
    monkeypatch.setattr(node_module.time, "monotonic", lambda: 5.0)  # 5 s after boot
    supervisor = NodeSupervisor(config, config.state_dir / "learning" / "cases.npz",
                                command=lambda _path: [sys.executable, "-c", "pass"],
                                now=lambda: NIGHT)
    try:
        supervisor.step()
        assert read_state(supervisor.state_path).state != LearningState.RESTARTING
    finally:
        supervisor.stop()
        supervisor.conn.close()
