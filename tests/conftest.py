"""Markers for the whole suite: everything outside the unit tier is ``slow``.

``make test`` runs every tier; ``make test-fast`` runs the unit tier without
``slow`` tests (the integration, conversion and fuzzing tiers, and the few
unit tests that take seconds by nature).
"""

from __future__ import annotations

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
