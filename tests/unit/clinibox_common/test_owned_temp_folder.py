"""Private temporary folders (``fs.owned_temp_folder``): a killed owner's folder goes, a live
owner's stays, and so does one whose owner is counted in another PID namespace (a box in a
container, or the docs-run's boxes, sharing the temp folder): its pid names no process here,
and taking its folder away took a live box's landing socket (C-STORE refused, 'the lander
cannot be reached') and its document maker's files."""

from __future__ import annotations

import os
import subprocess

import pytest

from clinibox_common import fs

PREFIX = "clinibox-test-owned-"


@pytest.fixture
def temp(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(fs.tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    yield tmp_path
    fs.tempfile.tempdir = None


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_dead_owners_folder_goes_and_a_live_owners_stays(temp):
    mine = fs.owned_temp_folder(PREFIX)
    namespace = fs._pid_namespace()
    assert mine.name.startswith(f"{PREFIX}{namespace}_{os.getpid()}-")
    dead = temp / f"{PREFIX}{namespace}_{_dead_pid()}-abc"
    old_release = temp / f"{PREFIX}{_dead_pid()}-def"  # an earlier release's name
    dead.mkdir()
    old_release.mkdir()
    fs.owned_temp_folder(PREFIX)
    assert mine.is_dir() and not dead.exists() and not old_release.exists()


def test_a_folder_of_another_pid_namespace_is_left_alone(temp, monkeypatch):
    other = temp / f"{PREFIX}1_{_dead_pid()}-abc"  # namespace 1: not this process's
    other.mkdir()
    (other / "landing.sock").write_text("")
    assert fs._pid_namespace() != "1"
    fs.owned_temp_folder(PREFIX)
    assert (other / "landing.sock").exists()
    # counted in namespace 1, the same dead pid is judged, and its folder goes
    monkeypatch.setattr(fs, "_pid_namespace", lambda: "1")
    fs.owned_temp_folder(PREFIX)
    assert not other.exists()
