"""Fixtures for the integration tests: real boxes (``clinibox serve``) and dcmtk's clients.

The harness itself (``Box``, the config writer, the start/stop/wait helpers, storescu and
echoscu) is ``tests/box_harness.py``, shared with the benchmarks; its names stay importable
from here (``from tests.integration.conftest import Box, storescu, wait_for``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.box_harness import (
    DCMTK_BIN,
    PROPOSE_FLAG,
    REPO,
    Box,
    add_viewer_account,
    assert_rejected_as_busy,
    dcmtk,
    dcmtk_env,
    echoscu,
    receiver_processes,
    send_as_modality,
    storescu,
    to_toml,
    wait_for,
)

__all__ = ["DCMTK_BIN", "PROPOSE_FLAG", "REPO", "Box", "add_viewer_account",
           "assert_rejected_as_busy", "box", "box_factory", "dcmtk", "dcmtk_env", "echoscu",
           "receiver", "receiver_processes", "send_as_modality", "storescu", "to_toml",
           "wait_for"]


@pytest.fixture
def box(tmp_path) -> Iterator[Box]:
    """A running clinibox with default settings and its own state folder."""
    instance = Box(tmp_path)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(params=["native", "pynetdicom"])
def receiver(request) -> str:
    """Each of the box's DICOM receivers (``[dicom] receiver``), for the tests that
    face the network: the native front (clinibox-receiver) and pynetdicom."""
    return request.param


@pytest.fixture
def box_factory(tmp_path) -> Iterator[Callable[..., Box]]:
    """Make boxes with extra config; all are stopped at the end."""
    made: list[Box] = []

    def make(name: str = "box", start: bool = True, **overrides: dict) -> Box:
        root = tmp_path / name
        root.mkdir()
        instance = Box(root, overrides)
        if start:
            instance.start()
        made.append(instance)
        return instance

    yield make
    for instance in made:
        instance.stop()
