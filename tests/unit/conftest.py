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


@pytest.fixture(scope="session")
def viewer_template(tmp_path_factory, demo_runner):
    """A populated box (tests/viewer_state.py), built once per test run; tests get copies."""
    from tests.viewer_state import build_viewer_state

    return build_viewer_state(tmp_path_factory.mktemp("viewer-template"), demo_runner)


@pytest.fixture
def viewer(tmp_path, viewer_template):
    """A private copy of the populated box and its viewer app."""
    from tests.viewer_state import copy_viewer_state
    from web.app import create_app

    state = copy_viewer_state(viewer_template, tmp_path)
    app = create_app(state.config)
    return state, app
