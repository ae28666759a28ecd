"""The hospital's test fixtures shared by the central receiver's unit tests: its key pair,
a SQLite store and one enrolled box. A test module imports them (their functions are named
apart from the fixtures, ``hospital``, ``database``, ``store`` and ``box``, so a test's
parameter never shadows an import)::

    from tests.central_fixtures import central_box, central_database, central_hospital, \
        central_store  # noqa: F401 (pytest fixtures)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from central.store import Store
from tests.telemetry_payloads import Box, hospital_keys


@pytest.fixture(name="hospital")
def central_hospital():
    """The hospital's (private, public) X25519 key pair."""
    return hospital_keys()


@pytest.fixture(name="database")
def central_database(tmp_path) -> Path:
    """Where the hospital's SQLite database lives."""
    return tmp_path / "central.db"


@pytest.fixture(name="store")
def central_store(database) -> Iterator[Store]:
    """The hospital's store on a fresh SQLite database."""
    store = Store(f"sqlite:///{database}")
    yield store
    store.close()


@pytest.fixture(name="box")
def central_box(store, hospital) -> Box:
    """Box clinic-a/box-1, enrolled."""
    box = Box("clinic-a", "box-1", hospital[1])
    store.enrol(box.clinic, box.device, box.pem)
    return box
