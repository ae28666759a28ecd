"""One disk figure everywhere: the device page, ``clinibox status``, the self-test and the
health message to the hospital say the same percentage for the filesystem that holds the
box's state folder, name its mount point, and agree with ``df`` for that mount."""

from __future__ import annotations

import json
import math
import os
import subprocess

from clinibox.table import main
from clinibox_common.i18n import use_locale
from firmware_app.ops.selftest import check_disk
from firmware_app.storage import db, disk
from firmware_app.storage.outbox import Outbox
from firmware_app.telemetry.messages import ModelFacts, build_summary
from tests.viewer_state import TECHNICIAN
from tests.web_client import ViewerClient


def _df(path) -> tuple[int, str]:
    """``df``'s own percent used and mount point for ``path``."""
    out = subprocess.run(["df", "--output=pcent,target", str(path)], check=True,
                         capture_output=True, text=True).stdout.splitlines()[-1].split()
    return int(out[0].rstrip("%")), out[1]


def test_the_figure_is_dfs(tmp_path):
    figures = disk.disk_figures(tmp_path / "not-made-yet" / "state")
    percent, mount = _df(tmp_path)
    assert figures["mount"] == mount
    # df rounds up to a whole percent; the box shows one decimal (a busy disk moves a little)
    assert abs(math.ceil(figures["used_percent"]) - percent) <= 1, (figures, percent)
    measured = disk.usage(tmp_path)
    assert measured.total == measured.used + measured.free
    stats = os.statvfs(tmp_path)
    assert measured.free == stats.f_bavail * stats.f_frsize  # what the box may still use
    assert disk.mount_point(tmp_path) == disk.mount_point(tmp_path / "a" / "b")


def test_page_status_selftest_and_hospital_say_the_same(viewer, tmp_path, capsys,
                                                        monkeypatch):
    state, app = viewer
    config = state.config
    fixed = disk.Usage(total=100 * 2**30, used=37 * 2**30 + 2**29, free=62 * 2**30 + 2**29)
    monkeypatch.setattr(disk, "usage", lambda _path: fixed)
    client = ViewerClient(app)
    assert client.login(*TECHNICIAN).status_code == 302
    page = client.get("/api/status").get_json()["disk"]
    assert page["used_percent"] == 37.5 and page["free_mb"] == (62 * 2**30 + 2**29) // 2**20
    assert page["mount"] == str(disk.mount_point(config.state_dir))
    html = client.get("/device").get_data(as_text=True)
    assert "(37.5 % used)" in html and f'<code translate="no">{page["mount"]}</code>' in html
    toml = tmp_path / "clinibox.toml"
    toml.write_text(f'[storage]\nstate_dir = "{config.state_dir.as_posix()}"\n'
                    "[dicom]\nenabled = false\n")
    monkeypatch.setenv("LANG", "C")
    assert main(["status", "--json", "--config", str(toml)]) == 0
    shown = json.loads(capsys.readouterr().out)["disk"]
    assert shown == {k: v for k, v in page.items() if k != "floor_mb"}
    with use_locale("en"):
        check = check_disk(config)
    assert f"37.5% used on the disk mounted at {page['mount']}" in check.detail, check.detail
    conn = db.connect(config.database_path)
    try:
        summary = build_summary(conn, Outbox(conn, 10, frozenset()), ModelFacts("m@1.0.0", (), 1.0),
                                (0.0, 1.0), 1.0, config.state_dir)
    finally:
        conn.close()
    assert (summary["disk_used_pct"], summary["disk_free_mb"]) == (37.5, page["free_mb"])
