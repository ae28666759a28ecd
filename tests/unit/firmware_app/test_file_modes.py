"""The state folder and the database (patient names, password hashes) are private
whatever the umask a shell (``make run``) or a service manager starts the box with."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from firmware_app.service.appliance import Appliance
from firmware_app.settings.box import from_dict
from firmware_app.storage import db


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_database_wal_and_shm_are_0600_and_the_folder_0750(tmp_path, umask):
    state = tmp_path / "state"
    conn = db.open_database(state / "clinibox.db")
    conn.execute("INSERT INTO events(at, level, component, message) VALUES (1, 'INFO', 't', 'm')")
    files = [state / "clinibox.db", state / "clinibox.db-wal", state / "clinibox.db-shm"]
    assert all(f.exists() for f in files)
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    assert mode(state) == 0o750
    conn.close()


def test_an_existing_world_readable_database_and_folder_are_closed(tmp_path, umask):
    state = tmp_path / "state"
    state.mkdir(mode=0o777)
    os.chmod(state, 0o777)
    (state / "clinibox.db").touch()
    os.chmod(state / "clinibox.db", 0o644)
    db.open_database(state / "clinibox.db").close()
    assert mode(state) == 0o750 and mode(state / "clinibox.db") == 0o600


def test_the_appliance_makes_its_state_folder_private(tmp_path, umask):
    config = from_dict({"storage": {"state_dir": str(tmp_path / "box")},
                        "worker": {"enabled": False}, "usb": {"enabled": False},
                        "dicom": {"enabled": False}})
    appliance = Appliance(config)
    appliance.start()
    try:
        assert mode(config.state_dir) == 0o750
        assert mode(config.database_path) == 0o600
    finally:
        appliance.stop()
