"""The populated test box is built once per run; every test gets a private copy."""

from __future__ import annotations

from pathlib import Path

from firmware_app.storage import db
from tests.viewer_state import copy_viewer_state


def _spool_paths(config) -> list[Path]:
    conn = db.connect(config.database_path)
    try:
        return [Path(r[0]) for r in conn.execute("SELECT spool_path FROM instances ORDER BY id")]
    finally:
        conn.close()


def test_a_copy_points_at_its_own_files_and_leaves_the_template_alone(viewer_template, tmp_path):
    first = copy_viewer_state(viewer_template, tmp_path / "a")
    second = copy_viewer_state(viewer_template, tmp_path / "b")
    paths = _spool_paths(first.config)
    assert len(paths) == len(viewer_template.instances) == 8
    assert all(first.config.state_dir in p.parents for p in paths)
    in_spool = [p.exists() for p in _spool_paths(viewer_template.config)]
    assert [p.exists() for p in paths] == in_spool and sum(in_spool) == 7  # one quarantined
    for p in paths:
        p.unlink(missing_ok=True)
    conn = db.connect(first.config.database_path)
    conn.execute("UPDATE instances SET spool_path = 'gone'")
    conn.close()
    assert set(_spool_paths(first.config)) == {Path("gone")}
    assert [p.exists() for p in _spool_paths(second.config)] == in_spool
    assert [p.exists() for p in _spool_paths(viewer_template.config)] == in_spool
    assert second.instances == viewer_template.instances
