"""The province load bench, tiny: 20 boxes, 2 receivers, a few seconds; nothing lost or
stored twice, and the record says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import central_load

pytestmark = pytest.mark.integration


def test_central_load_tiny_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    status = central_load.main(["--boxes", "20", "--receivers", "2", "--speed", "60",
                                "--steady", "3", "--burst", "2", "--ref-steady", "2",
                                "--ref-burst", "1", "--requests", "0",
                                "--drain-timeout", "60",
                                "--details-only", str(tmp_path / "details.json")])
    details = json.loads((tmp_path / "details.json").read_text())
    check = details["check"]
    assert status == 0
    assert check["published"] > 100
    assert check["published_and_stored"] == check["published"] == check["stored"]
    assert check["duplicates_seen_by_receivers"] == 0
    assert check["broker_refused"] == {}
    assert details["main"]["missing"] == 0 and details["main"]["backlog_per_s"][-1] == 0
    assert sum(c.get("stored", 0) for c in details["receiver_counts"]) == check["published"]
    assert details["tables"]["clinics"] == 20
