"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from sqlite3 import Connection

import pytest

from firmware_app import db


@pytest.fixture
def conn(tmp_path) -> Iterator[Connection]:
    """A fresh, initialised box database."""
    connection = db.connect(tmp_path / "box.db")
    db.initialise(connection)
    yield connection
    connection.close()
