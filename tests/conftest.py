"""Markers for the whole suite: everything outside the unit tier is ``slow``.

``make test`` runs every tier; ``make test-fast`` runs the unit tier without
``slow`` tests (the integration, conversion and fuzzing tiers, and the few
unit tests that take seconds by nature).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

SLOW_TIERS = ("integration", "conversion", "fuzz")
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of the slow tiers ``slow``."""
    for item in items:
        tier = Path(str(item.path)).resolve().relative_to(HERE).parts[0]
        if tier in SLOW_TIERS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def english_terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run every test as on a terminal that names no language (``LANG=C.UTF-8``).

    The ``clinibox`` commands speak the terminal's language
    (``firmware_app/cli/language.py``) and the suite expects English; a test of the
    Chinese messages sets its own.
    """
    for name in ("LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")
    yield
