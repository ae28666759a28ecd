"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from sqlite3 import Connection

import pytest

from firmware_app.storage import db


@pytest.fixture
def conn(tmp_path) -> Iterator[Connection]:
    """A fresh, initialised box database."""
    connection = db.connect(tmp_path / "box.db")
    db.initialise(connection)
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def demo_runner():
    """The bundled demo model on ONNX Runtime (phantom-trained; not for clinical use)."""
    from firmware_app.service.appliance import load_runner
    from firmware_app.settings.box import Config

    config = Config()
    config.runtime.backend = "onnxruntime"
    return load_runner(config)


@pytest.fixture
def viewer(tmp_path, demo_runner):
    """A populated box (tests/viewer_state.py) and its viewer app."""
    from tests.viewer_state import build_viewer_state
    from web.app import create_app

    state = build_viewer_state(tmp_path, demo_runner)
    app = create_app(state.config)
    return state, app
